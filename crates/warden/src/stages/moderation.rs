//! Input moderation: sends what the cache has not seen of the request's text and images
//! to the Moderation endpoint and applies the per-category policy. A block is a 400
//! `content_filter` naming the field and categories; the request never goes upstream.
//!
//! In `parallel` mode (per key) the verdict is not awaited here: it is left in the
//! context as a [`Deferred`] verdict that the pipeline races with the upstream call,
//! releasing nothing to the client until it passes (`pipeline::deferred`). A verdict the
//! cache can give at once is settled here, as in `strict` mode.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use crate::config::moderation::Mode;
use crate::endpoint::Endpoint;
use crate::error::ContentFilter;
use crate::error::WardenError;
use crate::events::flags::{self, Flag};
use crate::pipeline::deferred::{Deferred, Settled};
use crate::pipeline::{Finding, RequestContext, Stage, StageResult, Step, Verdict};
use crate::safety::moderation::client::Failure;
use crate::safety::moderation::pieces;
use crate::safety::moderation::{Checked, Moderator, Side, Unavailable};

const STAGE: &str = "moderation";

/// What the Moderation endpoint (or its cache) made of the input.
pub type Judged = Result<Checked, Unavailable>;

type Judging = Pin<Box<dyn Future<Output = Judged> + Send>>;

/// Whether a verdict lets the request go on (a fail-open counts as passing).
pub fn passes(judged: &Judged) -> bool {
    matches!(judged, Ok(checked) if checked.blocked.is_empty())
}

pub struct Moderate {
    moderator: Arc<Moderator>,
}

impl Moderate {
    pub fn new(moderator: Arc<Moderator>) -> Self {
        Self { moderator }
    }

    /// The verdict as a future that owns what it needs, so it can outlive the stage.
    fn judging(&self, ctx: &RequestContext) -> Option<Judging> {
        ctx.body.as_ref()?;
        let pieces = pieces::of_request(&ctx.texts);
        if pieces.is_empty() {
            return None;
        }
        let moderator = self.moderator.clone();
        let key = ctx.key.clone();
        Some(Box::pin(async move {
            moderator.check(Side::Input, &pieces, key.as_deref()).await
        }))
    }
}

/// Applies a verdict to the request: findings, audit flags, and the block or 503.
pub fn settle(ctx: &mut RequestContext, judged: Judged) -> StageResult {
    let checked = judged.map_err(|Unavailable(why)| {
        // No key to call the endpoint with: a retry will not help, say what is missing.
        if why == Failure::NoKey {
            return WardenError::NoUpstreamKey;
        }
        tracing::warn!(request_id = %ctx.request_id, reason = why.label(), "input moderation unavailable; refusing (on_error = block)");
        WardenError::ModerationUnavailable(why.label())
    })?;
    if let Some(why) = checked.failed_open {
        ctx.findings.push(Finding::FailOpen {
            side: Side::Input,
            reason: why.label(),
        });
        ctx.audit
            .flags
            .push(Flag::new(STAGE, flags::FAIL_OPEN).rule(why.label()));
    } else {
        ctx.audit.moderated = true;
    }
    let newest = match &checked.flagged[..] {
        [] => None,
        _ => ctx.texts.newest_item(),
    };
    for hit in &checked.flagged {
        // A replayed earlier turn (its scores come from the cache) was counted when new.
        let replayed = newest.as_deref().is_some_and(|n| !hit.param.starts_with(n));
        ctx.findings.push(Finding::ModerationFlag {
            param: hit.param.clone(),
            categories: hit.categories.owned_names(),
            replayed,
        });
        ctx.audit.flags.push(flags::of_hit(STAGE, flags::FLAG, hit));
    }
    match checked.blocked.into_iter().next() {
        Some(hit) => Err(WardenError::ContentFiltered(Box::new(ContentFilter::from(
            hit,
        )))),
        None => Ok(Verdict::Allow),
    }
}

