//! The distillation detector: an actor (key or end user) harvesting answers shows
//! sustained volume, templated near-duplicate prompts, structured (JSON) output, several
//! choices or logprobs per request, and long outputs. Each signal is a share of the
//! actor's recent requests; their weighted sum is a score of 0-100 with its reasons.

use std::collections::VecDeque;

use serde::Serialize;

use super::observation::Shape;
use super::simhash::{distance, NEAR_DUPLICATE_BITS};

/// Recent requests kept per actor (also the near-duplicate search width).
const MAX_SAMPLES: usize = 200;
/// An output of at least this many tokens counts as long.
pub const LONG_OUTPUT_TOKENS: u64 = 1_000;

/// Points each signal adds at full strength; they sum to 100.
const W_VOLUME: f64 = 20.0;
const W_TEMPLATED: f64 = 35.0;
const W_STRUCTURED: f64 = 20.0;
const W_CHOICES: f64 = 10.0;
const W_LOGPROBS: f64 = 10.0;
const W_LONG: f64 = 5.0;

#[derive(Debug, Clone)]
struct Sample {
    at_ms: i64,
    /// A near-duplicate of an earlier prompt in the window.
    near_duplicate: bool,
    fingerprint: Option<u64>,
    shape: Shape,
}

#[derive(Debug, Clone, Default)]
pub struct Distillation {
    samples: VecDeque<Sample>,
    outputs: VecDeque<(i64, bool)>,
    /// Requests in the window per minute, oldest first (samples only keep the last
    /// `MAX_SAMPLES`): at most one entry per minute of the window, whatever the volume.
    volume: VecDeque<(i64, u64)>,
}

const MINUTE_MS: i64 = 60_000;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DistillationScore {
    pub score: u8,
    pub requests: usize,
    pub reasons: Vec<String>,
}

pub struct Window {
    pub window_ms: i64,
    pub min_requests: u64,
    pub volume: u64,
}

impl Distillation {
    pub fn record(&mut self, at_ms: i64, fingerprint: Option<u64>, shape: Shape, w: &Window) {
        self.forget(at_ms, w.window_ms);
        let near_duplicate = fingerprint.is_some_and(|f| {
            self.samples
                .iter()
                .filter_map(|s| s.fingerprint)
                .any(|g| distance(f, g) <= NEAR_DUPLICATE_BITS)
        });
        if self.samples.len() == MAX_SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back(Sample {
            at_ms,
            near_duplicate,
            fingerprint,
            shape,
        });
        let minute = at_ms.div_euclid(MINUTE_MS);
        match self.volume.back_mut() {
            Some((m, n)) if *m == minute => *n += 1,
            _ => self.volume.push_back((minute, 1)),
        }
    }

    fn requests(&self) -> u64 {
        self.volume.iter().map(|(_, n)| n).sum()
    }

    pub fn record_output(&mut self, at_ms: i64, tokens: u64, window_ms: i64) {
        self.forget(at_ms, window_ms);
        if self.outputs.len() == MAX_SAMPLES {
            self.outputs.pop_front();
        }
        self.outputs
            .push_back((at_ms, tokens >= LONG_OUTPUT_TOKENS));
    }

    fn forget(&mut self, now_ms: i64, window_ms: i64) {
        let cutoff = now_ms - window_ms;
        while self.samples.front().is_some_and(|s| s.at_ms <= cutoff) {
            self.samples.pop_front();
        }
        while self.outputs.front().is_some_and(|o| o.0 <= cutoff) {
            self.outputs.pop_front();
        }
        // A minute counts while any of it is inside the window.
        while self
            .volume
            .front()
            .is_some_and(|(m, _)| (m + 1) * MINUTE_MS <= cutoff)
        {
            self.volume.pop_front();
        }
    }

