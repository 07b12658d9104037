//! `[upstream]` retry and circuit-breaker keys: how often and how long Warden retries a
//! failed upstream call before answering, and when it stops calling altogether.

use std::time::Duration;

use super::problems::Problems;
use super::raw::RawUpstream;

pub const DEFAULT_MAX_RETRIES: u32 = 2;
pub const DEFAULT_RETRY_DEADLINE: Duration = Duration::from_secs(20);
pub const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_millis(500);
pub const DEFAULT_BREAKER_FAILURES: u32 = 5;
pub const DEFAULT_BREAKER_COOLDOWN: Duration = Duration::from_secs(10);
/// More than this many retries only multiplies load on an upstream that is struggling.
const MAX_RETRIES_CAP: u64 = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryConfig {
    /// Retries after the first attempt (0 turns retries off).
    pub max_retries: u32,
    /// No retry starts (or waits) past this much time since the first attempt.
    pub deadline: Duration,
    /// First backoff; each retry doubles it (with jitter) up to 8 s, unless upstream
    /// names a wait in `retry-after-ms` / `retry-after`.
    pub backoff: Duration,
    /// Consecutive failed attempts (5xx, connection errors) that open the breaker.
    pub breaker_failures: u32,
    /// How long an open breaker answers 503 at once before one probe may try again.
    pub breaker_cooldown: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_retries: DEFAULT_MAX_RETRIES,
            deadline: DEFAULT_RETRY_DEADLINE,
            backoff: DEFAULT_RETRY_BACKOFF,
            breaker_failures: DEFAULT_BREAKER_FAILURES,
            breaker_cooldown: DEFAULT_BREAKER_COOLDOWN,
        }
    }
}

pub fn validate(up: &RawUpstream, problems: &mut Problems) -> RetryConfig {
    let mut config = RetryConfig::default();
    if let Some(n) = up.max_retries {
        if n > MAX_RETRIES_CAP {
            problems.push(
                "upstream.max_retries",
                format!("must be at most {MAX_RETRIES_CAP} (found {n})"),
            );
        } else {
            config.max_retries = n as u32;
        }
    }
    let positive = |value: Option<u64>, path: &str, problems: &mut Problems| match value {
        Some(0) => {
            problems.push(path, "must be greater than 0");
            None
        }
        other => other,
    };
    if let Some(s) = positive(
        up.retry_deadline_secs,
        "upstream.retry_deadline_secs",
        problems,
    ) {
        config.deadline = Duration::from_secs(s);
    }
    if let Some(ms) = positive(up.retry_backoff_ms, "upstream.retry_backoff_ms", problems) {
        config.backoff = Duration::from_millis(ms);
    }
    if let Some(n) = positive(up.breaker_failures, "upstream.breaker_failures", problems) {
        config.breaker_failures = n.min(u64::from(u32::MAX)) as u32;
    }
    if let Some(s) = positive(
        up.breaker_cooldown_secs,
        "upstream.breaker_cooldown_secs",
        problems,
    ) {
        config.breaker_cooldown = Duration::from_secs(s);
    }
    config
}
