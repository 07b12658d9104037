//! `[upstream]` pacing keys: the share of OpenAI's own rate limits Warden lets the
//! organization use, and how long a request may wait for the window to reset.

use std::time::Duration;

use super::problems::Problems;
use super::raw::RawUpstream;

pub const DEFAULT_SHARE: f64 = 0.9;
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(2);
/// A request held longer than this is better refused with a retry hint.
const MAX_WAIT_CAP_MS: u64 = 30_000;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PacingConfig {
    pub enabled: bool,
    /// Fraction of OpenAI's limit (0 < share ≤ 1) the organization may use per window.
    pub share: f64,
    /// Longest a request waits for headroom before it is refused.
    pub max_wait: Duration,
}

impl Default for PacingConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            share: DEFAULT_SHARE,
            max_wait: DEFAULT_MAX_WAIT,
        }
    }
}

pub fn validate(up: &RawUpstream, problems: &mut Problems) -> PacingConfig {
    let mut config = PacingConfig::default();
    if let Some(enabled) = up.pacing {
        config.enabled = enabled;
    }
    if let Some(share) = up.pacing_share {
        if share > 0.0 && share <= 1.0 {
            config.share = share;
        } else {
            problems.push(
                "upstream.pacing_share",
                format!("must be above 0 and at most 1 (found {share})"),
            );
        }
    }
    if let Some(ms) = up.pacing_max_wait_ms {
        if ms > MAX_WAIT_CAP_MS {
            problems.push(
                "upstream.pacing_max_wait_ms",
                format!("must be at most {MAX_WAIT_CAP_MS} (found {ms})"),
            );
        } else {
            config.max_wait = Duration::from_millis(ms);
        }
    }
    config
}
