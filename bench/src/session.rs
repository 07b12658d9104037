//! One benchmark session: start the servers, drive every mode and rate, and gather the report
//! (results, Warden's RSS, and notes on anything that looked wrong).

use anyhow::Context as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Pipeline;
use crate::load::{self, Load};
use crate::pool::{self, Pool};
use crate::proc_stats::{self, RssSampler};
use crate::procs::{self, Scratch, Server};
use crate::report::{Closed, Report, Rss};
use crate::run::{Loads, Mode, Pids, Plan, RateResult, Runner};
use crate::workload::{self, Side, Target};

/// Let the servers settle before the idle RSS reading and after the load.
const SETTLE: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct Options {
    pub plan: Plan,
    pub bin_dir: PathBuf,
    pub connections: usize,
    pub threads: usize,
    pub pipeline: Pipeline,
    /// `[events] store` of the Warden under test.
    pub event_store: bool,
    /// Warden alone on this CPU (`--warden-cpu`).
    pub warden_cpu: Option<usize>,
    /// Seconds of closed-loop load per target after the open-loop rates; 0 skips it.
    pub closed_seconds: f64,
    /// Echoed into the JSON report.
    pub settings: serde_json::Value,
}

/// What driving the load produced, beside the per-rate results.
struct Driven {
    results: Vec<RateResult>,
    closed: Option<Closed>,
    reconnects: (u64, u64),
    /// Requests sent directly and through Warden, warmup and probes included.
    sent: (u64, u64),
    /// What the stand-in counted in total.
    upstream_received: anyhow::Result<u64>,
}

pub fn run(options: &Options) -> anyhow::Result<Report> {
    procs::check_binaries(&options.bin_dir)?;
    // Declared first so it is dropped last, after both servers are killed.
    let scratch = Scratch::create()?;
    let (standin, standin_addr) = procs::start_standin(&options.bin_dir, &scratch)?;
    let (mut warden, warden_addr) = procs::start_warden(
        &options.bin_dir,
        &scratch,
        standin_addr,
        options.pipeline,
        options.event_store,
        options.warden_cpu,
    )?;
    eprintln!(
        "warden-bench: stand-in on {standin_addr}, warden on {warden_addr} (pipeline {}); about {:.0} s of load",
        options.pipeline.name(),
        options.plan.load_seconds()
    );
    std::thread::sleep(SETTLE);
    let idle = proc_stats::rss_kib(warden.pid()).context("reading Warden's idle RSS")?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(options.threads)
        .thread_name("bench-load")
        .enable_all()
        .build()?;
    let sampler = RssSampler::start(warden.pid())?;
    let pids = Pids {
        warden: warden.pid(),
        standin: standin.pid(),
    };
    let driven = runtime.block_on(drive(
        runtime.handle(),
        options,
        (standin_addr, warden_addr),
        pids,
        &sampler,
    ))?;
    std::thread::sleep(SETTLE);
    let rss = Rss {
        idle,
        peak: sampler.peak(),
        after: proc_stats::rss_kib(warden.pid()).unwrap_or(0),
    };
    drop(sampler);
    let notes = notes(&driven, &standin, &mut warden);
    Ok(Report {
        settings: options.settings.clone(),
        closed: driven.closed,
        results: driven.results,
        rss,
        notes,
    })
}

async fn drive(
    runtime: &tokio::runtime::Handle,
    options: &Options,
    (standin_addr, warden_addr): (SocketAddr, SocketAddr),
    pids: Pids,
    sampler: &RssSampler,
) -> anyhow::Result<Driven> {
    let direct_target = Arc::new(Target::new(Side::Direct, standin_addr)?);
    let warden_target = Arc::new(Target::new(Side::Warden, warden_addr)?);
    let direct_pool = Pool::open(standin_addr, options.connections).await?;
    let warden_pool = Pool::open(warden_addr, options.connections).await?;
    let mut runner = Runner::new(runtime.clone(), &options.plan, pids, sampler);
    let mut results = Vec::new();
    for &mode in &options.plan.modes {
        let stream = mode == Mode::Stream;
        let body = workload::chat_body(stream);
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
        load::probe(&loads.direct, stream).await?;
        load::probe(&loads.warden, stream).await?;
        for &rate in &options.plan.rates {
            eprintln!("warden-bench: {} at {rate} req/s", mode.name());
            results.push(runner.rate(mode, rate, &loads).await?);
        }
    }
    let closed = if options.closed_seconds > 0.0 {
        Some(
            closed_loops(
                options,
                &direct_target,
                &warden_target,
                (&direct_pool, &warden_pool),
                pids,
            )
            .await,
        )
    } else {
        None
    };
    // One probe per side per mode.
    let probes = options.plan.modes.len() as u64;
    Ok(Driven {
        closed,
        results,
        reconnects: (direct_pool.reconnects(), warden_pool.reconnects()),
        sent: (runner.sent_direct + probes, runner.sent_warden + probes),
        upstream_received: standin_requests(standin_addr).await,
    })
}

