//! Request-rate spikes against the actor's own baseline: an exponentially weighted
//! moving average of requests per interval. A key that always sends 1,000 a minute is
//! not spiking at 1,000; one that sends 20 is.

/// Weight of the newest interval in the baseline.
const ALPHA: f64 = 0.2;

#[derive(Debug, Clone, Default)]
pub struct Ewma {
    /// Index of the interval being counted (time / interval).
    current: i64,
    count: u64,
    baseline: f64,
    /// Intervals closed since the actor was first seen, idle ones included.
    seen: u64,
    started: bool,
    /// The interval that already reported a spike (one report per interval).
    reported: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spike {
    pub count: u64,
    pub baseline: f64,
}

pub struct SpikeRule {
    pub factor: f64,
    pub min_requests: u64,
    pub warmup: u64,
}

impl Ewma {
    /// Counts one request in `interval`; `Some` the first time the interval crosses the line.
    pub fn record(&mut self, interval: i64, rule: &SpikeRule) -> Option<Spike> {
        if !self.started {
            self.started = true;
            self.current = interval;
        } else if interval > self.current {
            self.close_until(interval);
        }
        self.count += 1;
        let line = rule.factor * self.baseline.max(1.0);
        if self.seen >= rule.warmup
            && self.count >= rule.min_requests
            && self.count as f64 > line
            && self.reported != Some(self.current)
        {
            self.reported = Some(self.current);
            return Some(Spike {
                count: self.count,
                baseline: self.baseline,
            });
        }
        None
    }

    fn close_until(&mut self, interval: i64) {
        let count = self.count as f64;
        self.baseline = if self.seen == 0 {
            count
        } else {
            ALPHA * count + (1.0 - ALPHA) * self.baseline
        };
        // Idle intervals pull the baseline down as zero counts would.
        let idle = (interval - self.current - 1).clamp(0, 1_000) as i32;
        self.baseline *= (1.0 - ALPHA).powi(idle);
        self.seen += (interval - self.current) as u64;
        self.current = interval;
        self.count = 0;
    }

    pub fn baseline(&self) -> f64 {
        self.baseline
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: SpikeRule = SpikeRule {
        factor: 4.0,
        min_requests: 20,
        warmup: 3,
    };

    #[test]
    fn steady_traffic_is_quiet_and_a_burst_fires_once() {
        let mut e = Ewma::default();
        for interval in 0..10 {
            for _ in 0..10 {
                assert_eq!(e.record(interval, &RULE), None);
            }
        }
        assert!((e.baseline() - 10.0).abs() < 0.5, "{}", e.baseline());
        let fired: Vec<_> = (0..60).filter_map(|_| e.record(10, &RULE)).collect();
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].count, 41);
    }

    #[test]
    fn a_new_actor_has_no_baseline_to_spike_against() {
        let mut e = Ewma::default();
        assert!((0..100).all(|_| e.record(0, &RULE).is_none()));
    }

    #[test]
    fn a_steady_high_rate_is_the_baseline() {
        let mut e = Ewma::default();
        for interval in 0..20 {
            for _ in 0..200 {
                assert_eq!(e.record(interval, &RULE), None);
            }
        }
    }
}
