//! The results: a readable table on stdout and the same numbers as JSON.
// This module is the benchmark's output; printing the table to stdout is its job.
#![allow(clippy::print_stdout)]

use crate::load::ClosedRun;
use crate::run::{Mode, RateResult, SideResult};
use crate::tally::{round1, summary, Summary};
use anyhow::Context as _;
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Warden's resident memory at the three moments the issue asks about, KiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rss {
    /// After startup, before any request.
    pub idle: u64,
    /// Highest 100 ms sample during the load.
    pub peak: u64,
    /// One second after the last request.
    pub after: u64,
}

/// The closed-loop ceiling: each target as fast as it answers.
#[derive(Debug)]
pub struct Closed {
    pub clients: usize,
    pub direct: ClosedRun,
    pub warden: ClosedRun,
    /// Warden's CPU time during its closed-loop run.
    pub warden_cpu: Option<Duration>,
}

impl Closed {
    fn cpu_us_per_request(&self) -> Option<f64> {
        self.warden_cpu
            .filter(|_| self.warden.ok > 0)
            .map(|cpu| cpu.as_secs_f64() * 1e6 / self.warden.ok as f64)
    }

    fn to_json(&self) -> Value {
        json!({
            "clients": self.clients,
            "direct_rps": round1(self.direct.per_second()),
            "warden_rps": round1(self.warden.per_second()),
            "direct_failed": self.direct.failed,
            "warden_failed": self.warden.failed,
            "warden_cpu_us_per_request": self.cpu_us_per_request().map(round1),
        })
    }
}

/// Everything one run produced.
#[derive(Debug)]
pub struct Report {
    pub settings: Value,
    pub results: Vec<RateResult>,
    pub closed: Option<Closed>,
    pub rss: Rss,
    pub notes: Vec<String>,
}

impl Report {
    pub fn print(&self) -> anyhow::Result<()> {
        let text = self.render().context("formatting the report")?;
        print!("{text}");
        Ok(())
    }

    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let text = serde_json::to_string_pretty(&self.to_json())?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
    }

    fn render(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        writeln!(out, "\n{}", machine_line())?;
        for mode in [Mode::Chat, Mode::Stream] {
            let results: Vec<&RateResult> =
                self.results.iter().filter(|r| r.mode == mode).collect();
            if results.is_empty() {
                continue;
            }
            let (first, last) = match mode {
                Mode::Chat => ("", "non-streaming chat completions: latency (scheduled send → last byte)"),
                Mode::Stream => (
                    "streaming chat completions: time to first byte (scheduled send → first body bytes)",
                    "streaming chat completions: time to last byte (scheduled send → end of stream)",
                ),
            };
            if mode == Mode::Stream {
                latency_table(&mut out, first, &results, |s| &s.tally.first_byte)?;
            }
            latency_table(&mut out, last, &results, |s| &s.tally.latency)?;
            cost_table(&mut out, mode, &results)?;
        }
        if let Some(closed) = &self.closed {
            writeln!(
                out,
                "\nclosed loop ({} clients): direct {:.0} req/s, warden {:.0} req/s ({} / {} failed), Warden CPU {} µs per request",
                closed.clients,
                closed.direct.per_second(),
                closed.warden.per_second(),
                closed.direct.failed,
                closed.warden.failed,
                closed.cpu_us_per_request().map_or("?".into(), |us| format!("{us:.0}")),
            )?;
        }
        let mib = |kib: u64| kib as f64 / 1024.0;
        writeln!(
            out,
            "\nWarden RSS: idle {:.1} MiB, peak under load {:.1} MiB, after load {:.1} MiB",
            mib(self.rss.idle),
            mib(self.rss.peak),
            mib(self.rss.after)
        )?;
        for r in &self.results {
            writeln!(
                out,
                "  peak at {:>5} req/s ({}): {:.1} MiB",
                r.rate,
                r.mode.name(),
                mib(r.warden_rss_peak_kib)
            )?;
        }
        for note in &self.notes {
            writeln!(out, "note: {note}")?;
        }
        Ok(out)
    }

    pub fn to_json(&self) -> Value {
        let results: Vec<Value> = self
            .results
            .iter()
            .map(|r| {
                let (d, w) = (
                    summary(&r.direct.tally.latency),
                    summary(&r.warden.tally.latency),
                );
                let (df, wf) = (
                    summary(&r.direct.tally.first_byte),
                    summary(&r.warden.tally.first_byte),
                );
                json!({
                    "mode": r.mode.name(),
                    "rate_rps": r.rate,
                    "direct": side_json(&r.direct),
                    "warden": side_json(&r.warden),
                    "added_latency_us": added(d, w),
                    "ratio_latency": ratio(d, w),
                    "added_first_byte_us": added(df, wf),
                    "warmup_errors": r.warmup_errors,
                    "warden_rss_peak_kib": r.warden_rss_peak_kib,
                })
            })
            .collect();
        json!({
            "generated_by": "warden-bench",
            "unix_time": SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
            "machine": machine_json(),
            "settings": self.settings,
            "results": results,
            "closed_loop": self.closed.as_ref().map(Closed::to_json),
            "warden_rss_kib": {"idle": self.rss.idle, "peak": self.rss.peak, "after": self.rss.after},
            "notes": self.notes,
        })
    }
}