/// Non-streaming chat as fast as each target answers, direct first, then Warden, with
/// Warden's CPU time over its run.
async fn closed_loops(
    options: &Options,
    direct: &Arc<Target>,
    warden: &Arc<Target>,
    (direct_pool, warden_pool): (&Arc<Pool>, &Arc<Pool>),
    pids: Pids,
) -> Closed {
    let duration = Duration::from_secs_f64(options.closed_seconds);
    let body = workload::chat_body(false);
    let load = |target: &Arc<Target>, pool: &Arc<Pool>| {
        Arc::new(Load {
            target: Arc::clone(target),
            pool: Arc::clone(pool),
            body: body.clone(),
        })
    };
    eprintln!(
        "warden-bench: closed loop, {} clients, {:.0} s per target",
        options.connections, options.closed_seconds
    );
    let direct = load::closed_loop(&load(direct, direct_pool), options.connections, duration).await;
    let cpu_before = proc_stats::cpu_time(pids.warden);
    let warden = load::closed_loop(&load(warden, warden_pool), options.connections, duration).await;
    let cpu = proc_stats::cpu_time(pids.warden)
        .zip(cpu_before)
        .map(|(after, before)| after.saturating_sub(before));
    Closed {
        clients: options.connections,
        direct,
        warden,
        warden_cpu: cpu,
    }
}

/// Anything a reader of the numbers should know: crashes, replaced connections, server
/// warnings, warmup failures, and how many upstream calls Warden made.
fn notes(driven: &Driven, standin: &Server, warden: &mut Server) -> Vec<String> {
    let mut notes = Vec::new();
    if let Some(status) = warden.exited() {
        notes.push(format!("warden exited during the run: {status}"));
    }
    let (direct_reconnects, warden_reconnects) = driven.reconnects;
    if direct_reconnects + warden_reconnects > 0 {
        notes.push(format!(
            "connections replaced during the run: direct {direct_reconnects}, warden {warden_reconnects}"
        ));
    }
    for server in [standin, &*warden] {
        let lines = server.stderr_lines();
        if lines > 0 {
            notes.push(format!(
                "{} wrote {lines} line(s) to stderr; last: {}",
                server.name,
                server.stderr_tail(3).join(" | ")
            ));
        }
    }
    let warmup_errors: u64 = driven.results.iter().map(|r| r.warmup_errors).sum();
    if warmup_errors > 0 {
        notes.push(format!("{warmup_errors} request(s) failed during warmup"));
    }
    let (sent_direct, sent_warden) = driven.sent;
    match &driven.upstream_received {
        Ok(received) => notes.push(format!(
            "the stand-in received {received} requests: {sent_direct} sent to it directly, so Warden made {} upstream calls for the {sent_warden} requests sent through it",
            received.saturating_sub(sent_direct)
        )),
        Err(error) => notes.push(format!("could not read the stand-in's request count: {error:#}")),
    }
    notes
}

/// How many `/v1` requests the stand-in has received (its `/_standin/stats` counter).
async fn standin_requests(standin: SocketAddr) -> anyhow::Result<u64> {
    let text = pool::get_text(standin, "/_standin/stats").await?;
    let stats: serde_json::Value = serde_json::from_str(&text)?;
    stats["requests"]
        .as_u64()
        .with_context(|| format!("no request count in {text}"))
}