impl Stage for Moderate {
    fn name(&self) -> &'static str {
        STAGE
    }

    fn run<'a>(&'a self, ctx: &'a mut RequestContext) -> Step<'a> {
        // The Moderations endpoint is itself the check; models carry no content.
        let skip = !self.moderator.config().enabled
            || matches!(
                ctx.endpoint,
                Endpoint::Moderations | Endpoint::Models | Endpoint::Model
            );
        if skip {
            return Step::Ready(Ok(Verdict::Allow));
        }
        let Some(mut judging) = self.judging(ctx) else {
            return Step::Ready(Ok(Verdict::Allow));
        };
        let (mode, _) = self.moderator.config().for_key(ctx.key_name());
        Step::Pending(Box::pin(async move {
            if mode == Mode::Parallel {
                // One poll answers from the cache (or starts the call); only a verdict
                // that really has to wait is left for the proxy.
                let polled =
                    std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut judging).poll(cx))).await;
                if let Poll::Ready(judged) = polled {
                    return settle(ctx, judged);
                }
                ctx.deferred = Some(Deferred::new(STAGE, async move {
                    let judged = judging.await;
                    Settled::new(passes(&judged), move |ctx| settle(ctx, judged))
                }));
                return Ok(Verdict::Allow);
            }
            let judged = judging.await;
            settle(ctx, judged)
        }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::config::EndUserPolicy;
    use crate::safety::moderation::tests::{config, Fake};
    use crate::stages::testing::{context, key};
    use std::sync::atomic::Ordering;

    fn stage(toml: &str) -> (Moderate, Arc<Fake>) {
        let fake = Arc::new(Fake::default());
        let moderator = Moderator::new(config(toml), fake.clone());
        (Moderate::new(Arc::new(moderator)), fake)
    }

    async fn check(stage: &Moderate, ctx: &mut RequestContext) -> StageResult {
        match stage.run(ctx) {
            Step::Ready(result) => result,
            Step::Pending(future) => future.await,
        }
    }

    fn chat(text: &str) -> RequestContext {
        let body =
            serde_json::json!({"model": "m", "messages": [{"role": "user", "content": text}]});
        context(
            key("app", EndUserPolicy::Optional, false),
            body.to_string().as_bytes(),
        )
    }

    #[tokio::test]
    async fn blocks_with_param_and_categories() {
        let (stage, _) = stage("");
        let err = check(&stage, &mut chat("FLAG:self-harm/intent now"))
            .await
            .unwrap_err();
        assert_eq!(err.code(), "content_filter");
        assert_eq!(err.status(), 400);
        let response = err.to_response("r");
        let v: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
        assert_eq!(v["error"]["param"], "messages[0].content");
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("self-harm/intent"));
        assert_eq!(
            v["error"]["innererror"]["content_filter_result"]["self-harm/intent"]["filtered"],
            true
        );
    }

    #[tokio::test]
    async fn clean_passes_and_flags_become_findings() {
        let (stage, _) = stage("[categories.hate]\naction = \"flag\"");
        let mut ctx = chat("FLAG:hate but allowed");
        assert_eq!(check(&stage, &mut ctx).await.unwrap(), Verdict::Allow);
        assert_eq!(ctx.findings.len(), 1);
        assert!(ctx.findings[0].to_string().contains("hate"));
    }

    #[tokio::test]
    async fn failure_is_503_or_a_recorded_fail_open() {
        let (closed, fake) = stage("");
        fake.failing.store(true, Ordering::SeqCst);
        let err = check(&closed, &mut chat("hi")).await.unwrap_err();
        assert_eq!(err.status(), 503);
        assert_eq!(err.code(), "moderation_unavailable");

        let (open, fake) = stage("on_error = \"allow\"");
        fake.failing.store(true, Ordering::SeqCst);
        let mut ctx = chat("hi");
        assert_eq!(check(&open, &mut ctx).await.unwrap(), Verdict::Allow);
        assert!(ctx.findings[0]
            .to_string()
            .starts_with("moderation:fail_open:"));
    }

    #[tokio::test]
    async fn parallel_leaves_a_slow_verdict_pending_and_settles_a_quick_one() {
        let (stage, fake) = stage("mode = \"parallel\"");
        fake.delay_ms.store(50, Ordering::SeqCst);
        let mut ctx = chat("FLAG:hate, slowly");
        assert_eq!(check(&stage, &mut ctx).await.unwrap(), Verdict::Allow);
        let pending = ctx.deferred.take().unwrap();
        let settled = pending.await;
        assert!(!settled.passes);
        ctx.trail.push(crate::pipeline::StageRecord {
            stage: STAGE,
            verdict: Some(Verdict::Allow),
            micros: 0,
        });
        let err = crate::pipeline::deferred::settle(&mut ctx, STAGE, settled).unwrap_err();
        assert_eq!(err.code(), "content_filter");
        assert_eq!(ctx.trail[0].verdict, None);

        // A verdict ready at the first poll is settled in the stage, as in strict mode.
        fake.delay_ms.store(0, Ordering::SeqCst);
        let mut ctx = chat("FLAG:hate, at once");
        assert_eq!(
            check(&stage, &mut ctx).await.unwrap_err().code(),
            "content_filter"
        );
        assert!(ctx.deferred.is_none());
    }

    #[test]
    fn moderations_endpoint_is_not_moderated() {
        let (stage, fake) = stage("");
        let mut ctx = chat("FLAG:hate");
        ctx.endpoint = Endpoint::Moderations;
        assert!(matches!(
            stage.run(&mut ctx),
            Step::Ready(Ok(Verdict::Allow))
        ));
        assert_eq!(fake.calls.load(Ordering::SeqCst), 0);
    }
}
