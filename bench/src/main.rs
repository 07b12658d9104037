//! `warden-bench`: latency straight to the stand-in upstream vs through Warden, in one run.
//!
//! Starts both release binaries on loopback, drives them with an open-loop generator at fixed
//! rates, and reports p50/p99/p99.9, the overhead Warden adds, and Warden's RSS.
//! `warden-bench moderation` measures content safety instead (`safety/`).

mod config;
mod load;
mod pool;
mod proc_stats;
mod procs;
mod realtime;
mod report;
mod routes;
mod run;
mod safety;
mod session;
mod tally;
mod workload;

use anyhow::Context as _;
use clap::Parser;
use serde_json::json;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::Pipeline;
use crate::run::{Mode, Plan};

/// Open-loop latency benchmark: the stand-in upstream directly vs through Warden.
#[derive(Debug, Parser)]
#[command(name = "warden-bench", args_conflicts_with_subcommands = true)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
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
    /// Segments per target per rate, run direct/warden then warden/direct alternately
    /// (short segments spread a burst of unrelated load over both targets).
    #[arg(long, default_value_t = 5)]
    segments: u32,
    /// Worker threads of the load generator's runtime (leave the cores to the servers).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// A request unanswered this long after its scheduled time is an error.
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
    /// Which Warden stages are on.
    #[arg(long, value_enum, default_value_t = Pipeline::Core)]
    pipeline: Pipeline,
    /// Whether Warden stores its events (`[events] store`); `false` measures the event
    /// log's cost on the hot path (events still go to the log line and metrics).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    event_store: bool,
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
    /// Run Warden alone on this CPU (taskset). Run the harness itself on the others, e.g.
    /// `taskset -c 1 warden-bench --warden-cpu 0`, so the stand-in and the generator
    /// never share Warden's core.
    #[arg(long)]
    warden_cpu: Option<usize>,
    /// After the open-loop rates, this many seconds per target of closed-loop load
    /// (`--connections` clients sending back to back): the throughput ceiling. 0 skips it.
    #[arg(long, default_value_t = 0.0)]
    closed_loop_seconds: f64,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Content safety: what a multi-turn conversation sends to the Moderation endpoint
    /// (against re-moderating it whole every turn), and the time to first and last token that
    /// output moderation adds to streams. Exits non-zero if a turn re-sent moderated text.
    Moderation(ModerationArgs),
    /// The REST routes (issue 16): a large upload streamed through `uploads` parts
    /// (bytes/s vs direct, Warden's peak RSS) and a batch file checked line by line
    /// (lines/s, Moderation calls made).
    Routes(RoutesArgs),
    /// Realtime sessions: time to first delta and to `response.done`, straight to the
    /// stand-in vs through Warden (relay only, and with output moderation), events/s,
    /// and Warden's RSS per open session.
    Realtime(realtime::Args),
}

#[derive(Debug, clap::Args)]
struct RoutesArgs {
    /// MiB sent through `uploads/{id}/parts`.
    #[arg(long, default_value_t = 500)]
    upload_mib: u64,
    /// MiB per part (OpenAI allows up to 64).
    #[arg(long, default_value_t = 50)]
    part_mib: u64,
    /// Lines of the batch file checked before upload.
    #[arg(long, default_value_t = 50_000)]
    batch_lines: usize,
    /// Where to write the JSON results.
    #[arg(long, default_value = "bench/results/routes.json")]
    out: PathBuf,
    /// Directory holding the `warden` and `standin` binaries [default: this executable's].
    #[arg(long)]
    bin_dir: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct ModerationArgs {
    /// Turns of the conversation (each resends the whole history plus one new message).
    #[arg(long, default_value_t = 20)]
    turns: usize,
    /// Streamed requests per target (direct, relay Warden, moderating Warden); 0 skips them.
    #[arg(long, default_value_t = 100)]
    streams: usize,
    /// Streams in flight at once per target (each round runs one target at a time).
    #[arg(long, default_value_t = 5)]
    parallel: usize,
    /// Content chunks per streamed answer.
    #[arg(long, default_value_t = 50)]
    chunks: usize,
    /// Characters per content chunk.
    #[arg(long, default_value_t = 24)]
    chunk_chars: usize,
    /// The stand-in's pause between chunks, ms.
    #[arg(long, default_value_t = 20)]
    chunk_delay_ms: u64,
    /// Where to write the JSON results.
    #[arg(long, default_value = "bench/results/moderation.json")]
    out: PathBuf,
    /// Directory holding the `warden` and `standin` release binaries
    /// [default: the directory of this executable, i.e. target/release].
    #[arg(long)]
    bin_dir: Option<PathBuf>,
}

impl ModerationArgs {
    fn options(&self) -> anyhow::Result<safety::Options> {
        anyhow::ensure!(
            (1..=200).contains(&self.turns),
            "--turns must be in 1..=200"
        );
        anyhow::ensure!(self.streams <= 10_000, "--streams must be at most 10000");
        anyhow::ensure!(
            (1..=64).contains(&self.parallel),
            "--parallel must be in 1..=64"
        );
        anyhow::ensure!(
            (1..=1000).contains(&self.chunks),
            "--chunks must be in 1..=1000"
        );
        anyhow::ensure!(
            (1..=200).contains(&self.chunk_chars),
            "--chunk-chars must be in 1..=200"
        );
        anyhow::ensure!(
            self.chunk_delay_ms <= 1000,
            "--chunk-delay-ms must be at most 1000"
        );
        let bin_dir = bin_dir(self.bin_dir.as_ref())?;
        let settings = json!({
            "bin_dir": bin_dir.display().to_string(),
            "pipeline": "full (every stage at its defaults, limits raised); relay: the same with [safety.moderation.output] enabled = false",
            "turns": self.turns,
            "streams_per_target": self.streams,
            "parallel": self.parallel,
            "chunks": self.chunks,
            "chunk_chars": self.chunk_chars,
            "chunk_delay_ms": self.chunk_delay_ms,
        });
        Ok(safety::Options {
            bin_dir,
            turns: self.turns,
            streams: self.streams,
            parallel: self.parallel,
            shape: safety::Shape {
                chunks: self.chunks,
                chunk_chars: self.chunk_chars,
                chunk_delay_ms: self.chunk_delay_ms,
            },
            settings,
        })
    }
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
        anyhow::ensure!(
            (0.1..=600.0).contains(&self.seconds),
            "--seconds must be in 0.1..=600"
        );
        anyhow::ensure!(
            (0.0..=120.0).contains(&self.warmup_seconds),
            "--warmup-seconds must be in 0..=120"
        );
        anyhow::ensure!(
            (1..=1024).contains(&self.connections),
            "--connections must be in 1..=1024"
        );
        anyhow::ensure!(
            (1..=20).contains(&self.segments),
            "--segments must be in 1..=20"
        );
        anyhow::ensure!(
            (1..=64).contains(&self.threads),
            "--threads must be in 1..=64"
        );
        anyhow::ensure!(
            (0.0..=600.0).contains(&self.closed_loop_seconds),
            "--closed-loop-seconds must be in 0..=600"
        );
        anyhow::ensure!(
            (1..=60_000).contains(&self.timeout_ms),
            "--timeout-ms must be in 1..=60000"
        );
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
        bin_dir(self.bin_dir.as_ref())
    }

