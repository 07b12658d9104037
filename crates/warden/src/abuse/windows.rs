//! Counts over sliding windows of 1 h, 24 h and 7 d in fixed memory: minute buckets for
//! the last day, hour buckets for the week. A bucket is cleared when its slot comes round.

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 3_600_000;
const MINUTES: usize = 24 * 60;
const HOURS: usize = 7 * 24;

/// The three windows, in order, with their labels.
pub const WINDOWS: [(&str, i64); 3] = [
    ("1h", HOUR_MS),
    ("24h", 24 * HOUR_MS),
    ("7d", 7 * 24 * HOUR_MS),
];

#[derive(Clone)]
pub struct Windowed {
    minutes: Box<[(i64, u32); MINUTES]>,
    hours: Box<[(i64, u32); HOURS]>,
}

impl Default for Windowed {
    fn default() -> Self {
        Self {
            minutes: Box::new([(-1, 0); MINUTES]),
            hours: Box::new([(-1, 0); HOURS]),
        }
    }
}

impl Windowed {
    pub fn add(&mut self, at_ms: i64, n: u32) {
        let minute = at_ms.div_euclid(MINUTE_MS);
        let slot = &mut self.minutes[minute.rem_euclid(MINUTES as i64) as usize];
        if slot.0 != minute {
            *slot = (minute, 0);
        }
        slot.1 = slot.1.saturating_add(n);
        let hour = at_ms.div_euclid(HOUR_MS);
        let slot = &mut self.hours[hour.rem_euclid(HOURS as i64) as usize];
        if slot.0 != hour {
            *slot = (hour, 0);
        }
        slot.1 = slot.1.saturating_add(n);
    }

    /// The count over the last `window_ms` up to `now_ms`: exact to the minute within a
    /// day, to the hour beyond.
    pub fn sum(&self, now_ms: i64, window_ms: i64) -> u64 {
        if window_ms <= 24 * HOUR_MS {
            let now = now_ms.div_euclid(MINUTE_MS);
            let from = now - window_ms / MINUTE_MS;
            self.minutes
                .iter()
                .filter(|(m, _)| *m > from && *m <= now)
                .map(|(_, n)| u64::from(*n))
                .sum()
        } else {
            let now = now_ms.div_euclid(HOUR_MS);
            let from = now - window_ms / HOUR_MS;
            self.hours
                .iter()
                .filter(|(h, _)| *h > from && *h <= now)
                .map(|(_, n)| u64::from(*n))
                .sum()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_forget_what_slid_out() {
        let mut w = Windowed::default();
        let t0 = 1_000 * HOUR_MS;
        w.add(t0, 3);
        w.add(t0 + 30 * MINUTE_MS, 2);
        assert_eq!(w.sum(t0 + 30 * MINUTE_MS, HOUR_MS), 5);
        assert_eq!(w.sum(t0 + 61 * MINUTE_MS, HOUR_MS), 2);
        assert_eq!(w.sum(t0 + 2 * HOUR_MS, 24 * HOUR_MS), 5);
        assert_eq!(w.sum(t0 + 3 * 24 * HOUR_MS, 7 * 24 * HOUR_MS), 5);
        assert_eq!(w.sum(t0 + 8 * 24 * HOUR_MS, 7 * 24 * HOUR_MS), 0);
        // A slot reused a day later starts from zero.
        w.add(t0 + 24 * HOUR_MS, 1);
        assert_eq!(w.sum(t0 + 24 * HOUR_MS, HOUR_MS), 1);
    }
}
