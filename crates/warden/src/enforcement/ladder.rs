//! The strike ladder as pure arithmetic: weights decay by half every half-life, and the
//! decayed total picks the rung (warn, throttle, suspend, ban).

use std::time::Duration;

use crate::config::enforcement::EnforcementConfig;

/// An end user's standing as enforcement knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Standing {
    pub status: Status,
    /// Strike weight as of `weight_at_ms` (decays from there).
    pub weight: f64,
    pub weight_at_ms: i64,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Status {
    Active,
    Suspended { until_ms: i64 },
    Banned,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Suspended { .. } => "suspended",
            Status::Banned => "banned",
        }
    }

    pub fn until_ms(self) -> Option<i64> {
        match self {
            Status::Suspended { until_ms } => Some(until_ms),
            _ => None,
        }
    }

    pub fn parse(label: &str, until_ms: Option<i64>) -> Status {
        match (label, until_ms) {
            ("banned", _) => Status::Banned,
            ("suspended", Some(until_ms)) => Status::Suspended { until_ms },
            _ => Status::Active,
        }
    }
}

/// What a request from this user meets, most severe first.
#[derive(Debug, Clone, PartialEq)]
pub enum Rung {
    Banned,
    Suspended { until_ms: i64 },
    Throttled,
    Warned,
    Clear,
}

impl Rung {
    pub fn label(&self) -> &'static str {
        match self {
            Rung::Banned => "ban",
            Rung::Suspended { .. } => "suspend",
            Rung::Throttled => "throttle",
            Rung::Warned => "warn",
            Rung::Clear => "clear",
        }
    }

    fn severity(&self) -> u8 {
        match self {
            Rung::Clear => 0,
            Rung::Warned => 1,
            Rung::Throttled => 2,
            Rung::Suspended { .. } => 3,
            Rung::Banned => 4,
        }
    }

    pub fn is_above(&self, other: &Rung) -> bool {
        self.severity() > other.severity()
    }
}

/// `weight` recorded at `at_ms`, decayed to `now_ms`.
pub fn decayed(weight: f64, at_ms: i64, now_ms: i64, half_life: Duration) -> f64 {
    let elapsed = (now_ms - at_ms).max(0) as f64 / 1000.0;
    let half = half_life.as_secs_f64().max(1.0);
    weight * 0.5f64.powf(elapsed / half)
}

/// Strikes older than this many half-lives weigh under 0.1 % of their value; they are
/// left out of the sum.
pub const HORIZON_HALF_LIVES: u32 = 10;

pub fn horizon_ms(half_life: Duration) -> i64 {
    (half_life.as_millis() as i64).saturating_mul(i64::from(HORIZON_HALF_LIVES))
}

/// The rung a request meets now.
pub fn rung(standing: &Standing, now_ms: i64, config: &EnforcementConfig) -> Rung {
    match standing.status {
        Status::Banned => return Rung::Banned,
        Status::Suspended { until_ms } if until_ms > now_ms => return Rung::Suspended { until_ms },
        _ => {}
    }
    let weight = decayed(
        standing.weight,
        standing.weight_at_ms,
        now_ms,
        config.half_life,
    );
    weight_rung(weight, config)
}

/// Weights are compared at 0.01 precision: a strike that just reached a rung must not
/// fall back below it a millisecond later because it began to decay.
fn settled(weight: f64) -> f64 {
    (weight * 100.0).round() / 100.0
}

/// The advisory rungs (below suspension) a weight reaches.
fn weight_rung(weight: f64, config: &EnforcementConfig) -> Rung {
    let weight = settled(weight);
    if weight >= config.throttle_at {
        Rung::Throttled
    } else if weight >= config.warn_at {
        Rung::Warned
    } else {
        Rung::Clear
    }
}

/// After a new strike: the status the user should now have. A ban stays; crossing
/// `ban_at` bans; crossing `suspend_at` suspends (again, once a suspension has run out).
pub fn status_after_strike(
    current: Status,
    weight: f64,
    now_ms: i64,
    config: &EnforcementConfig,
) -> Status {
    let weight = settled(weight);
    match current {
        Status::Banned => Status::Banned,
        _ if weight >= config.ban_at => Status::Banned,
        Status::Suspended { until_ms } if until_ms > now_ms => current,
        _ if weight >= config.suspend_at => Status::Suspended {
            until_ms: now_ms + config.suspend_for.as_millis() as i64,
        },
        _ => Status::Active,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::config::Config;

    fn config() -> EnforcementConfig {
        Config::from_toml("").unwrap().enforcement
    }

    fn active(weight: f64, at: i64) -> Standing {
        Standing {
            status: Status::Active,
            weight,
            weight_at_ms: at,
            reason: None,
        }
    }

    #[test]
    fn weight_halves_every_half_life() {
        let hl = Duration::from_secs(3600);
        assert!((decayed(8.0, 0, 3_600_000, hl) - 4.0).abs() < 1e-9);
        assert!((decayed(8.0, 0, 7_200_000, hl) - 2.0).abs() < 1e-9);
        // A clock that went backwards never inflates a weight.
        assert_eq!(decayed(8.0, 10_000, 0, hl), 8.0);
    }

    #[test]
    fn rungs_follow_the_decayed_weight() {
        let c = config();
        assert_eq!(rung(&active(0.5, 0), 0, &c), Rung::Clear);
        assert_eq!(rung(&active(c.warn_at, 0), 0, &c), Rung::Warned);
        assert_eq!(rung(&active(c.throttle_at, 0), 0, &c), Rung::Throttled);
        // Two half-lives later a throttled user (weight 4) is back under warn (1.0).
        let later = 2 * c.half_life.as_millis() as i64 + 1;
        assert_eq!(rung(&active(3.9, 0), later, &c), Rung::Clear);
    }

    #[test]
    fn suspension_runs_out_and_ban_stays() {
        let c = config();
        let suspended = Standing {
            status: Status::Suspended { until_ms: 1_000 },
            ..active(0.0, 0)
        };
        assert_eq!(
            rung(&suspended, 999, &c),
            Rung::Suspended { until_ms: 1_000 }
        );
        assert_eq!(rung(&suspended, 1_000, &c), Rung::Clear);
        let banned = Standing {
            status: Status::Banned,
            ..active(0.0, 0)
        };
        assert_eq!(rung(&banned, i64::MAX, &c), Rung::Banned);
    }

    #[test]
    fn strikes_escalate_to_suspension_then_ban() {
        let c = config();
        assert_eq!(
            status_after_strike(Status::Active, c.suspend_at - 0.1, 0, &c),
            Status::Active
        );
        let s = status_after_strike(Status::Active, c.suspend_at, 0, &c);
        assert_eq!(
            s,
            Status::Suspended {
                until_ms: c.suspend_for.as_millis() as i64
            }
        );
        assert_eq!(
            status_after_strike(s, c.suspend_at + 1.0, 5, &c),
            s,
            "still suspended"
        );
        assert_eq!(status_after_strike(s, c.ban_at, 5, &c), Status::Banned);
        assert_eq!(
            status_after_strike(Status::Banned, 0.0, 5, &c),
            Status::Banned
        );
    }
}
