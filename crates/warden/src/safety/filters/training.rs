//! Training the learned judge (`learned.rs`): AdaGrad logistic regression over the judge's
//! own hashed features, the operating points pinned by cross-validation. Shared by the
//! trainer that writes the shipped weights (`examples/train_jailbreak.rs`) and the
//! leave-one-family-out evaluation (`examples/jailbreak_eval_lofo.rs`), so what is measured
//! is how the shipped model is made. A few seconds for ten thousand prompts.

use std::sync::Arc;

use super::learned::{self, cue_features, text_features, LinearModel};
use super::normalize::Normalizer;
use super::Scanner;

const EPOCHS: usize = 20;
const RATE: f32 = 0.2;
const L2: f32 = 1e-5;
/// Benign false-positive rates, measured out of fold, that the block (0.8) and flag (0.5)
/// scores are pinned to.
const BLOCK_FPR: f64 = 0.01;
const FLAG_FPR: f64 = 0.03;

/// One prompt as the judge sees it: the buckets of its words and of the rule cues.
pub struct Example {
    text: Vec<u32>,
    scale: f32,
    cues: Vec<u32>,
    pub words: usize,
    pub jailbreak: bool,
    /// How much the example counts in the loss (families of very different sizes are
    /// balanced so one big template does not decide the weights).
    pub weight: f32,
}

impl Example {
    /// `scanner` must have no learned judge (`Scanner::with_learned(None)`): the judge's
    /// input is what the rules found before it ran.
    pub fn new(scanner: &Scanner, fold: &mut Normalizer, raw: &str, jailbreak: bool) -> Example {
        let found = scanner.scan_with(fold, raw).jailbreak;
        let families: Vec<Arc<str>> = found
            .families
            .into_iter()
            .filter(|f| &**f != learned::FAMILY)
            .collect();
        let mut cues = Vec::new();
        cue_features(&families, found.cues, |i| cues.push(i as u32));
        let mut text = Vec::new();
        let counts = text_features(fold.fold(raw), |i| text.push(i as u32));
        Example {
            text,
            scale: 1.0 / (counts.features.max(1) as f32).sqrt(),
            cues,
            words: counts.words,
            jailbreak,
            weight: 1.0,
        }
    }

    fn margin(&self, weights: &[f32], bias: f32) -> f32 {
        bias + self.text.iter().map(|&b| weights[b as usize]).sum::<f32>() * self.scale
            + self.cues.iter().map(|&b| weights[b as usize]).sum::<f32>()
    }
}

/// The weights and bias, in margin units (not yet calibrated).
pub struct Raw {
    weights: Vec<f32>,
    bias: f32,
}

impl Raw {
    pub fn margin(&self, e: &Example) -> f32 {
        e.margin(&self.weights, self.bias)
    }
}

/// The order is shuffled with a fixed seed so a re-run gives the same weights.
pub fn train(examples: &[&Example]) -> Raw {
    let mut weights = vec![0.0f32; learned::BUCKETS];
    let mut squares = vec![1e-8f32; learned::BUCKETS];
    let (mut bias, mut bias_square) = (0.0f32, 1e-8f32);
    let mut order: Vec<usize> = (0..examples.len()).collect();
    let mut rng = fastrand::Rng::with_seed(20_261_203);
    for _ in 0..EPOCHS {
        rng.shuffle(&mut order);
        for &i in &order {
            let e = examples[i];
            let p = 1.0 / (1.0 + (-e.margin(&weights, bias)).exp());
            let g = (p - if e.jailbreak { 1.0 } else { 0.0 }) * e.weight;
            let text = e.text.iter().map(|&b| (b as usize, e.scale));
            for (b, x) in text.chain(e.cues.iter().map(|&b| (b as usize, 1.0))) {
                let grad = g * x + L2 * weights[b];
                squares[b] += grad * grad;
                weights[b] -= RATE * grad / squares[b].sqrt();
            }
            bias_square += g * g;
            bias -= RATE * g / bias_square.sqrt();
        }
    }
    Raw { weights, bias }
}

/// The margin above which a share `fpr` of the benign margins lie.
pub fn threshold(benign: &[f32], fpr: f64) -> f32 {
    let mut sorted = benign.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    if sorted.is_empty() {
        return 0.0;
    }
    match (fpr * sorted.len() as f64).floor() as usize {
        0 => sorted[0] + 1e-3,
        k => (sorted[k - 1] + sorted[k]) / 2.0,
    }
}

/// Out-of-fold margins of the texts the judge will see (`MIN_WORDS` and up), jailbreaks
/// then benign. `fold_of` deals the examples into `folds` groups.
pub fn cross_validate(
    examples: &[&Example],
    folds: usize,
    fold_of: impl Fn(usize) -> usize,
) -> (Vec<f32>, Vec<f32>) {
    let (mut positive, mut negative) = (Vec::new(), Vec::new());
    for k in 0..folds {
        let train_on: Vec<&Example> = examples
            .iter()
            .enumerate()
            .filter(|(i, _)| fold_of(*i) != k)
            .map(|(_, e)| *e)
            .collect();
        let model = train(&train_on);
        let held = examples
            .iter()
            .enumerate()
            .filter(|(i, _)| fold_of(*i) == k);
        for (_, e) in held.filter(|(_, e)| e.words >= learned::MIN_WORDS) {
            let into = if e.jailbreak {
                &mut positive
            } else {
                &mut negative
            };
            into.push(model.margin(e));
        }
    }
    (positive, negative)
}

/// A calibrated model and the out-of-fold margins its operating points came from.
pub struct Fit {
    pub model: LinearModel,
    pub block_margin: f32,
    pub flag_margin: f32,
    pub positive: Vec<f32>,
    pub negative: Vec<f32>,
}

/// Trains on all of `examples` and rescales so the out-of-fold flag margin lands on 0.5
/// and the block margin on 0.8 (logit ln 4).
pub fn fit(examples: &[&Example], folds: usize, fold_of: impl Fn(usize) -> usize) -> Fit {
    let (positive, negative) = cross_validate(examples, folds, fold_of);
    let block = threshold(&negative, BLOCK_FPR);
    let flag = threshold(&negative, FLAG_FPR).min(block - 1e-3);
    let raw = train(examples);
    let stretch = 4.0f32.ln() / (block - flag);
    let weights: Vec<f32> = raw.weights.iter().map(|w| w * stretch).collect();
    let bias = (raw.bias - flag) * stretch;
    Fit {
        model: LinearModel::quantise(&weights, bias),
        block_margin: block,
        flag_margin: flag,
        positive,
        negative,
    }
}

/// Balances families: each example weighs `(mean family size / its family size)^power`,
/// so with `power` 0.5 a family of 1,000 rows counts about 3 times one of 100, not 10.
pub fn balance(examples: &mut [Example], family_of: &[usize], power: f32) {
    let families = family_of.iter().max().map_or(0, |m| m + 1);
    let mut sizes = vec![0usize; families];
    family_of.iter().for_each(|&f| sizes[f] += 1);
    let present = sizes.iter().filter(|&&n| n > 0).count().max(1);
    let mean = examples.len() as f32 / present as f32;
    for (e, &f) in examples.iter_mut().zip(family_of) {
        e.weight = (mean / sizes[f] as f32).powf(power);
    }
}
