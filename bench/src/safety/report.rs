//! The content-safety results: readable tables on stdout and the same numbers as JSON.
// This module is the benchmark's output; printing the tables to stdout is its job.
#![allow(clippy::print_stdout)]

use anyhow::Context as _;
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use super::conversation::{Conversation, Sent};
use super::streams::{Sample, Shape, TargetRun};

#[derive(Debug)]
pub struct SafetyReport {
    pub settings: Value,
    pub conversation: Conversation,
    pub streams: Vec<TargetRun>,
    pub shape: Shape,
    pub notes: Vec<String>,
}

impl SafetyReport {
    pub fn print(&self) -> anyhow::Result<()> {
        print!("{}", self.render().context("formatting the report")?);
        Ok(())
    }

    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let text = serde_json::to_string_pretty(&self.to_json())?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
    }

    /// The run as a check: fails if a turn re-sent moderated text (or skipped the new
    /// message), or if any stream failed.
    pub fn check(&self) -> anyhow::Result<()> {
        let violations = &self.conversation.violations;
        anyhow::ensure!(
            violations.is_empty(),
            "{} violation(s) of \"moderate only what is new\"; first: {}",
            violations.len(),
            violations.first().map_or("", String::as_str)
        );
        let failed: usize = self.streams.iter().map(|r| r.errors.len()).sum();
        anyhow::ensure!(failed == 0, "{failed} stream(s) failed");
        Ok(())
    }

    fn render(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        let c = &self.conversation;
        writeln!(
            out,
            "\nconversation through Warden: sent to the Moderation endpoint per turn (naive: the whole request every turn)"
        )?;
        writeln!(
            out,
            "{:>4} | {:>11} {:>6} {:>7} | {:>12} {:>7} | {:>11} {:>7}",
            "turn",
            "input calls",
            "items",
            "bytes",
            "output calls",
            "bytes",
            "naive items",
            "bytes"
        )?;
        for t in &c.turns {
            writeln!(
                out,
                "{:>4} | {:>11} {:>6} {:>7} | {:>12} {:>7} | {:>11} {:>7}",
                t.number,
                t.input.calls,
                t.input.inputs,
                t.input.bytes,
                t.output.calls,
                t.output.bytes,
                t.naive.inputs,
                t.naive.bytes
            )?;
        }
        let (input, output, naive) = self.totals();
        writeln!(
            out,
            "total | {:>11} {:>6} {:>7} | {:>12} {:>7} | {:>11} {:>7}",
            input.calls,
            input.inputs,
            input.bytes,
            output.calls,
            output.bytes,
            naive.inputs,
            naive.bytes
        )?;
        writeln!(
            out,
            "input bytes Warden / naive: {:.3} ({} / {}); input items {} / {}",
            ratio(input.bytes, naive.bytes),
            input.bytes,
            naive.bytes,
            input.inputs,
            naive.inputs
        )?;
        for violation in &c.violations {
            writeln!(out, "VIOLATION: {violation}")?;
        }
        if !self.streams.is_empty() {
            self.render_streams(&mut out)?;
        }
        for note in &self.notes {
            writeln!(out, "note: {note}")?;
        }
        Ok(out)
    }

    fn render_streams(&self, out: &mut String) -> Result<(), std::fmt::Error> {
        let s = self.shape;
        writeln!(
            out,
            "\nstreams: {} chunks of {} chars, {} ms apart; ms from send (added = minus direct)",
            s.chunks, s.chunk_chars, s.chunk_delay_ms
        )?;
        writeln!(
            out,
            "{:<10} {:>4} {:>4} | {:>9} {:>9} {:>9} {:>9} | {:>9} {:>9} {:>9} {:>9}",
            "target",
            "n",
            "err",
            "TTFT p50",
            "p99",
            "added p50",
            "p99",
            "TTLT p50",
            "p99",
            "added p50",
            "p99"
        )?;
        let direct = self.streams.first().map(Timing::of);
        for run in &self.streams {
            let t = Timing::of(run);
            let base = direct.unwrap_or(t);
            writeln!(
                out,
                "{:<10} {:>4} {:>4} | {:>9.1} {:>9.1} {:>+9.1} {:>+9.1} | {:>9.1} {:>9.1} {:>+9.1} {:>+9.1}",
                run.name,
                run.samples.len(),
                run.errors.len(),
                t.first[0],
                t.first[1],
                t.first[0] - base.first[0],
                t.first[1] - base.first[1],
                t.last[0],
                t.last[1],
                t.last[0] - base.last[0],
                t.last[1] - base.last[1]
            )?;
        }
        writeln!(
            out,
            "\nrelease granularity (chars): content deltas, and bursts (deltas arriving < 5 ms apart)"
        )?;
        for run in &self.streams {
            let g = Granularity::of(&run.samples);
            writeln!(
                out,
                "{:<10} deltas p50 {} max {} | bursts p50 {} p90 {} max {}, {:.1} per stream",
                run.name,
                g.deltas[0],
                g.deltas[2],
                g.bursts[0],
                g.bursts[1],
                g.bursts[2],
                g.bursts_per_stream
            )?;
            if let Some(error) = run.errors.first() {
                writeln!(out, "  first error: {error}")?;
            }
        }
        Ok(())
    }

    fn totals(&self) -> (Sent, Sent, Sent) {
        let c = &self.conversation;
        (
            c.total(|t| t.input),
            c.total(|t| t.output),
            c.total(|t| t.naive),
        )
    }

    fn to_json(&self) -> Value {
        let sent = |s: Sent| json!({"calls": s.calls, "inputs": s.inputs, "bytes": s.bytes});
        let (input, output, naive) = self.totals();
        let turns: Vec<Value> = self
            .conversation
            .turns
            .iter()
            .map(|t| {
                json!({"turn": t.number, "input": sent(t.input), "output": sent(t.output), "naive": sent(t.naive)})
            })
            .collect();
        let streams: Vec<Value> = self
            .streams
            .iter()
            .map(|run| {
                let t = Timing::of(run);
                let g = Granularity::of(&run.samples);
                json!({
                    "target": run.name,
                    "requests": run.samples.len(),
                    "errors": run.errors,
                    "first_token_ms": {"p50": t.first[0], "p99": t.first[1]},
                    "last_token_ms": {"p50": t.last[0], "p99": t.last[1]},
                    "delta_chars": {"p50": g.deltas[0], "p90": g.deltas[1], "max": g.deltas[2]},
                    "burst_chars": {"p50": g.bursts[0], "p90": g.bursts[1], "max": g.bursts[2]},
                    "bursts_per_stream": g.bursts_per_stream,
                })
            })
            .collect();
        json!({
            "settings": self.settings,
            "conversation": {
                "turns": turns,
                "total": {"input": sent(input), "output": sent(output), "naive": sent(naive)},
                "input_bytes_ratio": ratio(input.bytes, naive.bytes),
                "violations": self.conversation.violations,
            },
            "streams": {
                "shape": {"chunks": self.shape.chunks, "chunk_chars": self.shape.chunk_chars, "chunk_delay_ms": self.shape.chunk_delay_ms},
                "targets": streams,
            },
            "notes": self.notes,
        })
    }
}

