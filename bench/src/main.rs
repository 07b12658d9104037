//! `warden-bench`: latency straight to the stand-in upstream vs through Warden, in one run.
//!
//! Starts both release binaries on loopback, drives them with an open-loop generator at fixed
//! rates, and reports p50/p99/p99.9, the overhead Warden adds, and Warden's RSS.

mod load;
mod pool;
mod proc_stats;
mod procs;
mod report;
mod run;
mod tally;
mod workload;

use anyhow::Context as _;
use clap::Parser;
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::load::Load;
use crate::pool::Pool;
use crate::report::{Report, Rss};
use crate::run::{Loads, Mode, Pids, Plan, Runner};
use crate::workload::{Side, Target};

/// Let the servers settle before the idle RSS reading and after the load.
const SETTLE: Duration = Duration::from_secs(1);

/// Open-loop latency benchmark: the stand-in upstream directly vs through Warden.
#[derive(Debug, Parser)]
#[command(name = "warden-bench")]
struct Args {
    /// Request rates to measure, requests per second, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1000,2000")]
    rates: Vec<f64>,
    /// Measured seconds per target per rate (split over --segments, ABBA order).
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Unrecorded seconds per target per rate before measuring.
    #[arg(long, default_value_t = 2.0)]
    warmup_seconds: f64,
    /// Keep-alive connections per target; a request finding all busy waits (and that counts).
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Segments per target per rate, run direct/warden then warden/direct alternately.
    #[arg(long, default_value_t = 2)]
    segments: u32,
    /// Worker threads of the load generator's runtime (leave the cores to the servers).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// A request unanswered this long after its scheduled time is an error.
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
    /// Also measure streaming chat (time to first and to last byte).
    #[arg(long)]
    stream: bool,
    /// Only streaming chat (implies --stream).
    #[arg(long)]
    stream_only: bool,
    /// Where to write the JSON results.
    #[arg(long, default_value = "bench/results/latest.json")]
    out: PathBuf,
    /// Directory holding the `warden` and `standin` release binaries
    /// [default: the directory of this executable, i.e. target/release].
    #[arg(long)]
    bin_dir: Option<PathBuf>,
}

impl Args {
    fn plan(&self) -> anyhow::Result<Plan> {
        anyhow::ensure!(!self.rates.is_empty(), "--rates needs at least one rate");
        for rate in &self.rates {
            anyhow::ensure!(
                rate.is_finite() && (1.0..=50_000.0).contains(rate),
                "--rates: {rate} is outside 1..=50000"
            );
        }
        anyhow::ensure!((0.1..=600.0).contains(&self.seconds), "--seconds must be in 0.1..=600");
        anyhow::ensure!(
            (0.0..=120.0).contains(&self.warmup_seconds),
            "--warmup-seconds must be in 0..=120"
        );
        anyhow::ensure!((1..=1024).contains(&self.connections), "--connections must be in 1..=1024");
        anyhow::ensure!((1..=20).contains(&self.segments), "--segments must be in 1..=20");
        anyhow::ensure!((1..=64).contains(&self.threads), "--threads must be in 1..=64");
        anyhow::ensure!((1..=60_000).contains(&self.timeout_ms), "--timeout-ms must be in 1..=60000");
        let modes = match (self.stream, self.stream_only) {
            (_, true) => vec![Mode::Stream],
            (true, false) => vec![Mode::Chat, Mode::Stream],
            (false, false) => vec![Mode::Chat],
        };
        Ok(Plan {
            rates: self.rates.clone(),
            seconds: self.seconds,
            warmup_seconds: self.warmup_seconds,
            segments: self.segments,
            timeout: Duration::from_millis(self.timeout_ms),
            modes,
        })
    }

    fn bin_dir(&self) -> anyhow::Result<PathBuf> {
        if let Some(dir) = &self.bin_dir {
            return Ok(dir.clone());
        }
        let exe = std::env::current_exe().context("locating this executable")?;
        exe.parent()
            .map(PathBuf::from)
            .context("this executable has no parent directory")
    }

