//! Moderation through OpenAI's Moderation endpoint: one call per request for whatever
//! the cache has not seen, judged by a per-category policy, guarded by a circuit breaker.
//!
//! Wire shape, and why: text goes as a `string[]` (the endpoint answers one result per
//! string), so every chunk's result maps back to its field and is cached on its own —
//! that is what makes a conversation cost one input per new message. A parts array
//! would get ONE result for everything, so images (which need the parts form) go in a
//! second, concurrent call holding only the images; its single result is attributed to
//! every image in it. A text-only request (the usual case) is exactly one call.

pub mod cache;
pub mod categories;
pub mod client;
pub mod pieces;
pub mod policy;
mod reconfigure;
pub mod refusal;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use serde_json::{json, Value};

use self::cache::{content_key, ContentKey, ScoreCache};
use self::categories::{CategorySet, Scores};
use self::client::{Backend, Failure};
use self::pieces::{chunks, Content, Piece};
use crate::breaker::Breaker;
use crate::config::moderation::{ModerationConfig, OnError};
use crate::keys::VirtualKey;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Input,
    Output,
}

/// A field whose categories fired.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub param: String,
    pub categories: CategorySet,
    pub scores: Scores,
}

#[derive(Debug, Default)]
pub struct Checked {
    /// Fields that must be blocked, in request order.
    pub blocked: Vec<Hit>,
    /// Fields whose categories fired with action `flag`.
    pub flagged: Vec<Hit>,
    /// The endpoint failed and `on_error = "allow"` let the content through unchecked.
    pub failed_open: Option<Failure>,
}

/// The endpoint failed and `on_error = "block"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable(pub Failure);

/// Totals since start, for the benchmark and metrics.
#[derive(Debug, Default)]
pub struct Totals {
    pub calls: AtomicU64,
    pub inputs: AtomicU64,
    pub bytes: AtomicU64,
    pub cache_hits: AtomicU64,
}

pub struct Moderator {
    config: ModerationConfig,
    backend: Arc<dyn Backend>,
    // Shared with the moderators of later config generations (see `reconfigure.rs`).
    cache: Arc<ScoreCache>,
    breaker: Arc<Breaker>,
    pub totals: Arc<Totals>,
    /// Lockdown's stricter policies while lockdown is on.
    lowered: arc_swap::ArcSwapOption<Lowered>,
}

/// Lockdown's (input, output) policies: the global ones and each key's own.
struct Lowered {
    global: (policy::Policy, policy::Policy),
    keys: HashMap<String, (policy::Policy, policy::Policy)>,
}

impl Moderator {
    pub fn new(config: ModerationConfig, backend: Arc<dyn Backend>) -> Self {
        Self {
            cache: Arc::new(ScoreCache::new(config.cache_entries, config.cache_ttl)),
            breaker: Arc::new(Breaker::new(
                "moderation",
                config.breaker_failures,
                config.breaker_cooldown,
            )),
            config,
            backend,
            totals: Arc::default(),
            lowered: arc_swap::ArcSwapOption::empty(),
        }
    }

    /// Lockdown on (`Some((threshold_factor, score_line))`) or off: see `Policy::lowered`.
    pub fn set_lockdown(&self, lowered: Option<(f32, f32)>) {
        self.lowered.store(lowered.map(|(factor, line)| {
            let pair = |input: &policy::Policy, output: &policy::Policy| {
                (input.lowered(factor, line), output.lowered(factor, line))
            };
            Arc::new(Lowered {
                global: pair(&self.config.input, &self.config.output.policy),
                keys: self
                    .config
                    .keys
                    .iter()
                    .filter(|k| k.input.is_some() || k.output.is_some())
                    .map(|k| {
                        let (input, output) = self.config.policies(Some(&k.key));
                        (k.key.clone(), pair(input, output))
                    })
                    .collect(),
            })
        }));
    }

    pub fn config(&self) -> &ModerationConfig {
        &self.config
    }

