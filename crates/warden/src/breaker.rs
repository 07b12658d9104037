//! Circuit breaker for a dependency (the upstream API, the Moderation endpoint): after
//! `threshold` consecutive failed calls Warden stops calling for a cool-down and applies
//! its failure policy at once, then lets one probe through; the probe's result closes or
//! reopens it. This keeps an outage from becoming a retry storm or a queue of timeouts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One probe is in flight; everyone else is refused until it reports.
    Probing {
        since: Instant,
    },
}

pub struct Breaker {
    /// What it guards, for the log line when it opens.
    name: &'static str,
    threshold: u32,
    cooldown: Duration,
    // A std mutex: held for a few instructions, never across an await.
    state: Mutex<State>,
    opened_total: AtomicU64,
    refused_total: AtomicU64,
}

/// Leave to call upstream once. A probe that is dropped without a verdict (its client
/// went away) counts as a failure, so the breaker never stays half-open forever.
pub struct Permit<'a> {
    breaker: &'a Breaker,
    probe: bool,
    reported: bool,
}

impl Permit<'_> {
    pub fn success(mut self) {
        self.reported = true;
        self.breaker.success();
    }

    pub fn failure(mut self) {
        self.reported = true;
        self.breaker.failure();
    }

    /// Neither verdict (e.g. a 429: upstream is up but busy); a probe still closes.
    pub fn neutral(mut self) {
        self.reported = true;
        if self.probe {
            self.breaker.success();
        }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.probe && !self.reported {
            self.breaker.failure();
        }
    }
}

impl Breaker {
    pub fn new(name: &'static str, threshold: u32, cooldown: Duration) -> Self {
        Self {
            name,
            threshold: threshold.max(1),
            cooldown,
            state: Mutex::new(State::Closed { failures: 0 }),
            opened_total: AtomicU64::new(0),
            refused_total: AtomicU64::new(0),
        }
    }

    /// A permit to call upstream, or how long until the breaker lets a probe through.
    pub fn admit(&self) -> Result<Permit<'_>, Duration> {
        let permit = |probe| Permit {
            breaker: self,
            probe,
            reported: false,
        };
        let Ok(mut state) = self.state.lock() else {
            return Ok(permit(false));
        };
        let now = Instant::now();
        match *state {
            State::Closed { .. } => Ok(permit(false)),
            State::Open { until } if now >= until => {
                *state = State::Probing { since: now };
                Ok(permit(true))
            }
            State::Open { until } => {
                self.refused_total.fetch_add(1, Ordering::Relaxed);
                Err(until - now)
            }
            State::Probing { since } => {
                self.refused_total.fetch_add(1, Ordering::Relaxed);
                // The probe's answer is due within the cool-down; say "soon".
                Err(self
                    .cooldown
                    .saturating_sub(now - since)
                    .max(Duration::from_secs(1)))
            }
        }
    }

    fn success(&self) {
        if let Ok(mut state) = self.state.lock() {
            *state = State::Closed { failures: 0 };
        }
    }

    fn failure(&self) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let open = State::Open {
            until: Instant::now() + self.cooldown,
        };
        *state = match *state {
            State::Closed { failures } if failures + 1 < self.threshold => State::Closed {
                failures: failures + 1,
            },
            State::Open { .. } => open,
            State::Closed { .. } | State::Probing { .. } => {
                self.opened_total.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    breaker = self.name,
                    cooldown_s = self.cooldown.as_secs_f64(),
                    "circuit breaker opened"
                );
                open
            }
        };
    }

    /// 0 closed, 1 open, 2 half-open (a probe in flight).
    pub fn state_code(&self) -> u8 {
        match self.state.lock().map(|s| *s) {
            Ok(State::Closed { .. }) | Err(_) => 0,
            Ok(State::Open { .. }) => 1,
            Ok(State::Probing { .. }) => 2,
        }
    }

    pub fn threshold(&self) -> u32 {
        self.threshold
    }

    pub fn opened_total(&self) -> u64 {
        self.opened_total.load(Ordering::Relaxed)
    }

    pub fn refused_total(&self) -> u64 {
        self.refused_total.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn opens_after_n_failures_then_probes_once() {
        let breaker = Breaker::new("test", 3, Duration::from_millis(40));
        for _ in 0..3 {
            breaker.admit().unwrap().failure();
        }
        assert_eq!(breaker.state_code(), 1);
        assert!(breaker.admit().is_err(), "open: no calls");
        std::thread::sleep(Duration::from_millis(50));
        let probe = breaker.admit().unwrap();
        assert!(breaker.admit().is_err(), "only one probe at a time");
        probe.failure();
        assert!(breaker.admit().is_err(), "failed probe reopens");
        std::thread::sleep(Duration::from_millis(50));
        breaker.admit().unwrap().success();
        assert!(
            breaker.admit().is_ok() && breaker.admit().is_ok(),
            "closed again"
        );
        assert_eq!(breaker.opened_total(), 2);
    }

    #[test]
    fn an_abandoned_probe_reopens_and_a_success_resets_the_count() {
        let breaker = Breaker::new("test", 2, Duration::from_millis(20));
        breaker.admit().unwrap().failure();
        breaker.admit().unwrap().success();
        breaker.admit().unwrap().failure();
        assert_eq!(breaker.state_code(), 0, "not consecutive");
        breaker.admit().unwrap().failure();
        assert_eq!(breaker.state_code(), 1);
        std::thread::sleep(Duration::from_millis(30));
        drop(breaker.admit().unwrap());
        assert_eq!(breaker.state_code(), 1, "dropped probe counts as a failure");
    }
}
