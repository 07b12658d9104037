//! GCRA (generic cell rate algorithm) on one atomic "theoretical arrival time" per limit:
//! a bucket of `limit` that refills continuously over `period`, so no window edge lets
//! two full bursts through back to back.

use std::sync::atomic::{AtomicU64, Ordering};

/// One limit: `limit` units per `period_ns`. The bucket holds `limit` units at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub limit: u64,
    pub period_ns: u64,
}

impl Rate {
    pub fn new(limit: u64, period_ns: u64) -> Rate {
        Rate {
            limit: limit.max(1),
            period_ns: period_ns.max(1),
        }
    }

    /// Time one unit takes to refill.
    pub fn interval_ns(self) -> u64 {
        (self.period_ns / self.limit).max(1)
    }

    /// Time `cost` units take to refill.
    pub fn cost_ns(self, cost: u64) -> u64 {
        // The common case in 64 bits; u128 division is several times slower.
        if let Some(product) = cost.checked_mul(self.period_ns) {
            return product / self.limit;
        }
        let exact = u128::from(cost) * u128::from(self.period_ns) / u128::from(self.limit);
        u64::try_from(exact).unwrap_or(u64::MAX)
    }

    /// Units still available when the arrival time is `tat` at `now`.
    pub fn remaining(self, tat: u64, now: u64) -> u64 {
        let used = tat.saturating_sub(now);
        let free = self.period_ns.saturating_sub(used);
        let units = u128::from(free) * u128::from(self.limit) / u128::from(self.period_ns);
        u64::try_from(units).unwrap_or(u64::MAX).min(self.limit)
    }
}

/// The outcome of asking one limit for `cost` units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Admitted; the new arrival time was stored.
    Allow { tat: u64 },
    /// Refused; nothing changed. `retry_after_ns` is when `cost` units will fit again,
    /// `None` when `cost` is larger than the whole bucket and never fits.
    Deny {
        tat: u64,
        retry_after_ns: Option<u64>,
    },
}

/// The pure rule: the new arrival time if `cost` fits, else how long until it does.
pub fn decide(rate: Rate, tat: u64, now: u64, cost: u64) -> Decision {
    let need = rate.cost_ns(cost);
    if need > rate.period_ns {
        return Decision::Deny {
            tat,
            retry_after_ns: None,
        };
    }
    let new_tat = tat.max(now).saturating_add(need);
    let ahead = new_tat - now;
    if ahead <= rate.period_ns {
        Decision::Allow { tat: new_tat }
    } else {
        Decision::Deny {
            tat,
            retry_after_ns: Some(ahead - rate.period_ns),
        }
    }
}

/// One limit's state: the theoretical arrival time in ns on the limiter's clock.
#[derive(Debug, Default)]
pub struct Cell(AtomicU64);

impl Cell {
    /// Admits `cost` units or leaves the cell unchanged; lock-free.
    pub fn try_take(&self, rate: Rate, now: u64, cost: u64) -> Decision {
        let mut current = self.0.load(Ordering::Acquire);
        loop {
            match decide(rate, current, now, cost) {
                Decision::Allow { tat } => {
                    match self.0.compare_exchange_weak(
                        current,
                        tat,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    ) {
                        Ok(_) => return Decision::Allow { tat },
                        Err(seen) => current = seen,
                    }
                }
                deny => return deny,
            }
        }
    }

