//! Cost of the event spool: one append (a `write(2)` into the page cache, on every stored
//! event's path), one append with `fsync` (refusals and flags), and the replay rate of a
//! spooled backlog into a SQLite store once the store is reachable again.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use warden::config::StorageConfig;
use warden::events::spool::Spool;
use warden::events::{EventRecord, EventSink, StoreSink};
use warden::store::Store;

/// A typical allowed request's event (trail and findings in the detail).
fn event(i: u64) -> EventRecord {
    EventRecord {
        request_id: format!("wrq_{i:016x}"),
        at_ms: 1_700_000_000_000,
        kind: "request",
        key_name: Some("app".into()),
        end_user: Some("user-1234".into()),
        safety_identifier: Some("8f14e45fceea167a5a36dedd4bea2543".into()),
        client_ip: Some("192.0.2.10".into()),
        endpoint: "chat.completions",
        model: Some("gpt-4o-mini".into()),
        status: 200,
        outcome: "allowed",
        latency_us: 812,
        upstream_us: Some(650),
        detail: Some(r#"{"trail":["auth","user","limits","filters","moderation","rewrite"],"moderated":true}"#.into()),
        content_sha256: Some("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into()),
        content_len: Some(1234),
        ..EventRecord::default()
    }
}

fn append(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), 1 << 40, "cbench".into()).unwrap();
    let e = event(1);
    let mut seq = 0;
    c.bench_function("spool/append", |b| {
        b.iter(|| {
            seq += 1;
            spool.append(seq, &e).unwrap();
            // Keep the disk use bounded, as the store sink's commits do.
            if seq % 4096 == 0 {
                spool.release("cbench", seq);
            }
        })
    });
    let mut group = c.benchmark_group("spool");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("append_fsync", |b| {
        b.iter(|| {
            seq += 1;
            let file = spool.append(seq, &e).unwrap();
            file.sync_data().unwrap();
        })
    });
    group.finish();
}

/// Events per second from a spooled backlog (an earlier process's chain) into a fresh
/// SQLite file store.
fn replay(c: &mut Criterion) {
    const EVENTS: u64 = 5000;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("spool");
    group.sample_size(10);
    group.bench_function("replay_5000_into_sqlite", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = tempfile::tempdir().unwrap();
                let spool_dir = dir.path().join("spool");
                let old = Spool::open(&spool_dir, 1 << 40, "c0000000000001-old".into()).unwrap();
                for i in 1..=EVENTS {
                    old.append(i as i64, &event(i)).unwrap();
                }
                drop(old);
                total += runtime.block_on(async {
                    let store = Store::open(&StorageConfig::Sqlite {
                        path: dir.path().join("warden.db"),
                    })
                    .await
                    .unwrap();
                    let spool = Arc::new(Spool::open(&spool_dir, 1 << 40, "cnew".into()).unwrap());
                    let sink = StoreSink::spooled(
                        store,
                        Duration::from_secs(60),
                        spool.clone(),
                        Default::default(),
                        Default::default(),
                    );
                    let started = Instant::now();
                    sink.tick().await;
                    let took = started.elapsed();
                    assert!(
                        spool.leftover_chains().is_empty(),
                        "the backlog was replayed"
                    );
                    took
                });
            }
            total
        })
    });
    group.finish();
}

criterion_group!(benches, append, replay);
criterion_main!(benches);
