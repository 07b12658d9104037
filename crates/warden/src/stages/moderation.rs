//! Input moderation: sends what the cache has not seen of the request's text and images
//! to the Moderation endpoint and applies the per-category policy. A block is a 400
//! `content_filter` naming the field and categories; the request never goes upstream.

use std::sync::Arc;

use crate::endpoint::Endpoint;
use crate::error::WardenError;
use crate::events::flags::{self, Flag};
use crate::pipeline::{Finding, RequestContext, Stage, Step, Verdict};
use crate::safety::blocked::ContentFilter;
use crate::safety::moderation::pieces;
use crate::safety::moderation::{Moderator, Side, Unavailable};

pub struct Moderate {
    moderator: Arc<Moderator>,
}

impl Moderate {
    pub fn new(moderator: Arc<Moderator>) -> Self {
        Self { moderator }
    }

    async fn check(&self, ctx: &mut RequestContext) -> Result<Verdict, WardenError> {
        let Some(body) = ctx.body.as_ref() else {
            return Ok(Verdict::Allow);
        };
        let pieces = pieces::of_request(ctx.endpoint, body);
        if pieces.is_empty() {
            return Ok(Verdict::Allow);
        }
        let checked = self
            .moderator
            .check(Side::Input, &pieces, ctx.key.as_deref())
            .await
            .map_err(|Unavailable(why)| {
                tracing::warn!(request_id = %ctx.request_id, reason = why.label(), "input moderation unavailable; refusing (on_error = block)");
                WardenError::ModerationUnavailable(why.label())
            })?;
        if let Some(why) = checked.failed_open {
            ctx.findings.push(Finding {
                stage: "moderation",
                note: format!("fail_open:{}", why.label()),
            });
            ctx.audit
                .flags
                .push(Flag::new("moderation", flags::FAIL_OPEN).rule(why.label()));
        } else {
            ctx.audit.moderated = true;
        }
        for hit in &checked.flagged {
            ctx.findings.push(Finding {
                stage: "moderation",
                note: format!("flag:{}:{}", hit.param, hit.categories.names().join(",")),
            });
            ctx.audit
                .flags
                .push(flags::of_hit("moderation", flags::FLAG, hit));
        }
        match checked.blocked.into_iter().next() {
            Some(hit) => Err(WardenError::ContentFiltered(Box::new(ContentFilter::from(
                hit,
            )))),
            None => Ok(Verdict::Allow),
        }
    }
}

impl Stage for Moderate {
    fn name(&self) -> &'static str {
        "moderation"
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
        Step::Pending(Box::pin(self.check(ctx)))
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
        let err = stage
            .check(&mut chat("FLAG:self-harm/intent now"))
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
        assert_eq!(stage.check(&mut ctx).await.unwrap(), Verdict::Allow);
        assert_eq!(ctx.findings.len(), 1);
        assert!(ctx.findings[0].note.contains("hate"));
    }

    #[tokio::test]
    async fn failure_is_503_or_a_recorded_fail_open() {
        let (closed, fake) = stage("");
        fake.failing.store(true, Ordering::SeqCst);
        let err = closed.check(&mut chat("hi")).await.unwrap_err();
        assert_eq!(err.status(), 503);
        assert_eq!(err.code(), "moderation_unavailable");

        let (open, fake) = stage("on_error = \"allow\"");
        fake.failing.store(true, Ordering::SeqCst);
        let mut ctx = chat("hi");
        assert_eq!(open.check(&mut ctx).await.unwrap(), Verdict::Allow);
        assert!(ctx.findings[0].note.starts_with("fail_open:"));
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
