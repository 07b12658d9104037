//! Event-log throughput of the real store, through the real writer (batching, hash chain,
//! one transaction per batch): how many events per second SQLite and PostgreSQL sustain,
//! and what a blocked/flagged answer waits for its commit (`record_durable`) under load.
//!
//! ```sh
//! cargo run --release -p warden --example event_throughput            # SQLite + PostgreSQL
//! cargo run --release -p warden --example event_throughput -- sqlite  # one backend
//! ```
//! PostgreSQL: `WARDEN_TEST_POSTGRES_URL` (default postgres://postgres@127.0.0.1:5432/test);
//! the run uses a fresh database it drops at the end. About 20 s per backend.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use warden::config::StorageConfig;
use warden::events::{EventLog, EventOptions, EventRecord, EventSink, StoreSink};
use warden::store::Store;

/// Events pushed per throughput round (the queue holds 65,536; we refill as it drains).
const EVENTS: usize = 200_000;
const DURABLE_TASKS: usize = 64;
const DURABLE_SECONDS: u64 = 5;

fn event(i: usize) -> EventRecord {
    // Shaped like a real request event: ~450 bytes of fields and detail.
    EventRecord {
        request_id: format!("wrq_{i:032x}"),
        at_ms: warden::events::now_ms(),
        kind: "request",
        key_name: Some("bench".into()),
        end_user: Some(format!("user-{}", i % 1000)),
        safety_identifier: Some("wsi1_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcdefgh".into()),
        client_ip: Some("10.1.2.3".into()),
        endpoint: "chat.completions",
        model: Some("gpt-4o-mini".into()),
        stream: false,
        status: 200,
        outcome: "allowed",
        reason: None,
        latency_us: 420,
        upstream_us: Some(300),
        detail: Some(
            r#"{"trail":["authenticate:allow","read_body:allow","end_user:allow","limits:allow","local_filters:allow","moderation:allow","safety_identifier:rewrite"],"moderated":true}"#
                .into(),
        ),
        content_sha256: Some("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into()),
        content_len: Some(2048),
        ..EventRecord::default()
    }
}

async fn throughput(store: &Store) -> f64 {
    let log = EventLog::start(vec![
        Box::new(StoreSink::new(store.clone(), Duration::from_secs(60))) as Box<dyn EventSink>,
    ]);
    let before = store.count_events().await.unwrap();
    let started = Instant::now();
    let mut i = 0;
    while i < EVENTS {
        // Queue in slices the writer can keep up with, never overflowing (no drops).
        for _ in 0..30_000.min(EVENTS - i) {
            log.record(event(i));
            i += 1;
        }
        log.flush().await;
    }
    let elapsed = started.elapsed();
    let stored = store.count_events().await.unwrap() - before;
    assert_eq!(stored as usize, EVENTS, "every event stored");
    assert_eq!(log.dropped(), 0);
    EVENTS as f64 / elapsed.as_secs_f64()
}

/// 64 tasks each recording durable events back to back (as blocked answers would):
/// commits per second and the wait of each.
async fn durable(store: &Store) -> (f64, Vec<Duration>) {
    let log = EventLog::start_with(
        vec![
            Box::new(StoreSink::new(store.clone(), Duration::from_secs(60))) as Box<dyn EventSink>,
        ],
        EventOptions::default(),
    );
    let waits = Arc::new(Mutex::new(Vec::new()));
    let deadline = Instant::now() + Duration::from_secs(DURABLE_SECONDS);
    let mut tasks = Vec::new();
    for t in 0..DURABLE_TASKS {
        let (log, waits) = (log.clone(), waits.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = t * 1_000_000;
            while Instant::now() < deadline {
                let start = Instant::now();
                assert!(log.record_durable(event(i)).await, "committed in time");
                waits.lock().unwrap().push(start.elapsed());
                i += 1;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let mut waits = waits.lock().unwrap().clone();
    waits.sort();
    (waits.len() as f64 / DURABLE_SECONDS as f64, waits)
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1e3
}

async fn run(name: &str, store: Store) {
    let rate = throughput(&store).await;
    println!("{name:<10} background events: {rate:>9.0} events/s ({EVENTS} events, batches of up to 512, one transaction each)");
    let (commits, waits) = durable(&store).await;
    println!(
        "{name:<10} durable events:    {commits:>9.0} events/s with {DURABLE_TASKS} concurrent waiters; wait p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        pct(&waits, 0.50),
        pct(&waits, 0.99),
        pct(&waits, 1.0)
    );
}

#[tokio::main]
async fn main() {
    let which: Vec<String> = std::env::args().skip(1).collect();
    let wants = |b: &str| which.is_empty() || which.iter().any(|w| w == b);
    if wants("sqlite") {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StorageConfig::Sqlite {
            path: dir.path().join("events.db"),
        })
        .await
        .unwrap();
        run("sqlite", store).await;
    }
    if wants("postgres") {
        let admin = std::env::var("WARDEN_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let name = format!("warden_bench_{}", std::process::id());
        let pool = sqlx::PgPool::connect(&admin).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&pool)
            .await
            .unwrap();
        let url = format!("{}/{name}", admin.rsplit_once('/').unwrap().0);
        let store = Store::open(&StorageConfig::Postgres { url }).await.unwrap();
        run("postgres", store.clone()).await;
        if let Store::Postgres(p) = store {
            p.close().await;
        }
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&pool)
            .await;
    }
}
