//! Upstream pacing: keeps the organization below a share of OpenAI's own rate limits,
//! read from the `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` headers of every
//! upstream answer, instead of forwarding requests OpenAI would refuse with 429s.
//!
//! Between answers the last reading is counted down locally (1 request and the prompt
//! estimate per call). When a request would take the organization past its share, it
//! waits for the window's reset if that comes within `max_wait`, else it is shed with a
//! 429 and `retry-after`. Lower tiers stop earlier (each step down gives up
//! [`SHED_STEP`] of the share) and are shed rather than held, so the last headroom goes
//! to the highest tier.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::HeaderMap;

use crate::config::pacing::PacingConfig;
use crate::error::WardenError;
use crate::limits::refusal::Budget;

/// Share given up per tier step below the highest.
const SHED_STEP: f64 = 0.1;
/// Once a window's reset has passed with no fresh reading, assume it is full for this long.
const ASSUMED_WINDOW: Duration = Duration::from_secs(60);

/// Where a request stands among the tiers: `rank` 0 is the lowest of `levels`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Priority {
    pub rank: u8,
    pub levels: u8,
}

impl Default for Priority {
    /// Traffic with no tier (limits off) ranks with the highest.
    fn default() -> Self {
        Priority { rank: 0, levels: 1 }
    }
}

impl Priority {
    fn steps_below_top(self) -> u8 {
        self.levels.saturating_sub(1).saturating_sub(self.rank)
    }

    fn is_lowest(self) -> bool {
        self.levels > 1 && self.rank == 0
    }
}

#[derive(Debug, Clone, Copy)]
struct Window {
    limit: u64,
    remaining: u64,
    reset_at: Instant,
}

#[derive(Debug, Default)]
struct State {
    /// Requests, tokens; `None` until upstream has named its limits.
    windows: [Option<Window>; 2],
}

pub struct Pacer {
    config: PacingConfig,
    state: Mutex<State>,
    waited_total: AtomicU64,
    shed_total: AtomicU64,
}

/// A refusal to forward: which budget and for how long.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shed {
    pub budget: Budget,
    pub retry_after: Duration,
    pub share: f64,
    pub lowest_tier: bool,
}

