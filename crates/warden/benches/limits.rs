//! Cost of one limit decision: a bare GCRA cell, a whole request (organization, key,
//! end user and IP; four windows each; in-flight slots) locally, and through Redis.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use warden::config::limits::{validate_cluster, validate_limits, Rates};
use warden::config::Problems;
use warden::limits::gcra::{Cell, Rate};
use warden::limits::{Admission, Limiter};

const HUGE: Rates = Rates {
    requests_per_minute: Some(u64::MAX / 4),
    requests_per_day: Some(u64::MAX / 4),
    tokens_per_minute: Some(u64::MAX / 4),
    tokens_per_day: Some(u64::MAX / 4),
    concurrency: Some(1 << 40),
};

fn limiter(cluster: &str) -> Limiter {
    let mut problems = Problems::default();
    let text = format!(
        r#"
[limits.organization]
requests_per_minute = 1000000000000
requests_per_day = 1000000000000
tokens_per_minute = 1000000000000
tokens_per_day = 1000000000000
concurrency = "unlimited"
[limits.per_ip]
requests_per_minute = 1000000000000
requests_per_day = 1000000000000
tokens_per_minute = 1000000000000
tokens_per_day = 1000000000000
concurrency = "unlimited"
{cluster}
"#
    );
    let table: toml::Value = toml::from_str(&text).unwrap();
    let limits = validate_limits(table.get("limits"), &[], &mut problems);
    let cluster = validate_cluster(table.get("cluster"), &mut problems);
    assert!(problems.is_empty(), "{problems}");
    Limiter::new(&limits, &cluster).unwrap()
}

fn admission(user: &str) -> Admission<'_> {
    Admission {
        key: "bench",
        key_rates: HUGE,
        user: Some((user, "verified", HUGE)),
        ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
        prompt_tokens: 120,
    }
}

fn bench(c: &mut Criterion) {
    let rate = Rate::new(u64::MAX / 4, 60_000_000_000);
    let cell = Cell::default();
    let mut now = 1u64 << 50;
    c.bench_function("gcra_cell_take", |b| {
        b.iter(|| {
            now += 1;
            black_box(cell.try_take(rate, now, 1))
        })
    });

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let _guard = runtime.enter();

    let local = limiter("");
    let users: Vec<String> = (0..1000).map(|i| format!("user-{i}")).collect();
    let mut i = 0;
    c.bench_function("limiter_admit_local_4_actors", |b| {
        b.iter(|| {
            i = (i + 1) % users.len();
            black_box(local.admit_local(&admission(&users[i])).unwrap())
        })
    });

    let prefix = format!("wbench-{:x}", std::process::id());
    let shared = limiter(&format!(
        "[cluster]\nredis_url = \"redis://127.0.0.1:6379\"\nkey_prefix = \"{prefix}\"\ntimeout_ms = 1000\n"
    ));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while shared.degraded() != Some(false) {
        assert!(
            std::time::Instant::now() < deadline,
            "Redis on 127.0.0.1:6379 is needed for the shared benchmark"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    c.bench_function("limiter_admit_redis_4_actors", |b| {
        b.iter(|| {
            i = (i + 1) % users.len();
            let ticket = runtime
                .block_on(shared.admit(&admission(&users[i])))
                .unwrap();
            black_box(ticket)
        })
    });
    assert_eq!(
        shared.degraded(),
        Some(false),
        "Redis timed out during the run"
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    targets = bench
}
criterion_main!(benches);