    /// The score over the window; `None` until the actor sent `min_requests`.
    pub fn score(&mut self, now_ms: i64, w: &Window) -> Option<DistillationScore> {
        self.forget(now_ms, w.window_ms);
        let n = self.samples.len();
        let requests = self.requests();
        if requests < w.min_requests || n == 0 {
            return None;
        }
        let share = |f: &dyn Fn(&Sample) -> bool| {
            self.samples.iter().filter(|s| f(s)).count() as f64 / n as f64
        };
        let volume = (requests as f64 / w.volume as f64).min(1.0);
        let templated = share(&|s| s.near_duplicate);
        let structured = share(&|s| s.shape.structured);
        let choices = share(&|s| s.shape.many_choices);
        let logprobs = share(&|s| s.shape.logprobs);
        let long = if self.outputs.is_empty() {
            0.0
        } else {
            self.outputs.iter().filter(|o| o.1).count() as f64 / self.outputs.len() as f64
        };
        let mut reasons = Vec::new();
        let mut total = 0.0;
        let mut add = |weight: f64, value: f64, why: String| {
            let points = weight * value;
            total += points;
            if points >= 2.0 {
                reasons.push(format!("{why} (+{points:.0})"));
            }
        };
        add(
            W_VOLUME,
            volume,
            format!("{requests} requests in the window"),
        );
        add(
            W_TEMPLATED,
            templated,
            format!(
                "{:.0}% near-duplicate or templated prompts",
                templated * 100.0
            ),
        );
        add(
            W_STRUCTURED,
            structured,
            format!("{:.0}% ask for JSON output", structured * 100.0),
        );
        add(
            W_CHOICES,
            choices,
            format!("{:.0}% ask for n > 1", choices * 100.0),
        );
        add(
            W_LOGPROBS,
            logprobs,
            format!("{:.0}% ask for logprobs", logprobs * 100.0),
        );
        add(
            W_LONG,
            long,
            format!(
                "{:.0}% of outputs over {LONG_OUTPUT_TOKENS} tokens",
                long * 100.0
            ),
        );
        Some(DistillationScore {
            score: total.round().clamp(0.0, 100.0) as u8,
            requests: requests as usize,
            reasons,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::simhash::simhash;
    use super::*;

    const W: Window = Window {
        window_ms: 3_600_000,
        min_requests: 20,
        volume: 500,
    };

    #[test]
    fn harvesting_scores_high_and_varied_chat_low() {
        let mut harvest = Distillation::default();
        let mut chat = Distillation::default();
        let topics = [
            "How do I fix a leaking kitchen tap?",
            "Write a haiku about autumn rain in Kyoto",
            "Summarise the causes of the French revolution",
            "What is the time complexity of quicksort and why?",
            "Suggest a name for my golden retriever puppy",
            "Translate 'good morning, how are you' into Spanish",
            "Why is the sky blue during the day but red at sunset?",
            "Give me three ideas for a birthday party for a 7 year old",
            "Explain how a mortgage amortization schedule works",
            "Help me write a polite email declining a meeting",
        ];
        for i in 0..40 {
            let prompt = format!("Generate a JSON object describing product #{i} with fields name, price, category and a 200-word description.");
            let shape = Shape {
                structured: true,
                many_choices: true,
                logprobs: true,
            };
            harvest.record(i * 1000, simhash(&prompt), shape, &W);
            chat.record(
                i * 1000,
                simhash(topics[i as usize % topics.len()]),
                Shape::default(),
                &W,
            );
        }
        let h = harvest.score(40_000, &W).unwrap();
        assert!(h.score >= 70, "{h:?}");
        assert!(h.reasons.iter().any(|r| r.contains("near-duplicate")));
        let c = chat.score(40_000, &W).unwrap();
        // Ten topics repeat four times each: real repetition, but no other signal.
        assert!(c.score < 40, "{c:?}");
    }

    #[test]
    fn too_few_requests_give_no_score_and_old_ones_slide_out() {
        let mut d = Distillation::default();
        for i in 0..19 {
            d.record(i, None, Shape::default(), &W);
        }
        assert!(d.score(20, &W).is_none());
        d.record(20, None, Shape::default(), &W);
        assert!(d.score(21, &W).is_some());
        assert!(d.score(3_700_000, &W).is_none());
    }
}
