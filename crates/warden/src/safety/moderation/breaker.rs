//! Circuit breaker for the Moderation endpoint: after `threshold` consecutive failures it
//! stops calling for `cooldown`, then lets one probe through; a success closes it again.
//! While open, requests get the `on_error` policy at once instead of waiting on timeouts.

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
    /// One probe is in flight; everyone else is refused until it reports, or until
    /// `until` if it never does (its request was dropped: the client left mid-call).
    Probing {
        until: Instant,
    },
}

pub struct Breaker {
    threshold: u32,
    cooldown: Duration,
    // A std mutex: held for a few instructions, never across an await.
    state: Mutex<State>,
}

impl Breaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            cooldown,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    /// May this call go to the endpoint?
    pub fn allow(&self) -> bool {
        let Ok(mut state) = self.state.lock() else {
            return true;
        };
        match *state {
            State::Closed { .. } => true,
            State::Open { until } | State::Probing { until } if Instant::now() >= until => {
                *state = State::Probing {
                    until: Instant::now() + self.cooldown,
                };
                true
            }
            State::Open { .. } | State::Probing { .. } => false,
        }
    }

    pub fn success(&self) {
        if let Ok(mut state) = self.state.lock() {
            *state = State::Closed { failures: 0 };
        }
    }

    /// Records a failure; true when this failure opened the breaker.
    pub fn failure(&self) -> bool {
        let Ok(mut state) = self.state.lock() else {
            return false;
        };
        let open = State::Open {
            until: Instant::now() + self.cooldown,
        };
        match *state {
            State::Closed { failures } if failures + 1 >= self.threshold => {
                *state = open;
                true
            }
            State::Closed { failures } => {
                *state = State::Closed {
                    failures: failures + 1,
                };
                false
            }
            State::Probing { .. } | State::Open { .. } => {
                *state = open;
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_n_failures_then_probes_once() {
        let breaker = Breaker::new(3, Duration::from_millis(40));
        assert!(breaker.allow());
        assert!(!breaker.failure());
        assert!(!breaker.failure());
        assert!(breaker.failure(), "third failure opens");
        assert!(!breaker.allow(), "open: no calls");
        std::thread::sleep(Duration::from_millis(50));
        assert!(breaker.allow(), "cool-down over: one probe");
        assert!(!breaker.allow(), "only one probe at a time");
        assert!(breaker.failure(), "failed probe reopens");
        assert!(!breaker.allow());
        std::thread::sleep(Duration::from_millis(50));
        assert!(breaker.allow());
        breaker.success();
        assert!(breaker.allow() && breaker.allow(), "closed again");
    }

    #[test]
    fn a_probe_that_never_reports_does_not_keep_the_breaker_shut() {
        let breaker = Breaker::new(1, Duration::from_millis(30));
        assert!(breaker.failure());
        std::thread::sleep(Duration::from_millis(40));
        assert!(breaker.allow(), "the probe");
        // Its caller went away: neither success nor failure is ever reported.
        assert!(!breaker.allow(), "still waiting on the probe");
        std::thread::sleep(Duration::from_millis(40));
        assert!(
            breaker.allow(),
            "a new probe once the first one's time is up"
        );
    }

    #[test]
    fn a_success_resets_the_count() {
        let breaker = Breaker::new(2, Duration::from_secs(60));
        assert!(!breaker.failure());
        breaker.success();
        assert!(!breaker.failure());
        assert!(breaker.allow());
    }
}
