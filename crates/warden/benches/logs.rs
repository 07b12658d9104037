//! Log masking cost: one typical `request` line with nothing to mask, and one carrying a
//! key, through the masker every log line passes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use warden::logs::mask::Masker;

const CLEAN: &str = r#"{"timestamp":"2026-12-03T07:20:00.123456Z","level":"INFO","message":"request","target":"warden::events","request_id":"wrq_5f0c2a9e8b7d6c5b4a39281706f5e4d3","kind":"request","key":"chat-app","safety_identifier":"wsi1_Qm9yZWQgd2l0aCBiYXNlNjQ_dXJsIHNhZmUgaGFzaA","client_ip":"203.0.113.7","country":"DE","endpoint":"chat.completions","model":"gpt-4o-mini","stream":false,"status":200,"outcome":"allowed","latency_us":41230,"upstream_us":40110,"warden_us":1120,"detail":"{\"trail\":[\"authenticate:allow\",\"read_body:allow\",\"end_user:allow\",\"user_standing:allow\",\"network_policy:allow\",\"abuse_gate:allow\",\"limits:rewrite\",\"spend:allow\",\"local_filters:allow\",\"moderation:allow\",\"safety_identifier:rewrite\"],\"moderated\":true}"}"#;

fn bench(c: &mut Criterion) {
    let masker = Masker::new().unwrap();
    let secret = CLEAN.replace(
        "gpt-4o-mini",
        "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789",
    );
    let mut group = c.benchmark_group("mask");
    group.throughput(Throughput::Bytes(CLEAN.len() as u64));
    group.bench_function("request line, nothing to mask", |b| {
        b.iter(|| masker.mask(CLEAN.as_bytes()).len())
    });
    group.bench_function("request line with a key", |b| {
        b.iter(|| masker.mask(secret.as_bytes()).len())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