    fn settings_json(&self, plan: &Plan, bin_dir: &std::path::Path) -> serde_json::Value {
        let built = |name: &str| {
            std::fs::metadata(bin_dir.join(name))
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs())
        };
        json!({
            "bin_dir": bin_dir.display().to_string(),
            "binaries_modified_unix": {"warden": built("warden"), "standin": built("standin")},
            "rates_rps": plan.rates,
            "seconds_per_target": plan.seconds,
            "warmup_seconds_per_target": plan.warmup_seconds,
            "segments": plan.segments,
            "segment_order": "ABBA: direct,warden then warden,direct, alternating",
            "connections_per_target": self.connections,
            "generator_threads": self.threads,
            "timeout_ms": self.timeout_ms,
            "pipeline": self.pipeline.name(),
            "pipeline_stages": self.pipeline.describe(),
            "event_store": self.event_store,
            "warden_cpu": self.warden_cpu,
            "closed_loop_seconds": self.closed_loop_seconds,
            "modes": plan.modes.iter().map(|m| m.name()).collect::<Vec<_>>(),
            "workload": "POST /v1/chat/completions, ~2 KB body, gpt-4o-mini; warden: virtual key, X-Warden-User over 1000 users, end_user required, safety_identifier on",
        })
    }
}

/// `--bin-dir`, or the directory of this executable.
fn bin_dir(given: Option<&PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(dir) = given {
        return Ok(dir.clone());
    }
    let exe = std::env::current_exe().context("locating this executable")?;
    exe.parent()
        .map(PathBuf::from)
        .context("this executable has no parent directory")
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(Command::Moderation(moderation)) = &args.command {
        return run_moderation(moderation);
    }
    if let Some(Command::Routes(routes)) = &args.command {
        anyhow::ensure!(
            (1..=64).contains(&routes.part_mib) && routes.upload_mib >= 1,
            "--part-mib must be in 1..=64 and --upload-mib at least 1"
        );
        anyhow::ensure!(routes.batch_lines >= 1, "--batch-lines must be at least 1");
        let report = routes::run(&routes::Options {
            bin_dir: bin_dir(routes.bin_dir.as_ref())?,
            upload_mib: routes.upload_mib,
            part_mib: routes.part_mib,
            batch_lines: routes.batch_lines,
        })?;
        let text = serde_json::to_string_pretty(&report)?;
        if let Some(dir) = routes.out.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&routes.out, &text)?;
        eprintln!("{text}");
        return Ok(());
    }
    if let Some(Command::Realtime(realtime)) = &args.command {
        return realtime::run(realtime, bin_dir(realtime.bin_dir.as_ref())?);
    }
    let plan = args.plan()?;
    let bin_dir = args.bin_dir()?;
    let settings = args.settings_json(&plan, &bin_dir);
    let report = session::run(&session::Options {
        plan,
        bin_dir,
        connections: args.connections,
        threads: args.threads,
        pipeline: args.pipeline,
        event_store: args.event_store,
        warden_cpu: args.warden_cpu,
        closed_seconds: args.closed_loop_seconds,
        settings,
    })?;
    report.print()?;
    report.write_json(&args.out)?;
    eprintln!("warden-bench: results written to {}", args.out.display());
    Ok(())
}

fn run_moderation(args: &ModerationArgs) -> anyhow::Result<()> {
    let report = safety::run(&args.options()?)?;
    report.print()?;
    report.write_json(&args.out)?;
    eprintln!("warden-bench: results written to {}", args.out.display());
    report.check()
}
