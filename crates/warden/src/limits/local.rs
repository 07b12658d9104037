//! Per-process limit state: one entry per actor in a sharded map, each holding its GCRA
//! cells and in-flight count as atomics, so a decision takes no global lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use dashmap::DashMap;
use foldhash::quality::RandomState;
use smallvec::SmallVec;

use super::gcra::{Cell, Decision, Rate};

/// Cells per actor: requests/minute, requests/day, tokens/minute, tokens/day.
pub const WINDOWS: usize = 4;

#[derive(Debug, Default)]
pub struct ActorState {
    pub cells: [Cell; WINDOWS],
    pub in_flight: AtomicU64,
}

/// One rate check of one actor: which cell, its rate, and the cost.
#[derive(Debug, Clone, Copy)]
pub struct Check {
    pub actor: usize,
    pub window: usize,
    pub rate: Rate,
    pub cost: u64,
}

/// The result of asking for several cells at once.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub now: u64,
    /// Each check's arrival time after the decision (unchanged when refused).
    pub tats: SmallVec<[u64; 16]>,
    /// The refused checks with their waits (`None`: never fits).
    pub refused: SmallVec<[(usize, Option<u64>); 4]>,
}

pub struct LocalLimits {
    /// Seeded per process: ids are client-chosen, so the hash must not be predictable.
    actors: DashMap<String, Arc<ActorState>, RandomState>,
    epoch: Instant,
}

impl Default for LocalLimits {
    fn default() -> Self {
        Self {
            actors: DashMap::with_capacity_and_hasher_and_shard_amount(
                0,
                RandomState::default(),
                64,
            ),
            // Arrival time 0 means "never seen": the clock starts a day in, so a fresh
            // cell is always full.
            epoch: Instant::now(),
        }
    }
}

const CLOCK_OFFSET_NS: u64 = 2 * 86_400 * 1_000_000_000;

impl LocalLimits {
    pub fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos())
            .unwrap_or(u64::MAX)
            .saturating_add(CLOCK_OFFSET_NS)
    }

    /// The state of one actor, created on first use.
    pub fn actor(&self, id: &str) -> Arc<ActorState> {
        if let Some(state) = self.actors.get(id) {
            return state.clone();
        }
        self.actors.entry(id.to_owned()).or_default().clone()
    }

    /// All checks pass and are taken, or none is: a refused request costs nothing.
    pub fn take_all(&self, actors: &[Arc<ActorState>], checks: &[Check]) -> Outcome {
        let now = self.now();
        let mut tats = SmallVec::new();
        let mut refused = SmallVec::new();
        for (i, check) in checks.iter().enumerate() {
            let cell = &actors[check.actor].cells[check.window];
            match cell.try_take(check.rate, now, check.cost) {
                Decision::Allow { tat } => tats.push(tat),
                Decision::Deny {
                    tat,
                    retry_after_ns,
                } => {
                    tats.push(tat);
                    refused.push((i, retry_after_ns));
                }
            }
        }
        if !refused.is_empty() {
            // Give back what the passing checks took.
            for (i, check) in checks.iter().enumerate() {
                if !refused.iter().any(|(r, _)| *r == i) {
                    let cell = &actors[check.actor].cells[check.window];
                    cell.adjust(check.rate, now, -(check.cost as i64));
                    tats[i] = cell.tat();
                }
            }
        }
        Outcome { now, tats, refused }
    }

    /// Usage learnt after the response: charge more, or give back.
    pub fn adjust(&self, actor: &ActorState, window: usize, rate: Rate, delta: i64) {
        actor.cells[window].adjust(rate, self.now(), delta);
    }

    /// Forgets actors whose buckets are full and who have nothing in flight, so the
    /// map holds only recently active users and IPs.
    pub fn sweep(&self) -> usize {
        let now = self.now();
        let before = self.actors.len();
        self.actors.retain(|_, state| {
            Arc::strong_count(state) > 1
                || state.in_flight.load(Ordering::Acquire) > 0
                || !state.cells.iter().all(|c| c.idle(now))
        });
        before - self.actors.len()
    }

    pub fn len(&self) -> usize {
        self.actors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.actors.is_empty()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const MIN: u64 = 60_000_000_000;

    #[test]
    fn all_or_nothing() {
        let local = LocalLimits::default();
        let a = local.actor("a");
        let b = local.actor("b");
        let actors = vec![a.clone(), b.clone()];
        let roomy = Rate::new(100, MIN);
        let tight = Rate::new(1, MIN);
        let checks = [
            Check {
                actor: 0,
                window: 0,
                rate: roomy,
                cost: 1,
            },
            Check {
                actor: 1,
                window: 0,
                rate: tight,
                cost: 1,
            },
        ];
        assert!(local.take_all(&actors, &checks).refused.is_empty());
        let second = local.take_all(&actors, &checks);
        assert_eq!(second.refused.len(), 1);
        assert_eq!(second.refused[0].0, 1);
        // The refused request did not use a's budget.
        let now = local.now();
        assert_eq!(roomy.remaining(a.cells[0].tat(), now), 99);
    }

    #[test]
    fn sweep_forgets_idle_actors_only() {
        let local = LocalLimits::default();
        {
            let busy = local.actor("busy");
            busy.in_flight.fetch_add(1, Ordering::AcqRel);
            let _idle = local.actor("idle");
        }
        let used = local.actor("used");
        local.take_all(
            std::slice::from_ref(&used),
            &[Check {
                actor: 0,
                window: 0,
                rate: Rate::new(10, MIN),
                cost: 1,
            }],
        );
        drop(used);
        assert_eq!(local.sweep(), 1);
        assert_eq!(local.len(), 2);
    }
}