fn latency_table<'a>(
    out: &mut String,
    title: &str,
    results: &[&'a RateResult],
    metric: impl Fn(&'a SideResult) -> &'a Histogram<u64>,
) -> std::fmt::Result {
    writeln!(out, "\n{title}, µs")?;
    writeln!(
        out,
        "{:>6}  {:<7} {:>7} {:>5} {:>8} {:>9} {:>9} {:>9} {:>9}",
        "rate", "target", "ok", "err", "rps", "p50", "p99", "p99.9", "max"
    )?;
    for r in results {
        let mut sides = Vec::new();
        for (name, side) in [("direct", &r.direct), ("warden", &r.warden)] {
            let s = summary(metric(side));
            writeln!(
                out,
                "{:>6}  {:<7} {:>7} {:>5} {:>8.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
                r.rate,
                name,
                side.tally.ok(),
                side.tally.errors(),
                side.tally.achieved_rate(),
                s.p50,
                s.p99,
                s.p999,
                s.max
            )?;
            sides.push(s);
        }
        if let [d, w] = sides[..] {
            writeln!(
                out,
                "{:>6}  {:<7} {:>31} {:>+9.1} {:>+9.1} {:>+9.1}   ratio ×{:.2} ×{:.2} ×{:.2}",
                r.rate,
                "added",
                "",
                w.p50 - d.p50,
                w.p99 - d.p99,
                w.p999 - d.p999,
                div(w.p50, d.p50),
                div(w.p99, d.p99),
                div(w.p999, d.p999)
            )?;
        }
    }
    Ok(())
}

/// Where the time goes: service time from the actual send, the wait before sending, the
/// CPU each process spent per request while that side was measured, and how busy the rest of
/// the machine was meanwhile.
fn cost_table(out: &mut String, mode: Mode, results: &[&RateResult]) -> std::fmt::Result {
    writeln!(
        out,
        "\n{}: service time (actual send → last byte), queueing before send, CPU per scheduled request, µs",
        mode.name()
    )?;
    writeln!(
        out,
        "{:>6}  {:<7} {:>9} {:>9} {:>10} {:>10} {:>11} {:>12} {:>10} {:>12}",
        "rate",
        "target",
        "svc p50",
        "svc p99",
        "queued p50",
        "queued p99",
        "warden cpu",
        "standin cpu",
        "bench cpu",
        "other cores"
    )?;
    for r in results {
        for (name, side) in [("direct", &r.direct), ("warden", &r.warden)] {
            let svc = summary(&side.tally.service);
            let queued = summary(&side.tally.queued);
            let per_request = |d: Duration| per_request_us(d, side.tally.scheduled);
            writeln!(
                out,
                "{:>6}  {:<7} {:>9.1} {:>9.1} {:>10.1} {:>10.1} {:>11.1} {:>12.1} {:>10.1} {:>12.2}",
                r.rate,
                name,
                svc.p50,
                svc.p99,
                queued.p50,
                queued.p99,
                per_request(side.cpu.warden),
                per_request(side.cpu.standin),
                per_request(side.cpu.generator),
                side.cpu.others_cores(side.tally.wall)
            )?;
        }
    }
    Ok(())
}

fn side_json(side: &SideResult) -> Value {
    let mut value = side.tally.to_json();
    let requests = side.tally.scheduled;
    value["cpu_us_per_request"] = json!({
        "warden": round1(per_request_us(side.cpu.warden, requests)),
        "standin": round1(per_request_us(side.cpu.standin, requests)),
        "generator": round1(per_request_us(side.cpu.generator, requests)),
    });
    value["other_processes_cores"] =
        json!((side.cpu.others_cores(side.tally.wall) * 100.0).round() / 100.0);
    value
}

fn added(direct: Summary, warden: Summary) -> Value {
    json!({
        "p50": round1(warden.p50 - direct.p50),
        "p99": round1(warden.p99 - direct.p99),
        "p99_9": round1(warden.p999 - direct.p999),
    })
}

fn ratio(direct: Summary, warden: Summary) -> Value {
    let r = |w: f64, d: f64| (div(w, d) * 100.0).round() / 100.0;
    json!({
        "p50": r(warden.p50, direct.p50),
        "p99": r(warden.p99, direct.p99),
        "p99_9": r(warden.p999, direct.p999),
    })
}

fn div(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

fn per_request_us(cpu: Duration, requests: u64) -> f64 {
    if requests == 0 {
        0.0
    } else {
        cpu.as_secs_f64() * 1e6 / requests as f64
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn cpus() -> usize {
    std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(1)
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

fn machine_line() -> String {
    format!("machine: {} × {} (Linux {})", cpus(), cpu_model(), kernel())
}

fn machine_json() -> Value {
    json!({"cpus": cpus(), "cpu_model": cpu_model(), "kernel": kernel()})
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::run::CpuUse;
    use crate::tally::{Outcome, Tally, Timings};

    fn side(micros: u64) -> SideResult {
        let mut tally = Tally::new().unwrap();
        for _ in 0..100 {
            let d = Duration::from_micros(micros);
            tally.record(Outcome::Ok(Timings {
                latency: d,
                first_byte: d,
                service: d,
                queued: Duration::ZERO,
            }));
        }
        tally.wall = Duration::from_secs(1);
        SideResult {
            tally,
            cpu: CpuUse {
                warden: Duration::from_millis(10),
                ..CpuUse::default()
            },
        }
    }

    #[test]
    fn added_and_ratio_compare_warden_to_direct() {
        let report = Report {
            settings: json!({}),
            results: vec![RateResult {
                mode: Mode::Chat,
                rate: 1000.0,
                direct: side(200),
                warden: side(300),
                warmup_errors: 0,
                warden_rss_peak_kib: 20_000,
            }],
            rss: Rss::default(),
            closed: Some(Closed {
                clients: 4,
                direct: ClosedRun {
                    ok: 2000,
                    failed: 0,
                    wall: Duration::from_secs(2),
                },
                warden: ClosedRun {
                    ok: 1000,
                    failed: 1,
                    wall: Duration::from_secs(2),
                },
                warden_cpu: Some(Duration::from_millis(500)),
            }),
            notes: vec![],
        };
        let json = report.to_json();
        let result = &json["results"][0];
        assert_eq!(result["added_latency_us"]["p99"], 100.0);
        assert_eq!(result["ratio_latency"]["p50"], 1.5);
        assert_eq!(result["warden"]["cpu_us_per_request"]["warden"], 100.0);
        let text = report.render().unwrap();
        assert!(text.contains("added"), "{text}");
        assert!(text.contains("+100.0"), "{text}");
        // 1,000 answers in 2 s on 0.5 s of CPU: 500 req/s at 500 µs each.
        assert_eq!(json["closed_loop"]["warden_rps"], 500.0);
        assert_eq!(json["closed_loop"]["warden_cpu_us_per_request"], 500.0);
        assert!(text.contains("warden 500 req/s (0 / 1 failed)"), "{text}");
    }
}
