//! Trains the learned jailbreak cue (`safety/filters/learned.rs`) on the development half
//! of the eval data (even lines of `jailbreak.jsonl` and `benign.jsonl`) and writes the
//! weights Warden embeds. The held-out half is never read here.
//!
//! cargo run --release -p warden --example train_jailbreak -- ../shared/data/eval \
//!     crates/warden/src/safety/filters/jailbreak_model.bin
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use warden::safety::filters::learned::{features, LinearModel, BUCKETS};
use warden::safety::filters::normalize::Normalizer;

const EPOCHS: usize = 30;
const RATE: f32 = 0.2;
const L2: f32 = 1e-5;

struct Example {
    buckets: Vec<usize>,
    scale: f32,
    label: f32,
}

fn load(dir: &Path, file: &str, label: f32, fold: &mut Normalizer) -> Vec<Example> {
    let text = std::fs::read_to_string(dir.join(file)).expect("eval file");
    text.lines()
        .enumerate()
        .filter(|(line, _)| line % 2 == 0)
        .map(|(_, l)| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let folded = fold.fold(v["text"].as_str().unwrap()).to_vec();
            let mut buckets = Vec::new();
            let n = features(&folded, |i| buckets.push(i));
            Example {
                buckets,
                scale: if n == 0 { 0.0 } else { 1.0 / (n as f32).sqrt() },
                label,
            }
        })
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = Path::new(
        args.get(1)
            .map(String::as_str)
            .unwrap_or("../shared/data/eval"),
    );
    let out = args
        .get(2)
        .map(String::as_str)
        .unwrap_or("crates/warden/src/safety/filters/jailbreak_model.bin");
    let mut fold = Normalizer::default();
    let mut examples = load(dir, "jailbreak.jsonl", 1.0, &mut fold);
    let positives = examples.len();
    examples.extend(load(dir, "benign.jsonl", 0.0, &mut fold));
    println!(
        "training on {positives} jailbreaks and {} benign prompts (development half)",
        examples.len() - positives
    );

    // AdaGrad logistic regression; the order is shuffled with a fixed seed so a re-run
    // gives the same weights.
    let mut weights = vec![0.0f32; BUCKETS];
    let mut squares = vec![1e-8f32; BUCKETS];
    let (mut bias, mut bias_square) = (0.0f32, 1e-8f32);
    let mut order: Vec<usize> = (0..examples.len()).collect();
    let mut rng = fastrand::Rng::with_seed(20_261_128);
    for epoch in 0..EPOCHS {
        rng.shuffle(&mut order);
        let mut loss = 0.0f32;
        for &i in &order {
            let e = &examples[i];
            let margin = bias + e.buckets.iter().map(|&b| weights[b]).sum::<f32>() * e.scale;
            let p = 1.0 / (1.0 + (-margin).exp());
            loss -= if e.label > 0.5 {
                p.max(1e-7).ln()
            } else {
                (1.0 - p).max(1e-7).ln()
            };
            let g = p - e.label;
            for &b in &e.buckets {
                let grad = g * e.scale + L2 * weights[b];
                squares[b] += grad * grad;
                weights[b] -= RATE * grad / squares[b].sqrt();
            }
            bias_square += g * g;
            bias -= RATE * g / bias_square.sqrt();
        }
        if epoch % 10 == 9 {
            println!(
                "epoch {:>2}: mean log loss {:.4}",
                epoch + 1,
                loss / examples.len() as f32
            );
        }
    }
    let model = LinearModel::from_weights(weights, bias);
    std::fs::write(out, model.to_bytes()).expect("write the model");
    println!("wrote {out}");
}
