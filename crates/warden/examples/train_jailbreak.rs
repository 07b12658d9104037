//! Trains the learned jailbreak judge (`safety/filters/learned.rs`) on the development half
//! of the eval data (even lines of `jailbreak.jsonl` and `benign.jsonl`) and writes the
//! weights Warden embeds. The held-out half is never read here: the operating points are
//! chosen by cross-validation inside the development half.
//!
//! cargo run --release -p warden --example train_jailbreak -- data/eval \
//!     crates/warden/src/safety/filters/jailbreak_model.bin
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;

use warden::safety::filters::learned::{self, cue_features, text_features, LinearModel};
use warden::safety::filters::normalize::Normalizer;
use warden::safety::filters::{FilterPolicy, Scanner};

const EPOCHS: usize = 20;
const RATE: f32 = 0.2;
const L2: f32 = 1e-5;
const FOLDS: usize = 5;
/// Benign false-positive rates, measured out of fold, that the block (0.8) and flag (0.5)
/// scores are pinned to.
const BLOCK_FPR: f64 = 0.01;
const FLAG_FPR: f64 = 0.03;

struct Example {
    text: Vec<usize>,
    scale: f32,
    cues: Vec<usize>,
    words: usize,
    label: f32,
}

fn load(dir: &Path, file: &str, label: f32, scanner: &Scanner) -> Vec<Example> {
    let mut fold = Normalizer::default();
    let text = std::fs::read_to_string(dir.join(file)).expect("eval file");
    text.lines()
        .enumerate()
        .filter(|(line, _)| line % 2 == 0)
        .map(|(_, l)| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let raw = v["text"].as_str().unwrap();
            // The judge's input is what the rules found before it ran.
            let found = scanner.scan(raw).jailbreak;
            let families: Vec<Arc<str>> = found
                .families
                .into_iter()
                .filter(|f| &**f != learned::FAMILY)
                .collect();
            let mut cues = Vec::new();
            cue_features(&families, found.cues, |i| cues.push(i));
            let mut buckets = Vec::new();
            let counts = text_features(fold.fold(raw), |i| buckets.push(i));
            Example {
                text: buckets,
                scale: 1.0 / (counts.features.max(1) as f32).sqrt(),
                cues,
                words: counts.words,
                label,
            }
        })
        .collect()
}

fn margin(weights: &[f32], bias: f32, e: &Example) -> f32 {
    bias + e.text.iter().map(|&b| weights[b]).sum::<f32>() * e.scale
        + e.cues.iter().map(|&b| weights[b]).sum::<f32>()
}

/// AdaGrad logistic regression; the order is shuffled with a fixed seed so a re-run gives
/// the same weights.
fn train(examples: &[&Example]) -> (Vec<f32>, f32) {
    let mut weights = vec![0.0f32; learned::BUCKETS];
    let mut squares = vec![1e-8f32; learned::BUCKETS];
    let (mut bias, mut bias_square) = (0.0f32, 1e-8f32);
    let mut order: Vec<usize> = (0..examples.len()).collect();
    let mut rng = fastrand::Rng::with_seed(20_261_203);
    for _ in 0..EPOCHS {
        rng.shuffle(&mut order);
        for &i in &order {
            let e = examples[i];
            let p = 1.0 / (1.0 + (-margin(&weights, bias, e)).exp());
            let g = p - e.label;
            let text = e.text.iter().map(|&b| (b, e.scale));
            for (b, x) in text.chain(e.cues.iter().map(|&b| (b, 1.0))) {
                let grad = g * x + L2 * weights[b];
                squares[b] += grad * grad;
                weights[b] -= RATE * grad / squares[b].sqrt();
            }
            bias_square += g * g;
            bias -= RATE * g / bias_square.sqrt();
        }
    }
    (weights, bias)
}

/// The margin above which a share `fpr` of the benign margins lie.
fn threshold(benign: &[f32], fpr: f64) -> f32 {
    let mut sorted = benign.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    match (fpr * sorted.len() as f64).floor() as usize {
        0 => sorted[0] + 1e-3,
        k => (sorted[k - 1] + sorted[k]) / 2.0,
    }
}

/// Out-of-fold margins of the texts the judge will see (`MIN_WORDS` and up), jailbreaks
/// then benign. Each class is dealt round-robin into the folds so every fold has both.
fn cross_validate(jailbreaks: &[Example], benign: &[Example]) -> (Vec<f32>, Vec<f32>) {
    let (mut positive, mut negative) = (Vec::new(), Vec::new());
    for k in 0..FOLDS {
        let train_on: Vec<&Example> = [jailbreaks, benign]
            .into_iter()
            .flat_map(|rows| rows.iter().enumerate())
            .filter(|(i, _)| i % FOLDS != k)
            .map(|(_, e)| e)
            .collect();
        let (weights, bias) = train(&train_on);
        for (rows, into) in [(jailbreaks, &mut positive), (benign, &mut negative)] {
            let held = rows.iter().enumerate().filter(|(i, _)| i % FOLDS == k);
            for (_, e) in held.filter(|(_, e)| e.words >= learned::MIN_WORDS) {
                into.push(margin(&weights, bias, e));
            }
        }
    }
    (positive, negative)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = Path::new(args.get(1).map(String::as_str).unwrap_or("data/eval"));
    let out = args
        .get(2)
        .map(String::as_str)
        .unwrap_or("crates/warden/src/safety/filters/jailbreak_model.bin");
    let scanner = Scanner::new(&FilterPolicy::default()).expect("shipped rules");
    let jailbreaks = load(dir, "jailbreak.jsonl", 1.0, &scanner);
    let benign = load(dir, "benign.jsonl", 0.0, &scanner);
    println!(
        "development half: {} jailbreaks, {} benign prompts",
        jailbreaks.len(),
        benign.len()
    );

    let (positive, negative) = cross_validate(&jailbreaks, &benign);
    let block = threshold(&negative, BLOCK_FPR);
    let flag = threshold(&negative, FLAG_FPR);
    for (name, at) in [("block", block), ("flag", flag)] {
        let rate = |xs: &[f32]| xs.iter().filter(|&&m| m >= at).count() as f64 / xs.len() as f64;
        println!(
            "cross-validated, texts of {}+ words, {name} at margin {at:.3}: recall {:.3}, FPR {:.3}",
            learned::MIN_WORDS,
            rate(&positive),
            rate(&negative)
        );
    }

    let all: Vec<&Example> = jailbreaks.iter().chain(&benign).collect();
    let (mut weights, mut bias) = train(&all);
    // Rescale so the flag margin lands on 0.5 and the block margin on 0.8 (logit ln 4).
    let stretch = 4.0f32.ln() / (block - flag);
    weights.iter_mut().for_each(|w| *w *= stretch);
    bias = (bias - flag) * stretch;
    let model = LinearModel::quantise(&weights, bias);
    std::fs::write(out, model.to_bytes()).expect("write the model");
    println!("wrote {out}");
}
