//! Local filter cost: full scan throughput on a 100 KB prompt with the shipped rules, and
//! the input stage's work (find the texts, scan them) on a typical 2 KB chat body.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use warden::endpoint::Endpoint;
use warden::json_body::JsonBody;
use warden::safety::filters::normalize::Normalizer;
use warden::safety::filters::{FilterPolicy, Scanner};
use warden::safety::text;

const PARAGRAPH: &str =
    "The quarterly report shows revenue growth across all regions. Please summarise the \
main drivers, compare them with last year, and suggest three actions for the sales team. \
Contact the finance desk if numbers look off; the spreadsheet is attached as revenue-q3.xlsx. ";

fn prompt(bytes: usize) -> String {
    let mut text = String::with_capacity(bytes + PARAGRAPH.len());
    while text.len() < bytes {
        text.push_str(PARAGRAPH);
    }
    text.truncate(bytes);
    text
}

fn chat_body() -> Vec<u8> {
    let system =
        "You are a helpful assistant for the finance team. Answer briefly and cite the data.";
    let turns: Vec<serde_json::Value> =
        std::iter::once(serde_json::json!({"role": "system", "content": system}))
            .chain((0..4).flat_map(|_| {
                [
                    serde_json::json!({"role": "user", "content": prompt(300)}),
                    serde_json::json!({"role": "assistant", "content": prompt(150)}),
                ]
            }))
            .collect();
    serde_json::to_vec(&serde_json::json!({"model": "gpt-4o-mini", "messages": turns})).unwrap()
}

fn bench(c: &mut Criterion) {
    let scanner = Scanner::new(&FilterPolicy::default()).unwrap();

    let big = prompt(100 * 1024);
    let mut group = c.benchmark_group("scan");
    group.throughput(Throughput::Bytes(big.len() as u64));
    let mut fold = Normalizer::default();
    group.bench_function("100KB prompt", |b| {
        b.iter(|| scanner.scan_with(&mut fold, &big))
    });
    group.finish();

    let body_bytes = chat_body();
    let body = JsonBody::parse(&body_bytes).unwrap();
    let mut group = c.benchmark_group("stage");
    group.throughput(Throughput::Bytes(body_bytes.len() as u64));
    group.bench_function(format!("{} B chat", body_bytes.len()), |b| {
        b.iter(|| {
            let mut fold = Normalizer::default();
            text::texts(Endpoint::ChatCompletions, &body)
                .iter()
                .map(|t| scanner.scan_with(&mut fold, &t.text).jailbreak.score)
                .fold(0.0f32, f32::max)
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
