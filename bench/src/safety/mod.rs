//! `warden-bench moderation`: what content safety costs, measured against the real stand-in
//! and Warden binaries. Two parts (issue 3): the text a 20-turn conversation sends to the
//! Moderation endpoint (the content-hash cache) against re-moderating the whole
//! conversation each turn, and the time output moderation adds to a stream.

mod conversation;
mod prose;
mod recorded;
mod report;
mod streams;

pub use report::SafetyReport;
pub use streams::Shape;

use anyhow::Context as _;
use std::path::PathBuf;
use std::sync::Arc;

use crate::config::{warden_config, Pipeline, OUTPUT_MODERATION_OFF};
use crate::pool::Pool;
use crate::procs::{self, Scratch, Server};
use crate::workload::{Side, Target};
use streams::StreamTarget;

#[derive(Debug, Clone)]
pub struct Options {
    pub bin_dir: PathBuf,
    pub turns: usize,
    /// Streamed requests per target (0: skip the streaming part).
    pub streams: usize,
    /// Streams in flight at once per target.
    pub parallel: usize,
    pub shape: Shape,
    /// Echoed into the JSON report.
    pub settings: serde_json::Value,
}

pub fn run(options: &Options) -> anyhow::Result<SafetyReport> {
    procs::check_binaries(&options.bin_dir)?;
    // Declared first so it is dropped last, after the servers are killed.
    let scratch = Scratch::create()?;
    let bin = &options.bin_dir;
    let (standin, standin_addr) = procs::start_standin(bin, &scratch)?;
    // Every stage at its defaults (moderation on, input and output); limits raised so they
    // never refuse. The second Warden only relays streams instead of moderating them.
    let moderated = warden_config(
        Pipeline::Full,
        standin_addr,
        &scratch.path().join("warden.db"),
    );
    let relay = warden_config(
        Pipeline::Full,
        standin_addr,
        &scratch.path().join("warden-relay.db"),
    ) + OUTPUT_MODERATION_OFF;
    let (mut warden, warden_addr) = procs::start_warden_with(bin, &scratch, "warden", &moderated)?;
    let (mut relay, relay_addr) = procs::start_warden_with(bin, &scratch, "warden-relay", &relay)?;
    eprintln!(
        "warden-bench moderation: stand-in on {standin_addr}, warden on {warden_addr}, relay warden on {relay_addr}"
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("bench-safety")
        .enable_all()
        .build()?;
    let (conversation, streams) = runtime.block_on(async {
        eprintln!(
            "warden-bench moderation: {}-turn conversation",
            options.turns
        );
        let conversation = conversation::run(standin_addr, warden_addr, options.turns)
            .await
            .context("the conversation")?;
        let streams = if options.streams > 0 {
            eprintln!(
                "warden-bench moderation: {} streams per target, {} at a time",
                options.streams, options.parallel
            );
            let targets = [
                stream_target("direct", Side::Direct, standin_addr, options.parallel).await?,
                stream_target("relay", Side::Warden, relay_addr, options.parallel).await?,
                stream_target("moderated", Side::Warden, warden_addr, options.parallel).await?,
            ];
            streams::run(&targets, options.shape, options.streams, options.parallel).await?
        } else {
            Vec::new()
        };
        anyhow::Ok((conversation, streams))
    })?;
    let notes = notes(&standin, &mut [&mut warden, &mut relay]);
    Ok(SafetyReport {
        settings: options.settings.clone(),
        conversation,
        streams,
        shape: options.shape,
        notes,
    })
}

async fn stream_target(
    name: &'static str,
    side: Side,
    addr: std::net::SocketAddr,
    connections: usize,
) -> anyhow::Result<StreamTarget> {
    Ok(StreamTarget {
        name,
        target: Arc::new(Target::new(side, addr)?),
        pool: Pool::open(addr, connections.max(1)).await?,
    })
}

/// Crashes and server warnings, so a reader of the numbers knows.
fn notes(standin: &Server, wardens: &mut [&mut Server]) -> Vec<String> {
    let mut notes = Vec::new();
    for warden in wardens.iter_mut() {
        if let Some(status) = warden.exited() {
            notes.push(format!("{} exited during the run: {status}", warden.name));
        }
    }
    let servers = std::iter::once(standin).chain(wardens.iter().map(|w| &**w));
    for server in servers {
        let lines = server.stderr_lines();
        if lines > 0 {
            notes.push(format!(
                "{} wrote {lines} line(s) to stderr; last: {}",
                server.name,
                server.stderr_tail(3).join(" | ")
            ));
        }
    }
    notes
}

/// The real binaries, started by the real harness: a short conversation and a few streams.
#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use std::path::Path;

    /// `WARDEN_BENCH_BIN_DIR`, else the workspace's release build, else its debug build
    /// (`cargo nextest run --workspace` builds the debug binaries).
    fn bin_dir() -> PathBuf {
        if let Some(dir) = std::env::var_os("WARDEN_BENCH_BIN_DIR") {
            return PathBuf::from(dir);
        }
        let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
        for profile in ["release", "debug"] {
            let dir = target.join(profile);
            if procs::check_binaries(&dir).is_ok() {
                return dir;
            }
        }
        panic!("no warden and standin binaries: cargo build --release -p warden -p standin");
    }

    #[test]
    fn a_conversation_moderates_only_new_text_and_output_moderation_holds_back_a_window() {
        let options = Options {
            bin_dir: bin_dir(),
            turns: 5,
            streams: 2,
            parallel: 2,
            shape: Shape {
                chunks: 20,
                chunk_chars: 24,
                chunk_delay_ms: 15,
            },
            settings: serde_json::Value::Null,
        };
        let report = run(&options).unwrap();
        report.check().unwrap();
        let turns = &report.conversation.turns;
        assert_eq!(turns.len(), 5);
        // Turn 1: system prompt and question; later turns only the new question (the previous
        // answer was judged as output and is answered from the cache).
        assert_eq!(turns[0].input.inputs, 2, "{:?}", turns[0]);
        for turn in &turns[1..] {
            assert_eq!((turn.input.calls, turn.input.inputs), (1, 1), "{turn:?}");
            assert_eq!(turn.output.calls, 1, "{turn:?}");
            assert!(turn.input.bytes * 10 < turn.naive.bytes, "{turn:?}");
        }

        let [direct, relay, moderated] = &report.streams[..] else {
            panic!("three stream targets, got {}", report.streams.len());
        };
        let first =
            |run: &streams::TargetRun| run.samples.iter().map(|s| s.first_token).min().unwrap();
        let biggest = |run: &streams::TargetRun| {
            run.samples
                .iter()
                .flat_map(|s| s.bursts.iter().copied())
                .max()
                .unwrap()
        };
        // 300 characters of 24-character chunks 15 ms apart arrive after at least 12 pauses.
        assert!(first(moderated) >= std::time::Duration::from_millis(180));
        assert!(first(direct) < std::time::Duration::from_millis(100));
        assert!(first(relay) < std::time::Duration::from_millis(100));
        assert!(
            biggest(moderated) >= 250,
            "moderated bursts up to {}",
            biggest(moderated)
        );
        assert!(
            biggest(relay) < 100,
            "relay bursts up to {}",
            biggest(relay)
        );
    }
}
