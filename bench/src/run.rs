//! The run plan: for each mode and rate a warmup, then direct and Warden segments in ABBA order
//! (direct, warden, warden, direct, …), with the servers' CPU time and Warden's RSS beside them.

use crate::load::{self, Load, Segment};
use crate::proc_stats::{self, RssSampler};
use crate::tally::{Outcome, Tally};
use crate::workload::Side;
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::Handle;

/// Non-streaming chat, or streaming chat (where time to first byte matters too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Chat,
    Stream,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Chat => "chat",
            Mode::Stream => "stream",
        }
    }
}

/// What to run, from the command line.
#[derive(Debug, Clone)]
pub struct Plan {
    pub rates: Vec<f64>,
    /// Measured time per target per rate, split over `segments`.
    pub seconds: f64,
    /// Unrecorded time per target per rate before measuring.
    pub warmup_seconds: f64,
    pub segments: u32,
    pub timeout: Duration,
    pub modes: Vec<Mode>,
}

impl Plan {
    /// Upper bound of the load time (not counting the drain of the last requests).
    pub fn load_seconds(&self) -> f64 {
        let per_rate = 2.0 * (self.seconds + self.warmup_seconds);
        per_rate * self.rates.len() as f64 * self.modes.len() as f64
    }
}

/// The order of the measured segments: pairs alternate direct-first and Warden-first, so a
/// linear drift (heating, background work, SQLite growing) weighs on both sides equally.
pub fn segment_order(segments: u32) -> Vec<Side> {
    (0..segments)
        .flat_map(|k| {
            if k % 2 == 0 {
                [Side::Direct, Side::Warden]
            } else {
                [Side::Warden, Side::Direct]
            }
        })
        .collect()
}

/// The two targets for one mode.
#[derive(Debug)]
pub struct Loads {
    pub direct: Arc<Load>,
    pub warden: Arc<Load>,
}

impl Loads {
    fn get(&self, side: Side) -> &Arc<Load> {
        match side {
            Side::Direct => &self.direct,
            Side::Warden => &self.warden,
        }
    }
}

/// CPU time the processes used while one side was being measured.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuUse {
    pub warden: Duration,
    pub standin: Duration,
    pub generator: Duration,
    /// The whole machine, these three included.
    pub machine: Duration,
}

impl CpuUse {
    /// CPU used by everything else on the machine (other builds, say), in cores over `wall`.
    pub fn others_cores(&self, wall: Duration) -> f64 {
        let ours = self.warden + self.standin + self.generator;
        let wall = wall.as_secs_f64();
        if wall > 0.0 {
            self.machine.saturating_sub(ours).as_secs_f64() / wall
        } else {
            0.0
        }
    }
}

/// One side at one rate.
#[derive(Debug, Clone)]
pub struct SideResult {
    pub tally: Tally,
    pub cpu: CpuUse,
}

/// Both sides at one rate in one mode.
#[derive(Debug, Clone)]
pub struct RateResult {
    pub mode: Mode,
    pub rate: f64,
    pub direct: SideResult,
    pub warden: SideResult,
    /// Failed requests during the (unrecorded) warmup, both sides.
    pub warmup_errors: u64,
    /// Warden's highest RSS while this rate ran, KiB.
    pub warden_rss_peak_kib: u64,
}

/// The processes whose CPU and memory are watched.
#[derive(Debug, Clone, Copy)]
pub struct Pids {
    pub warden: u32,
    pub standin: u32,
}

/// Runs the rates one after another, keeping the request numbering and per-side counts.
pub struct Runner<'a> {
    runtime: Handle,
    plan: &'a Plan,
    pids: Pids,
    rss: &'a RssSampler,
    /// Requests scheduled so far; end users rotate with it.
    next_index: u64,
    /// Requests scheduled to each side so far, warmup included.
    pub sent_direct: u64,
    pub sent_warden: u64,
}

impl<'a> Runner<'a> {
    pub fn new(runtime: Handle, plan: &'a Plan, pids: Pids, rss: &'a RssSampler) -> Runner<'a> {
        Runner {
            runtime,
            plan,
            pids,
            rss,
            next_index: 1,
            sent_direct: 0,
            sent_warden: 0,
        }
    }

    /// One rate in one mode: warmup on both sides, then the ABBA segments.
    pub async fn rate(
        &mut self,
        mode: Mode,
        rate: f64,
        loads: &Loads,
    ) -> anyhow::Result<RateResult> {
        self.rss.take_window_peak();
        let mut warmup_errors = 0;
        if self.plan.warmup_seconds > 0.0 {
            for side in [Side::Direct, Side::Warden] {
                let segment = self.segment(side, rate, self.plan.warmup_seconds);
                let run = load::run(&self.runtime, loads.get(side), segment).await?;
                warmup_errors += run
                    .outcomes
                    .iter()
                    .filter(|o| matches!(o, Outcome::Failed(_)))
                    .count() as u64;
            }
        }
        let mut direct = SideResult {
            tally: Tally::new()?,
            cpu: CpuUse::default(),
        };
        let mut warden = direct.clone();
        let per_segment = self.plan.seconds / f64::from(self.plan.segments);
        for side in segment_order(self.plan.segments) {
            let result = match side {
                Side::Direct => &mut direct,
                Side::Warden => &mut warden,
            };
            let before = self.cpu_now();
            let segment = self.segment(side, rate, per_segment);
            let run = load::run(&self.runtime, loads.get(side), segment).await?;
            let after = self.cpu_now();
            result.cpu.warden += after.warden.saturating_sub(before.warden);
            result.cpu.standin += after.standin.saturating_sub(before.standin);
            result.cpu.generator += after.generator.saturating_sub(before.generator);
            result.cpu.machine += after.machine.saturating_sub(before.machine);
            result.tally.wall += run.wall;
            for outcome in run.outcomes {
                result.tally.record(outcome);
            }
        }
        Ok(RateResult {
            mode,
            rate,
            direct,
            warden,
            warmup_errors,
            warden_rss_peak_kib: self.rss.take_window_peak(),
        })
    }

    fn segment(&mut self, side: Side, rate: f64, seconds: f64) -> Segment {
        let segment = Segment {
            rate,
            duration: Duration::from_secs_f64(seconds),
            timeout: self.plan.timeout,
            first_index: self.next_index,
        };
        self.next_index += segment.requests();
        match side {
            Side::Direct => self.sent_direct += segment.requests(),
            Side::Warden => self.sent_warden += segment.requests(),
        }
        segment
    }

    fn cpu_now(&self) -> CpuUse {
        CpuUse {
            warden: proc_stats::cpu_time(self.pids.warden).unwrap_or_default(),
            standin: proc_stats::cpu_time(self.pids.standin).unwrap_or_default(),
            generator: proc_stats::own_cpu_time().unwrap_or_default(),
            machine: proc_stats::machine_busy().unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_alternate_abba() {
        use Side::{Direct as D, Warden as W};
        assert_eq!(segment_order(1), vec![D, W]);
        assert_eq!(segment_order(2), vec![D, W, W, D]);
        assert_eq!(segment_order(3), vec![D, W, W, D, D, W]);
    }

    #[test]
    fn the_load_time_bound_counts_both_sides_every_rate_and_mode() {
        let plan = Plan {
            rates: vec![1000.0, 2000.0],
            seconds: 10.0,
            warmup_seconds: 2.0,
            segments: 2,
            timeout: Duration::from_secs(5),
            modes: vec![Mode::Chat, Mode::Stream],
        };
        assert_eq!(plan.load_seconds(), 96.0);
    }
}