    /// Charges `cost` units without asking (usage learnt after the fact may overdraw),
    /// or gives `-cost` back; never moves the arrival time before `now`.
    pub fn adjust(&self, rate: Rate, now: u64, cost: i64) {
        let delta = rate.cost_ns(cost.unsigned_abs());
        let _ = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |tat| {
                Some(if cost >= 0 {
                    tat.max(now).saturating_add(delta)
                } else {
                    tat.saturating_sub(delta).max(now)
                })
            });
    }

    /// Takes over an arrival time decided elsewhere (the shared state in Redis), so a
    /// later local decision starts from it instead of a full bucket.
    pub fn mirror(&self, tat: u64) {
        self.0.store(tat, Ordering::Release);
    }

    /// True when the bucket is full again at `now`: the state can be forgotten.
    pub fn idle(&self, now: u64) -> bool {
        self.0.load(Ordering::Acquire) <= now
    }

    pub fn tat(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    const SEC: u64 = 1_000_000_000;
    const MIN: u64 = 60 * SEC;

    fn admitted(cell: &Cell, rate: Rate, now: u64, tries: u64) -> u64 {
        (0..tries)
            .filter(|_| matches!(cell.try_take(rate, now, 1), Decision::Allow { .. }))
            .count() as u64
    }

    #[test]
    fn a_full_bucket_admits_exactly_the_limit_then_refuses() {
        let rate = Rate::new(10, MIN);
        let cell = Cell::default();
        let now = 1000 * MIN;
        assert_eq!(admitted(&cell, rate, now, 25), 10);
        let Decision::Deny { retry_after_ns, .. } = cell.try_take(rate, now, 1) else {
            panic!("admitted past the limit")
        };
        assert_eq!(
            retry_after_ns,
            Some(6 * SEC),
            "one unit refills in 60 s / 10"
        );
    }

    #[test]
    fn no_second_burst_at_a_window_edge() {
        // A fixed window would admit 10 at 0:59.9 and 10 more at 1:00.0.
        let rate = Rate::new(10, MIN);
        let cell = Cell::default();
        let edge = 1000 * MIN;
        assert_eq!(admitted(&cell, rate, edge - 100_000_000, 10), 10);
        assert_eq!(admitted(&cell, rate, edge, 10), 0);
        // 200 ms after the burst a 6 s unit has not refilled; 6 s after it one has.
        assert_eq!(admitted(&cell, rate, edge + 100_000_000, 10), 0);
        assert_eq!(admitted(&cell, rate, edge - 100_000_000 + 6 * SEC, 10), 1);
    }

    #[test]
    fn steady_rate_over_a_long_run_matches_the_limit() {
        let rate = Rate::new(60, MIN);
        let cell = Cell::default();
        let start = 10 * MIN;
        let mut total = 0;
        // One attempt every 100 ms for 10 minutes.
        for step in 0..6000 {
            total += admitted(&cell, rate, start + step * 100_000_000, 1);
        }
        // Burst of 60 plus one per second for 600 s, minus the last partial one.
        assert!((659..=660).contains(&total), "admitted {total}");
    }

    #[test]
    fn costs_larger_than_the_bucket_never_fit() {
        let rate = Rate::new(1000, MIN);
        assert_eq!(
            decide(rate, 0, MIN, 1001),
            Decision::Deny {
                tat: 0,
                retry_after_ns: None
            }
        );
        assert!(matches!(decide(rate, 0, MIN, 1000), Decision::Allow { .. }));
    }

    #[test]
    fn adjust_overdraws_and_refunds_without_going_before_now() {
        let rate = Rate::new(100, MIN);
        let cell = Cell::default();
        let now = 5 * MIN;
        cell.adjust(rate, now, 150);
        assert_eq!(rate.remaining(cell.tat(), now), 0);
        assert!(matches!(cell.try_take(rate, now, 1), Decision::Deny { .. }));
        cell.adjust(rate, now, -1000);
        assert_eq!(cell.tat(), now);
        assert_eq!(rate.remaining(cell.tat(), now), 100);
    }

    #[test]
    fn remaining_counts_down() {
        let rate = Rate::new(4, MIN);
        let cell = Cell::default();
        let now = MIN;
        for left in (0..4).rev() {
            let Decision::Allow { tat } = cell.try_take(rate, now, 1) else {
                panic!()
            };
            assert_eq!(rate.remaining(tat, now), left);
        }
    }

    #[test]
    fn day_limits_with_huge_costs_do_not_overflow() {
        let rate = Rate::new(1, 86_400 * SEC);
        assert_eq!(rate.cost_ns(u64::MAX), u64::MAX);
        let big = Rate::new(u64::MAX, 86_400 * SEC);
        assert!(matches!(
            decide(big, 0, 1, 1_000_000),
            Decision::Allow { .. }
        ));
    }
}
