//! Local filter cost: full scan throughput on 100 KB prompts with the shipped rules (plain
//! ASCII, mixed scripts, and one with secrets and PII sprinkled in so the slow paths run
//! too), two pieces of that scan alone, and the input stage's work (find the texts, scan
//! them) on a typical 2 KB chat. Times are the benchmark thread's CPU time (see `ThreadCpu`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use cpu_time::ThreadTime;
use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use warden::endpoint::Endpoint;
use warden::json_body::JsonBody;
use warden::safety::filters::learned::LinearModel;
use warden::safety::filters::normalize::Normalizer;
use warden::safety::filters::{FilterPolicy, Scanner};

const PARAGRAPH: &str =
    "The quarterly report shows revenue growth across all regions. Please summarise the \
main drivers, compare them with last year, and suggest three actions for the sales team. \
Contact the finance desk if numbers look off; the spreadsheet is attached as revenue-q3.xlsx. ";

/// Accented Latin, CJK and an emoji between English sentences: what a multilingual
/// support chat looks like, and text that cannot take an ASCII-only path.
const MIXED: &[&str] = &[
    PARAGRAPH,
    "Le rapport trimestriel montre une croissance du chiffre d'affaires dans toutes les \
régions ; résumez les facteurs clés et comparez-les avec l'année dernière. ",
    "Der Quartalsbericht zeigt Umsatzwachstum in allen Regionen. Bitte fassen Sie die \
wichtigsten Treiber zusammen und schlagen Sie drei Maßnahmen vor. ",
    "四半期報告書では、すべての地域で売上が伸びています。主な要因をまとめてください。",
    "季度报告显示所有地区的收入均有增长，请总结主要驱动因素。👍 ",
];

/// One line of leaked data per ~8 KB: keys the secret rules must redact and PII the
/// PII rules must flag (the card number passes Luhn).
const LEAKS: &[&str] = &[
    "my key is sk-proj-Zx9Yw8Vu7Ts6Rq5Po4NmZx9Yw8Vu7Ts6Rq5Po4Nm, why does it fail? ",
    "mail jane.doe@example.com or call +1 415 555 0134 about it. ",
    "card 4111 1111 1111 1111 was charged twice. ",
    "AWS AKIAIOSFODNN7EXAMPLE and ghp_abcdefghijklmnopqrstuvwxyz0123456789 leaked. ",
];

fn fill(bytes: usize, mut next: impl FnMut(usize) -> &'static str) -> String {
    let mut text = String::with_capacity(bytes + 1024);
    let mut i = 0;
    while text.len() < bytes {
        text.push_str(next(i));
        i += 1;
    }
    let mut end = bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text
}

fn prompt(bytes: usize) -> String {
    fill(bytes, |_| PARAGRAPH)
}

fn mixed_prompt(bytes: usize) -> String {
    fill(bytes, |i| MIXED[i % MIXED.len()])
}

fn leaky_prompt(bytes: usize) -> String {
    // A paragraph is ~290 bytes: a leak every 28 paragraphs is one per ~8 KB.
    fill(bytes, |i| {
        if i % 28 == 27 {
            LEAKS[(i / 28) % LEAKS.len()]
        } else {
            PARAGRAPH
        }
    })
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

fn bench(c: &mut Criterion<ThreadCpu>) {
    let scanner = Scanner::new(&FilterPolicy::default()).unwrap();

    let cases = [
        ("100KB prompt", prompt(100 * 1024)),
        ("100KB mixed-script prompt", mixed_prompt(100 * 1024)),
        (
            "100KB prompt with secrets and PII",
            leaky_prompt(100 * 1024),
        ),
    ];
    let leaky = &cases[2].1;
    let found = scanner.scan(leaky).findings.len();
    assert!(
        found >= 18,
        "the leaky prompt should find its leaks: {found}"
    );
    let mut group = c.benchmark_group("scan");
    for (name, text) in &cases {
        group.throughput(Throughput::Bytes(text.len() as u64));
        let mut fold = Normalizer::default();
        group.bench_function(*name, |b| b.iter(|| scanner.scan_with(&mut fold, text)));
    }
    group.finish();

    // Two pieces of the scan on their own, to see where its time goes: the fold every
    // folded-text rule reads, and the learned jailbreak judge (part of the jailbreak score).
    let model = LinearModel::embedded().unwrap();
    let mut group = c.benchmark_group("parts");
    for (name, text) in &cases {
        group.throughput(Throughput::Bytes(text.len() as u64));
        let mut fold = Normalizer::default();
        group.bench_function(format!("fold {name}"), |b| b.iter(|| fold.fold(text).len()));
        let folded = fold.fold(text).to_vec();
        group.bench_function(format!("learned judge {name}"), |b| {
            b.iter(|| model.judge(&folded, &[], 0.0))
        });
    }
    group.finish();

    let body_bytes = chat_body();
    let body = JsonBody::parse(&body_bytes).unwrap();
    let mut group = c.benchmark_group("stage");
    group.throughput(Throughput::Bytes(body_bytes.len() as u64));
    group.bench_function(format!("{} B chat", body_bytes.len()), |b| {
        b.iter(|| {
            let mut fold = Normalizer::default();
            warden::openai::extract(Endpoint::ChatCompletions, &body, None)
                .unwrap_or_default()
                .texts
                .iter()
                .map(|t| scanner.scan_with(&mut fold, &t.text).jailbreak.score)
                .fold(0.0f32, f32::max)
        })
    });
    group.finish();
}

/// The benchmark thread's CPU time instead of wall time. The target is per core;
/// and on a machine shared with other builds, wall time mostly measures how long this
/// thread waited for a core (identical code varied by 2x between runs).
struct ThreadCpu;

impl Measurement for ThreadCpu {
    type Intermediate = ThreadTime;
    type Value = Duration;

    fn start(&self) -> ThreadTime {
        ThreadTime::now()
    }

    fn end(&self, start: ThreadTime) -> Duration {
        start.elapsed()
    }

    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }

    fn zero(&self) -> Duration {
        Duration::ZERO
    }

    fn to_f64(&self, value: &Duration) -> f64 {
        value.as_nanos() as f64
    }

    fn formatter(&self) -> &dyn ValueFormatter {
        &CpuFormatter
    }
}

/// Nanoseconds shown as ns/µs/ms; byte throughput in decimal MB/s, the unit.
struct CpuFormatter;

impl ValueFormatter for CpuFormatter {
    fn scale_values(&self, typical: f64, values: &mut [f64]) -> &'static str {
        let (factor, unit) = match typical {
            t if t < 1e3 => (1.0, "ns"),
            t if t < 1e6 => (1e-3, "µs"),
            _ => (1e-6, "ms"),
        };
        values.iter_mut().for_each(|v| *v *= factor);
        unit
    }

    fn scale_throughputs(
        &self,
        _typical: f64,
        throughput: &Throughput,
        values: &mut [f64],
    ) -> &'static str {
        let (per_run, unit) = match throughput {
            Throughput::Bytes(n) | Throughput::BytesDecimal(n) => (*n as f64 / 1e6, "MB/s"),
            Throughput::Elements(n) => (*n as f64, "elem/s"),
        };
        values.iter_mut().for_each(|ns| *ns = per_run * 1e9 / *ns);
        unit
    }

    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(ThreadCpu);
    targets = bench
}
criterion_main!(benches);