    /// Moderates `pieces` for `side`; `Err` only when the endpoint failed and this key's
    /// `on_error` is `block` (a definite block found in the cache still wins).
    pub async fn check(
        &self,
        side: Side,
        pieces: &[Piece],
        key: Option<&VirtualKey>,
    ) -> Result<Checked, Unavailable> {
        let model = self.config.model.as_str();
        let mut known: Vec<Option<Scores>> = vec![None; pieces.len()];
        // Unique uncached text chunks to send, and which pieces wait on each.
        let mut texts: Vec<(ContentKey, &str)> = Vec::new();
        let mut slot: HashMap<ContentKey, usize> = HashMap::new();
        let mut waiting: Vec<(usize, usize)> = Vec::new();
        let mut images: Vec<(usize, ContentKey, &str)> = Vec::new();
        let mut hits = 0u64;
        for (p, piece) in pieces.iter().enumerate() {
            match &piece.content {
                Content::Text(text) => {
                    for chunk in chunks(text, self.config.chunk_chars) {
                        let ck = content_key(model, b't', chunk);
                        if let Some(scores) = self.cache.get(&ck) {
                            hits += 1;
                            merge(&mut known[p], scores);
                            continue;
                        }
                        let at = *slot.entry(ck).or_insert_with(|| {
                            texts.push((ck, chunk));
                            texts.len() - 1
                        });
                        waiting.push((p, at));
                    }
                }
                Content::Image(url) => {
                    let ck = content_key(model, b'i', url);
                    match self.cache.get(&ck) {
                        Some(scores) => {
                            hits += 1;
                            merge(&mut known[p], scores);
                        }
                        None => images.push((p, ck, url)),
                    }
                }
            }
        }
        self.totals.cache_hits.fetch_add(hits, Ordering::Relaxed);

        let mut failure = None;
        if !texts.is_empty() || !images.is_empty() {
            if let Ok(permit) = self.breaker.admit() {
                let (text_answer, image_answer) = futures_util::future::join(
                    self.call_texts(key, &texts),
                    self.call_images(key, &images),
                )
                .await;
                match text_answer {
                    Ok(results) => {
                        for ((ck, _), scores) in texts.iter().zip(&results) {
                            self.cache.insert(*ck, *scores);
                        }
                        for (p, at) in &waiting {
                            if let Some(scores) = results.get(*at) {
                                merge(&mut known[*p], *scores);
                            }
                        }
                    }
                    Err(why) => failure = Some(why),
                }
                match image_answer {
                    Ok(Some(scores)) => {
                        for (p, ck, _) in &images {
                            // A clean set means each image is clean; a flagged set
                            // cannot say which one, so only clean results are cached.
                            if scores.flagged.is_empty() {
                                self.cache.insert(*ck, scores);
                            }
                            merge(&mut known[*p], scores);
                        }
                    }
                    Ok(None) => {}
                    Err(why) => failure = failure.or(Some(why)),
                }
                match failure {
                    None => permit.success(),
                    Some(_) => permit.failure(),
                }
            } else {
                failure = Some(Failure::CircuitOpen);
            }
        }

        let key_name = key.map(|k| k.name.as_str());
        let (input, output) = self.config.policies(key_name);
        let policy = match side {
            Side::Input => input,
            Side::Output => output,
        };
        let lowered = self.lowered.load();
        let lowered = lowered.as_deref().map(|l| {
            let (input, output) = key_name.and_then(|k| l.keys.get(k)).unwrap_or(&l.global);
            match side {
                Side::Input => input,
                Side::Output => output,
            }
        });
        let mut checked = Checked::default();
        for (piece, scores) in pieces.iter().zip(&known) {
            let Some(scores) = scores else { continue };
            let judgement = match lowered {
                Some(strict) => policy.judge_lowered(strict, scores),
                None => policy.judge(scores),
            };
            let hit = |categories| Hit {
                param: piece.param.clone(),
                categories,
                scores: *scores,
            };
            if !judgement.blocked.is_empty() {
                checked.blocked.push(hit(judgement.blocked));
            }
            if !judgement.flagged.is_empty() {
                checked.flagged.push(hit(judgement.flagged));
            }
        }
        if let Some(why) = failure {
            if !checked.blocked.is_empty() {
                return Ok(checked);
            }
            let (_, on_error) = self.config.for_key(key.map(|k| k.name.as_str()));
            match on_error {
                OnError::Block => return Err(Unavailable(why)),
                OnError::Allow => {
                    tracing::warn!(
                        key = key.map(|k| k.name.as_str()),
                        side = ?side,
                        reason = why.label(),
                        "moderation failed; content allowed unchecked (on_error = allow)"
                    );
                    checked.failed_open = Some(why);
                }
            }
        }
        Ok(checked)
    }

    async fn call_texts(
        &self,
        key: Option<&VirtualKey>,
        texts: &[(ContentKey, &str)],
    ) -> Result<Vec<Scores>, Failure> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let input: Vec<&str> = texts.iter().map(|(_, t)| *t).collect();
        let bytes = input.iter().map(|t| t.len() as u64).sum();
        let results = self.call(key, json!(input), texts.len(), bytes).await?;
        if results.len() != texts.len() {
            return Err(Failure::BadAnswer);
        }
        Ok(results)
    }

    async fn call_images(
        &self,
        key: Option<&VirtualKey>,
        images: &[(usize, ContentKey, &str)],
    ) -> Result<Option<Scores>, Failure> {
        if images.is_empty() {
            return Ok(None);
        }
        let parts: Vec<Value> = images
            .iter()
            .map(|(_, _, url)| json!({"type": "image_url", "image_url": {"url": url}}))
            .collect();
        let bytes = images.iter().map(|(_, _, u)| u.len() as u64).sum();
        let results = self
            .call(key, Value::Array(parts), images.len(), bytes)
            .await?;
        results.first().copied().map(Some).ok_or(Failure::BadAnswer)
    }

    async fn call(
        &self,
        key: Option<&VirtualKey>,
        input: Value,
        inputs: usize,
        bytes: u64,
    ) -> Result<Vec<Scores>, Failure> {
        self.totals.calls.fetch_add(1, Ordering::Relaxed);
        self.totals
            .inputs
            .fetch_add(inputs as u64, Ordering::Relaxed);
        self.totals.bytes.fetch_add(bytes, Ordering::Relaxed);
        let body = Bytes::from(json!({"model": self.config.model, "input": input}).to_string());
        match tokio::time::timeout(self.config.timeout, self.backend.moderate(key, body)).await {
            Ok(answer) => answer,
            Err(_) => Err(Failure::Timeout),
        }
    }
}

fn merge(slot: &mut Option<Scores>, scores: Scores) {
    *slot = Some(match slot.take() {
        Some(seen) => seen.worst(scores),
        None => scores,
    });
}

#[cfg(test)]
pub(crate) mod tests;
