//! Compares OpenAI's per-key usage with what Warden sent, minute by minute, and names the
//! buckets where OpenAI saw more than Warden sent: usage of the key that did not come
//! through Warden.
//!
//! Tolerances (see `docs/key-hygiene.md`):
//! - partial buckets: a bucket is compared only once it ended `settle_delay` ago (OpenAI's
//!   usage and Warden's batched counts both arrive late);
//! - clock skew: a request Warden counted at minute `m` may sit in OpenAI's bucket
//!   `m ± k` (`k` = `clock_skew` in whole minutes, rounded up). Warden's counts are matched
//!   to OpenAI's greedily, the supply that can no longer be used later going first, which
//!   matches as much as any assignment can;
//! - noise: an excess counts only above `tolerance_* + tolerance_ratio × Warden's count`
//!   for that minute (cut streams carry no `usage`, so Warden under-counts their tokens).

use std::collections::{BTreeMap, HashMap};

use crate::config::openai_admin::OpenaiAdminConfig;
use crate::store::MinuteCounts;

/// Counts per key name and minute start (Unix seconds).
pub type PerKeyMinute = HashMap<String, BTreeMap<i64, MinuteCounts>>;

/// Usage on one key that Warden did not send, in one bucket.
#[derive(Debug, Clone, PartialEq)]
pub struct Excess {
    /// The key's name in Warden (vault name, `(env)`, `(key:NAME)`).
    pub key: String,
    pub minute: i64,
    pub openai: MinuteCounts,
    /// Warden's count matched to this bucket.
    pub warden: MinuteCounts,
    pub requests: u64,
    pub tokens: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Compared {
    pub buckets: u64,
    pub keys: u64,
}

/// Which minutes can be compared now: `[first, end)` in Unix seconds, whole minutes.
pub fn window(config: &OpenaiAdminConfig, now_secs: i64) -> (i64, i64) {
    let end = now_secs - config.settle_delay.as_secs() as i64;
    let end = end - end.rem_euclid(60);
    let first = now_secs - config.lookback.as_secs() as i64;
    (first - first.rem_euclid(60), end)
}

/// Whole minutes a count may have moved between Warden's clock and OpenAI's.
pub fn skew_minutes(config: &OpenaiAdminConfig) -> i64 {
    (config.clock_skew.as_secs() as i64 + 59) / 60
}

/// `openai` and `warden` are per (key name, minute start); only minutes in `[first, end)`
/// of `openai` are judged, `warden` should reach `skew_minutes` further on both sides.
pub fn compare(
    config: &OpenaiAdminConfig,
    openai: &PerKeyMinute,
    warden: &PerKeyMinute,
    (first, end): (i64, i64),
) -> (Vec<Excess>, Compared) {
    let k = skew_minutes(config);
    let empty = BTreeMap::new();
    let mut found = Vec::new();
    let mut compared = Compared::default();
    for (key, seen) in openai {
        let sent = warden.get(key).unwrap_or(&empty);
        compared.keys += 1;
        let lo = first - 60 * k;
        let hi = end + 60 * k;
        let mut requests: BTreeMap<i64, u64> = BTreeMap::new();
        let mut tokens: BTreeMap<i64, u64> = BTreeMap::new();
        for (&m, c) in sent.range(lo..hi) {
            requests.insert(m, c.requests);
            tokens.insert(m, c.tokens());
        }
        let mut m = first;
        while m < end {
            let o = seen.get(&m).copied().unwrap_or_default();
            compared.buckets += 1;
            let unmatched_requests = take(&mut requests, m, k, o.requests);
            let unmatched_tokens = take(&mut tokens, m, k, o.tokens());
            let own = sent.get(&m).copied().unwrap_or_default();
            let allowed = |base: u64, own: u64| base as f64 + config.tolerance_ratio * own as f64;
            let over_requests =
                unmatched_requests as f64 > allowed(config.tolerance_requests, own.requests);
            let over_tokens =
                unmatched_tokens as f64 > allowed(config.tolerance_tokens, own.tokens());
            if over_requests || over_tokens {
                found.push(Excess {
                    key: key.clone(),
                    minute: m,
                    openai: o,
                    warden: own,
                    requests: unmatched_requests,
                    tokens: unmatched_tokens,
                });
            }
            m += 60;
        }
    }
    found.sort_by(|a, b| (&a.key, a.minute).cmp(&(&b.key, b.minute)));
    (found, compared)
}

/// Matches `demand` at minute `m` from the supply of minutes `m-k ..= m+k`, earliest
/// first (the earliest can serve no later bucket); returns what stayed unmatched.
fn take(supply: &mut BTreeMap<i64, u64>, m: i64, k: i64, mut demand: u64) -> u64 {
    for (_, left) in supply.range_mut(m - 60 * k..=m + 60 * k) {
        let used = (*left).min(demand);
        *left -= used;
        demand -= used;
        if demand == 0 {
            break;
        }
    }
    demand
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::time::Duration;

    fn config() -> OpenaiAdminConfig {
        OpenaiAdminConfig {
            lookback: Duration::from_secs(86_400 + 600),
            settle_delay: Duration::from_secs(120),
            clock_skew: Duration::from_secs(60),
            ..OpenaiAdminConfig::default()
        }
    }

    fn add(map: &mut PerKeyMinute, key: &str, at: i64, c: MinuteCounts) {
        let minute = at - at.rem_euclid(60);
        map.entry(key.into())
            .or_default()
            .entry(minute)
            .or_default()
            .add(c);
    }

    /// A day of traffic seen by both sides, with up to 45 s of clock skew per request,
    /// streams cut before their usage (Warden knows no tokens), and the newest minutes
    /// still partial at OpenAI.
    fn a_day(now: i64) -> (PerKeyMinute, PerKeyMinute) {
        let mut rng = fastrand::Rng::with_seed(17);
        let (mut openai, mut warden) = (HashMap::new(), HashMap::new());
        let start = now - 86_400 - 600;
        for second in (start..now).step_by(3) {
            for key in ["primary", "(env)"] {
                if rng.u8(..) < 90 {
                    continue;
                }
                let input = rng.u64(10..2_000);
                let output = rng.u64(1..800);
                let c = MinuteCounts {
                    requests: 1,
                    input_tokens: input,
                    output_tokens: output,
                };
                let cut = rng.u16(..) < 300;
                let sent = if cut {
                    MinuteCounts {
                        requests: 1,
                        ..Default::default()
                    }
                } else {
                    c
                };
                add(&mut warden, key, second, sent);
                let at_openai = second + rng.i64(-45..=45);
                // OpenAI has not yet reported what it served in the last minutes.
                if at_openai < now - 90 {
                    add(&mut openai, key, at_openai, c);
                }
            }
        }
        (openai, warden)
    }

    #[test]
    fn a_day_of_matching_traffic_raises_nothing() {
        let now = 1_800_000_000;
        let (openai, warden) = a_day(now);
        let config = config();
        let (found, compared) = compare(&config, &openai, &warden, window(&config, now));
        assert!(found.is_empty(), "false alarms: {found:?}");
        assert_eq!(compared.keys, 2);
        assert!(compared.buckets >= 2 * 1440, "{compared:?}");
    }

    #[test]
    fn outside_usage_on_one_key_is_found_in_its_minute() {
        let now = 1_800_000_000;
        let (mut openai, warden) = a_day(now);
        let leak = now - 3_600;
        add(
            &mut openai,
            "primary",
            leak,
            MinuteCounts {
                requests: 30,
                input_tokens: 9_000,
                output_tokens: 3_000,
            },
        );
        let config = config();
        let (found, _) = compare(&config, &openai, &warden, window(&config, now));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].key, "primary");
        assert_eq!(found[0].minute, leak - leak.rem_euclid(60));
        // Warden's unmatched traffic of the neighbouring minutes (skew) may absorb part
        // of it, never all: the excess named is at most the outside traffic.
        assert!(
            found[0].requests > config.tolerance_requests && found[0].requests <= 30,
            "{:?}",
            found[0]
        );
    }

    #[test]
    fn skew_is_absorbed_only_within_its_minutes() {
        let config = OpenaiAdminConfig {
            clock_skew: Duration::from_secs(60),
            ..config()
        };
        let c = MinuteCounts {
            requests: 50,
            input_tokens: 0,
            output_tokens: 0,
        };
        let (mut openai, mut warden) = (HashMap::new(), HashMap::new());
        add(&mut warden, "k", 600, c);
        add(&mut openai, "k", 660, c);
        assert!(
            compare(&config, &openai, &warden, (600, 900)).0.is_empty(),
            "one minute late"
        );
        let mut openai = HashMap::new();
        add(&mut openai, "k", 720, c);
        let (found, _) = compare(&config, &openai, &warden, (600, 900));
        assert_eq!(found.len(), 1, "two minutes late is not skew: {found:?}");
        assert_eq!(found[0].minute, 720);
    }

    #[test]
    fn partial_buckets_wait_for_the_settle_delay() {
        let config = config();
        let (first, end) = window(&config, 10_000);
        assert_eq!(end, 9_840, "the last two minutes are not judged yet");
        assert_eq!(first % 60, 0);
    }
}