    fn settings_json(&self, plan: &Plan) -> serde_json::Value {
        json!({
            "rates_rps": plan.rates,
            "seconds_per_target": plan.seconds,
            "warmup_seconds_per_target": plan.warmup_seconds,
            "segments": plan.segments,
            "segment_order": "ABBA: direct,warden then warden,direct, alternating",
            "connections_per_target": self.connections,
            "generator_threads": self.threads,
            "timeout_ms": self.timeout_ms,
            "modes": plan.modes.iter().map(|m| m.name()).collect::<Vec<_>>(),
            "workload": "POST /v1/chat/completions, ~2 KB body, gpt-4o-mini; warden: virtual key, X-Warden-User over 1000 users, end_user required, safety_identifier on",
        })
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let plan = args.plan()?;
    let bin_dir = args.bin_dir()?;

    // Declared first so it is dropped last, after both servers are killed.
    let scratch = procs::Scratch::create()?;
    let (standin, standin_addr) = procs::start_standin(&bin_dir, &scratch)?;
    let (mut warden, warden_addr) = procs::start_warden(&bin_dir, &scratch, standin_addr)?;
    eprintln!(
        "warden-bench: stand-in on {standin_addr}, warden on {warden_addr}; about {:.0} s of load",
        plan.load_seconds()
    );
    std::thread::sleep(SETTLE);
    let idle = proc_stats::rss_kib(warden.pid()).context("reading Warden's idle RSS")?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .thread_name("bench-load")
        .enable_all()
        .build()?;
    let sampler = proc_stats::RssSampler::start(warden.pid())?;
    let pids = Pids {
        warden: warden.pid(),
        standin: standin.pid(),
    };
    let results = runtime.block_on(async {
        let direct_target = Arc::new(Target::new(Side::Direct, standin_addr)?);
        let warden_target = Arc::new(Target::new(Side::Warden, warden_addr)?);
        let direct_pool = Pool::open(standin_addr, args.connections).await?;
        let warden_pool = Pool::open(warden_addr, args.connections).await?;
        let mut runner = Runner::new(runtime.handle().clone(), &plan, pids, &sampler);
        let mut results = Vec::new();
        for &mode in &plan.modes {
            let body = workload::chat_body(mode == Mode::Stream);
            let loads = Loads {
                direct: Arc::new(Load {
                    target: Arc::clone(&direct_target),
                    pool: Arc::clone(&direct_pool),
                    body: body.clone(),
                }),
                warden: Arc::new(Load {
                    target: Arc::clone(&warden_target),
                    pool: Arc::clone(&warden_pool),
                    body,
                }),
            };
            load::probe(&loads.direct, mode == Mode::Stream).await?;
            load::probe(&loads.warden, mode == Mode::Stream).await?;
            for &rate in &plan.rates {
                eprintln!("warden-bench: {} at {rate} req/s", mode.name());
                results.push(runner.rate(mode, rate, &loads).await?);
            }
        }
        let reconnects = (direct_pool.reconnects(), warden_pool.reconnects());
        anyhow::Ok((results, reconnects))
    })?;
    let (results, (direct_reconnects, warden_reconnects)) = results;
    std::thread::sleep(SETTLE);
    let rss = Rss {
        idle,
        peak: sampler.peak(),
        after: proc_stats::rss_kib(warden.pid()).unwrap_or(0),
    };
    drop(sampler);

    let mut notes = Vec::new();
    if let Some(status) = warden.exited() {
        notes.push(format!("warden exited during the run: {status}"));
    }
    if direct_reconnects + warden_reconnects > 0 {
        notes.push(format!(
            "connections replaced during the run: direct {direct_reconnects}, warden {warden_reconnects}"
        ));
    }
    for server in [&standin, &warden] {
        let lines = server.stderr_lines();
        if lines > 0 {
            notes.push(format!(
                "{} wrote {lines} line(s) to stderr; last: {}",
                server.name,
                server.stderr_tail(3).join(" | ")
            ));
        }
    }
    let warmup_errors: u64 = results.iter().map(|r| r.warmup_errors).sum();
    if warmup_errors > 0 {
        notes.push(format!("{warmup_errors} request(s) failed during warmup"));
    }
    let report = Report {
        settings: args.settings_json(&plan),
        results,
        rss,
        notes,
    };
    report.print()?;
    report.write_json(&args.out)?;
    eprintln!("warden-bench: results written to {}", args.out.display());
    Ok(())
}
