//! `warden-bench realtime`: Realtime WebSocket sessions straight to the stand-in vs through
//! Warden (relay only, then with output moderation), in one run.
//!
//! Each of `--sessions` concurrent sessions sets text output, adds one user item and asks
//! for `--responses` responses of `--words` × `--repeat` deltas each. Reported per target:
//! time from `response.create` to the first delta and to `response.done` (p50/p99), events
//! per second over the run, and, through Warden, RSS with every session open (per session).
//! The added latency per relayed event is (Warden's done p50 − direct done p50) / deltas.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::{SinkExt as _, StreamExt as _};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::Message;

use crate::procs::{start_standin, start_warden_with, Scratch};
use crate::workload::{UPSTREAM_KEY, VIRTUAL_KEY};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Sessions open at once per target.
    #[arg(long, default_value_t = 100)]
    sessions: usize,
    /// Responses asked for in each session.
    #[arg(long, default_value_t = 5)]
    responses: usize,
    /// How many times the stand-in says its ~8-word reply per response.
    #[arg(long, default_value_t = 4)]
    repeat: usize,
    /// Directory holding the `warden` and `standin` binaries [default: this executable's].
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
}

struct Target {
    name: &'static str,
    url: String,
    auth: bool,
    pid: Option<u32>,
}

#[derive(Default)]
struct Result {
    first: Vec<u64>,
    done: Vec<u64>,
    events: u64,
    elapsed: Duration,
    rss_open_kib: Option<(u64, u64)>,
}

pub fn run(args: &Args, bin_dir: PathBuf) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=2000).contains(&args.sessions),
        "--sessions must be in 1..=2000"
    );
    anyhow::ensure!(
        (1..=1000).contains(&args.responses),
        "--responses must be in 1..=1000"
    );
    anyhow::ensure!(
        (2..=10_000).contains(&args.repeat),
        "--repeat must be in 2..=10000"
    );
    let scratch = Scratch::create()?;
    let (_standin, standin) = start_standin(&bin_dir, &scratch)?;
    let relay_config = config(standin, &scratch, "relay", false);
    let (relay, relay_addr) = start_warden_with(&bin_dir, &scratch, "relay", &relay_config)?;
    let moderated_config = config(standin, &scratch, "moderated", true);
    let (moderated, moderated_addr) =
        start_warden_with(&bin_dir, &scratch, "moderated", &moderated_config)?;
    let targets = [
        Target {
            name: "direct",
            url: format!("ws://{standin}/v1/realtime?model=gpt-realtime"),
            auth: false,
            pid: None,
        },
        Target {
            name: "warden",
            url: format!("ws://{relay_addr}/v1/realtime?model=gpt-realtime"),
            auth: true,
            pid: Some(relay.pid()),
        },
        Target {
            name: "warden+output_moderation",
            url: format!("ws://{moderated_addr}/v1/realtime?model=gpt-realtime"),
            auth: true,
            pid: Some(moderated.pid()),
        },
    ];
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut rows = Vec::new();
    for target in &targets {
        let result = runtime.block_on(drive(target, args))?;
        rows.push((target.name, result));
    }
    let deltas = (args.repeat * 8) as f64;
    let direct_done = percentile(&rows[0].1.done, 50.0);
    eprintln!(
        "realtime: {} sessions x {} responses x ~{} deltas",
        args.sessions, args.responses, deltas
    );
    eprintln!(
        "{:<26} {:>12} {:>12} {:>12} {:>12} {:>12} {:>14}",
        "target",
        "first p50 ms",
        "first p99 ms",
        "done p50 ms",
        "done p99 ms",
        "events/s",
        "RSS/session KiB"
    );
    for (name, r) in &rows {
        let per_session = r.rss_open_kib.map_or("-".to_owned(), |(before, open)| {
            format!("{}", open.saturating_sub(before) / args.sessions as u64)
        });
        eprintln!(
            "{:<26} {:>12.2} {:>12.2} {:>12.2} {:>12.2} {:>12.0} {:>14}",
            name,
            percentile(&r.first, 50.0) / 1000.0,
            percentile(&r.first, 99.0) / 1000.0,
            percentile(&r.done, 50.0) / 1000.0,
            percentile(&r.done, 99.0) / 1000.0,
            r.events as f64 / r.elapsed.as_secs_f64(),
            per_session,
        );
    }
    for (name, r) in rows.iter().skip(1) {
        let added = (percentile(&r.done, 50.0) - direct_done) / deltas;
        eprintln!(
            "{name}: added latency per relayed delta (done p50 difference / deltas): {added:.1} us"
        );
    }
    Ok(())
}

