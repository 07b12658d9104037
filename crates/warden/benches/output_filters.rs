//! Cost of the local filters on answers when nothing matches: a streamed answer's text
//! through the hold-back guard (a release attempt whenever it is due, as with output
//! moderation off), and a whole 2 KB chat answer through `filters::answer`.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use warden::endpoint::Endpoint;
use warden::proxy::output::filters;
use warden::proxy::output::guard::{Guard, Plan, Segment};
use warden::safety::filters::{FilterPolicy, Scanner};

const ANSWER: &str = "The quarterly report shows revenue growth across all regions. The main \
drivers were the new enterprise contracts and a stronger second half in retail. Compared \
with last year, margins improved slightly while costs stayed flat. ";

fn words(bytes: usize) -> Vec<String> {
    let mut text = String::new();
    while text.len() < bytes {
        text.push_str(ANSWER);
    }
    let mut out = Vec::new();
    let mut start = 0;
    for (i, _) in text.match_indices(' ') {
        out.push(text[start..i].to_owned());
        start = i;
    }
    out
}

fn bench(c: &mut Criterion) {
    let scanner = Arc::new(Scanner::new(&FilterPolicy::default()).unwrap());

    let deltas = words(2048);
    let mut group = c.benchmark_group("output_guard");
    group.throughput(Throughput::Elements(deltas.len() as u64));
    group.bench_function(format!("{} deltas", deltas.len()), |b| {
        b.iter(|| {
            let mut guard = Guard::new(scanner.clone(), "choices");
            let mut held: Vec<Segment> = Vec::new();
            for delta in &deltas {
                held.push(guard.push(0, delta));
                if !guard.due() {
                    continue;
                }
                let events: Vec<&[Segment]> = held.iter().map(std::slice::from_ref).collect();
                if let Plan::Release(release) = guard.plan(&events) {
                    let n = release.events;
                    guard.commit(&release);
                    held.drain(..n);
                }
            }
            held.len()
        })
    });
    group.finish();

    let answer = serde_json::json!({"id": "chatcmpl-1", "object": "chat.completion", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": words(2048).concat()}, "finish_reason": "stop"}]});
    let mut group = c.benchmark_group("output_answer");
    group.throughput(Throughput::Bytes(2048));
    group.bench_function("2 KB chat answer", |b| {
        b.iter(|| {
            let mut value = answer.clone();
            filters::answer(&scanner, Endpoint::ChatCompletions, &mut value).changed
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