fn ratio(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// p50 and p99 of time to first and to last token, ms.
#[derive(Debug, Clone, Copy)]
struct Timing {
    first: [f64; 2],
    last: [f64; 2],
}

impl Timing {
    fn of(run: &TargetRun) -> Timing {
        let ms = |pick: fn(&Sample) -> Duration| {
            let values: Vec<f64> = run
                .samples
                .iter()
                .map(|s| pick(s).as_secs_f64() * 1e3)
                .collect();
            [percentile(&values, 50.0), percentile(&values, 99.0)]
        };
        Timing {
            first: ms(|s| s.first_token),
            last: ms(|s| s.last_token),
        }
    }
}

/// p50, p90 and max of delta and burst sizes over all streams of a target.
struct Granularity {
    deltas: [f64; 3],
    bursts: [f64; 3],
    bursts_per_stream: f64,
}

impl Granularity {
    fn of(samples: &[Sample]) -> Granularity {
        let sizes = |pick: fn(&Sample) -> &Vec<usize>| {
            let values: Vec<f64> = samples
                .iter()
                .flat_map(|s| pick(s).iter().map(|&c| c as f64))
                .collect();
            [
                percentile(&values, 50.0),
                percentile(&values, 90.0),
                percentile(&values, 100.0),
            ]
        };
        let bursts: usize = samples.iter().map(|s| s.bursts.len()).sum();
        Granularity {
            deltas: sizes(|s| &s.deltas),
            bursts: sizes(|s| &s.bursts),
            bursts_per_stream: ratio(bursts, samples.len()),
        }
    }
}

/// Nearest-rank percentile (0 for no values): with 100 samples, p99 is the 99th smallest.
fn percentile(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted
        .get(rank.saturating_sub(1).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 50.0), 50.0);
        assert_eq!(percentile(&values, 99.0), 99.0);
        assert_eq!(percentile(&values, 100.0), 100.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }
}