fn config(standin: SocketAddr, scratch: &Scratch, name: &str, moderate: bool) -> String {
    let db = scratch.path().join(format!("{name}.db"));
    format!(
        r#"[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
[upstream]
base_url = "http://{standin}/v1"
api_key_env = "BENCH_UPSTREAM_KEY"
[storage]
url = "sqlite://{db}"
[identity]
safety_identifier_secret_env = "BENCH_SAFETY_SECRET"
[log]
level = "warn"
[[keys]]
name = "bench"
secret_env = "BENCH_KEY"
end_user = "required"
[safety.moderation]
enabled = {moderate}
[limits]
enabled = false
[realtime]
sessions_per_user_per_hour = 1000000
"#,
        db = db.display()
    )
}

/// Opens every session, then asks each for its responses, all at once.
async fn drive(target: &Target, args: &Args) -> anyhow::Result<Result> {
    let before = target.pid.and_then(crate::proc_stats::rss_kib);
    let mut sockets = Vec::with_capacity(args.sessions);
    for i in 0..args.sessions {
        let mut request = target.url.clone().into_client_request()?;
        if target.auth {
            request
                .headers_mut()
                .insert("authorization", format!("Bearer {VIRTUAL_KEY}").parse()?);
            request
                .headers_mut()
                .insert("x-warden-user", format!("bench-user-{i}").parse()?);
        } else {
            request
                .headers_mut()
                .insert("authorization", format!("Bearer {UPSTREAM_KEY}").parse()?);
        }
        let host = request.uri().authority().context("no host")?.to_string();
        let tcp = tokio::net::TcpStream::connect(host).await?;
        // Small events must leave at once (Nagle plus delayed ACKs would add ~40 ms).
        tcp.set_nodelay(true)?;
        let (mut socket, _) = tokio_tungstenite::client_async(request, tcp).await?;
        socket.next().await.context("no session.created")??;
        sockets.push(socket);
    }
    let open = target.pid.and_then(crate::proc_stats::rss_kib);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for mut socket in sockets {
        let responses = args.responses;
        let repeat = args.repeat;
        tasks.push(tokio::spawn(async move {
            let mut first = Vec::new();
            let mut done = Vec::new();
            let mut events = 0u64;
            let send = |v: Value| Message::Text(v.to_string().into());
            socket.send(send(json!({"type": "session.update", "session": {"type": "realtime", "output_modalities": ["text"]}}))).await?;
            socket.send(send(json!({"type": "conversation.item.create", "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": format!("bench REPEAT={repeat}")}]}}))).await?;
            for _ in 0..responses {
                socket.send(send(json!({"type": "response.create"}))).await?;
                let t0 = Instant::now();
                let mut got_first = false;
                loop {
                    let Some(frame) = socket.next().await else { anyhow::bail!("session closed") };
                    let Message::Text(text) = frame? else { continue };
                    events += 1;
                    let text = text.as_str();
                    if !got_first && text.contains("\"response.output_text.delta\"") {
                        got_first = true;
                        first.push(t0.elapsed().as_micros() as u64);
                    }
                    if text.contains("\"response.done\"") {
                        done.push(t0.elapsed().as_micros() as u64);
                        break;
                    }
                }
            }
            let _ = socket.close(None).await;
            anyhow::Ok((first, done, events))
        }));
    }
    let mut result = Result::default();
    for task in tasks {
        let (first, done, events) = task.await??;
        result.first.extend(first);
        result.done.extend(done);
        result.events += events;
    }
    result.elapsed = started.elapsed();
    result.rss_open_kib = before.zip(open);
    Ok(result)
}

fn percentile(values: &[u64], p: f64) -> f64 {
    let Ok(mut h) = Histogram::<u64>::new(3) else {
        return 0.0;
    };
    for v in values {
        let _ = h.record(*v);
    }
    h.value_at_percentile(p) as f64
}