impl crate::error::Refusal for Shed {
    fn status(&self) -> http::StatusCode {
        http::StatusCode::TOO_MANY_REQUESTS
    }
    fn code(&self) -> &'static str {
        "upstream_rate_limit_reserved"
    }
    fn error_type(&self) -> &'static str {
        self.budget.as_str()
    }
    fn message(&self) -> String {
        format!(
            "The organization is at {:.0} % of OpenAI's {} per-window rate limit that {} may use, so Warden held this request back instead of sending one OpenAI would refuse. Please try again in {}.",
            self.share * 100.0,
            self.budget.as_str(),
            if self.lowest_tier { "the lowest tier" } else { "this traffic" },
            crate::error::wait::wait_text(self.retry_after)
        )
    }
    fn headers(&self) -> Vec<(http::HeaderName, http::HeaderValue)> {
        crate::error::wait::retry_headers(self.retry_after)
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

enum Pace {
    Go,
    Wait(Duration),
    Shed(Shed),
}

impl Pacer {
    pub fn new(config: PacingConfig) -> Self {
        Self {
            config,
            state: Mutex::new(State::default()),
            waited_total: AtomicU64::new(0),
            shed_total: AtomicU64::new(0),
        }
    }

    /// Waits (at most `max_wait`) until the request fits under the organization's share
    /// of upstream's limits and counts it, or refuses it.
    pub async fn admit(&self, priority: Priority, tokens: u64) -> Result<(), WardenError> {
        if !self.config.enabled {
            return Ok(());
        }
        let started = Instant::now();
        let mut waited = false;
        loop {
            let pace = self.decide(priority, tokens, Instant::now());
            match pace {
                Pace::Go => return Ok(()),
                Pace::Wait(wait) if started.elapsed() + wait <= self.config.max_wait => {
                    if !waited {
                        waited = true;
                        self.waited_total.fetch_add(1, Ordering::Relaxed);
                    }
                    // A little past the reset, so the window has really refilled.
                    tokio::time::sleep(wait + Duration::from_millis(5)).await;
                }
                Pace::Wait(wait) => {
                    return Err(self.shed(Shed {
                        budget: Budget::Requests,
                        retry_after: wait,
                        share: self.config.share,
                        lowest_tier: false,
                    }))
                }
                Pace::Shed(shed) => return Err(self.shed(shed)),
            }
        }
    }

    fn shed(&self, shed: Shed) -> WardenError {
        self.shed_total.fetch_add(1, Ordering::Relaxed);
        WardenError::Refused(std::sync::Arc::new(shed))
    }

    fn decide(&self, priority: Priority, tokens: u64, now: Instant) -> Pace {
        let Ok(mut state) = self.state.lock() else {
            return Pace::Go;
        };
        let share = self.config.share * (1.0 - SHED_STEP * f64::from(priority.steps_below_top()));
        let costs = [1, tokens];
        let mut blocked: Option<(usize, Duration)> = None;
        for (i, window) in state.windows.iter_mut().enumerate() {
            let Some(w) = window.as_mut() else { continue };
            if now >= w.reset_at {
                w.remaining = w.limit;
                w.reset_at = now + ASSUMED_WINDOW;
            }
            let used_after = w.limit.saturating_sub(w.remaining) + costs[i];
            if used_after as f64 > w.limit as f64 * share {
                let wait = w.reset_at - now;
                if blocked.is_none_or(|(_, longest)| wait > longest) {
                    blocked = Some((i, wait));
                }
            }
        }
        if let Some((i, wait)) = blocked {
            let budget = if i == 0 {
                Budget::Requests
            } else {
                Budget::Tokens
            };
            if priority.is_lowest() {
                return Pace::Shed(Shed {
                    budget,
                    retry_after: wait,
                    share,
                    lowest_tier: true,
                });
            }
            return Pace::Wait(wait);
        }
        for (i, window) in state.windows.iter_mut().enumerate() {
            if let Some(w) = window.as_mut() {
                w.remaining = w.remaining.saturating_sub(costs[i]);
            }
        }
        Pace::Go
    }

    /// Takes upstream's latest reading (every answer, errors included, carries one).
    pub fn observe(&self, headers: &HeaderMap) {
        let now = Instant::now();
        let read = |what: &str| -> Option<Window> {
            let header = |name: String| headers.get(name)?.to_str().ok();
            let limit = header(format!("x-ratelimit-limit-{what}"))?
                .trim()
                .parse()
                .ok()?;
            let remaining = header(format!("x-ratelimit-remaining-{what}"))?
                .trim()
                .parse()
                .ok()?;
            let reset = header(format!("x-ratelimit-reset-{what}"))
                .and_then(parse_go_duration)
                .unwrap_or(Duration::ZERO);
            Some(Window {
                limit,
                remaining,
                reset_at: now + reset,
            })
        };
        let readings = [read("requests"), read("tokens")];
        if readings.iter().all(Option::is_none) {
            return;
        }
        if let Ok(mut state) = self.state.lock() {
            for (slot, reading) in state.windows.iter_mut().zip(readings) {
                if let Some(reading) = reading {
                    *slot = Some(reading);
                }
            }
        }
    }

    /// (budget, limit, remaining, seconds to reset) for `/metrics`.
    pub fn readings(&self) -> Vec<(&'static str, u64, u64, f64)> {
        let now = Instant::now();
        let Ok(state) = self.state.lock() else {
            return Vec::new();
        };
        state
            .windows
            .iter()
            .zip(["requests", "tokens"])
            .filter_map(|(w, name)| {
                let w = w.as_ref()?;
                Some((
                    name,
                    w.limit,
                    w.remaining,
                    w.reset_at.saturating_duration_since(now).as_secs_f64(),
                ))
            })
            .collect()
    }

    pub fn share(&self) -> f64 {
        self.config.share
    }

    pub fn waited_total(&self) -> u64 {
        self.waited_total.load(Ordering::Relaxed)
    }

    pub fn shed_total(&self) -> u64 {
        self.shed_total.load(Ordering::Relaxed)
    }
}

/// OpenAI's reset durations: Go's format, e.g. `6ms`, `1s`, `17.472s`, `1m30s`, `2h0m0s`.
pub fn parse_go_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let mut total = 0.0f64;
    let mut rest = text;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let value: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        total += value * scale;
        rest = &rest[unit_len..];
    }
    // Upstream's header, not ours: a value past `Duration`'s range is no reset time.
    Duration::try_from_secs_f64(total).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use http::HeaderValue;

    fn reading(limit: &str, remaining: &str, reset: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in [
            ("x-ratelimit-limit-requests", limit),
            ("x-ratelimit-remaining-requests", remaining),
            ("x-ratelimit-reset-requests", reset),
        ] {
            h.insert(name, HeaderValue::from_str(value).unwrap());
        }
        h
    }

    fn pacer() -> Pacer {
        Pacer::new(PacingConfig::default())
    }

    const TOP: Priority = Priority { rank: 2, levels: 3 };
    const MIDDLE: Priority = Priority { rank: 1, levels: 3 };
    const LOWEST: Priority = Priority { rank: 0, levels: 3 };

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("6ms"), Some(Duration::from_millis(6)));
        assert_eq!(parse_go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(
            parse_go_duration("17.472s"),
            Some(Duration::from_millis(17_472))
        );
        assert_eq!(parse_go_duration("2h0m0s"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_go_duration("0s"), Some(Duration::ZERO));
        assert_eq!(parse_go_duration("soon"), None);
        assert_eq!(parse_go_duration(""), None);
    }

    #[test]
    fn nothing_is_held_before_upstream_names_its_limits() {
        let p = pacer();
        for _ in 0..1000 {
            assert!(matches!(p.decide(LOWEST, 10, Instant::now()), Pace::Go));
        }
    }

    #[test]
    fn lower_tiers_stop_first_and_the_top_tier_waits_for_the_reset() {
        let p = pacer();
        // 100 per window, 25 left: 75 % used.
        p.observe(&reading("100", "25", "1s"));
        let now = Instant::now();
        // Lowest tier stops at 72 %: shed at once.
        assert!(matches!(p.decide(LOWEST, 0, now), Pace::Shed(s) if s.lowest_tier));
        // Middle stops at 81 %: six more fit (76..=81), then it waits.
        for _ in 0..6 {
            assert!(matches!(p.decide(MIDDLE, 0, now), Pace::Go));
        }
        assert!(matches!(p.decide(MIDDLE, 0, now), Pace::Wait(_)));
        // The top tier still has up to 90 %.
        for _ in 0..9 {
            assert!(matches!(p.decide(TOP, 0, now), Pace::Go));
        }
        let waits = matches!(p.decide(TOP, 0, now), Pace::Wait(w) if w <= Duration::from_secs(1));
        assert!(waits, "top tier should wait for the reset");
        // After the reset the window is full again.
        let later = now + Duration::from_millis(1100);
        assert!(matches!(p.decide(LOWEST, 0, later), Pace::Go));
    }

    #[test]
    fn a_fresh_reading_replaces_the_local_count() {
        let p = pacer();
        p.observe(&reading("100", "5", "20s"));
        assert!(matches!(p.decide(TOP, 0, Instant::now()), Pace::Wait(_)));
        p.observe(&reading("100", "99", "10ms"));
        assert!(matches!(p.decide(TOP, 0, Instant::now()), Pace::Go));
        assert_eq!(p.readings()[0].2, 98);
    }

    #[tokio::test]
    async fn admit_waits_within_max_wait_and_sheds_beyond_it() {
        let p = pacer();
        p.observe(&reading("100", "0", "150ms"));
        let started = Instant::now();
        p.admit(TOP, 0).await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(150));
        assert_eq!(p.waited_total(), 1);

        p.observe(&reading("100", "0", "30s"));
        let err = p.admit(TOP, 0).await.unwrap_err();
        assert_eq!(err.code(), "upstream_rate_limit_reserved");
        assert_eq!(p.shed_total(), 1);
    }
}

#[cfg(test)]
mod overflow_tests {
    /// OpenAI's reset header parsed from an absurd value is no reset, not a panic.
    #[test]
    fn an_absurd_reset_is_none() {
        let huge = format!("{}h", "9".repeat(400));
        assert_eq!(super::parse_go_duration(&huge), None);
        assert_eq!(
            super::parse_go_duration("1.5s"),
            Some(std::time::Duration::from_millis(1500))
        );
    }
}
