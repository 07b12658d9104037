//! Output checks on the way back to the client: output moderation (the Moderation
//! endpoint) and the local filters (`filters`, `guard`: secrets redacted or blocked, PII
//! recorded), each when on for the key. Otherwise the handler keeps the zero-copy
//! `RelayBody`. Non-streamed answers are buffered (bounded), checked, and rewritten on a
//! redaction or block; event streams go through the hold-back relay in `stream`.

pub mod filters;
pub mod guard;
pub mod stream;

use std::sync::Arc;

use bytes::Bytes;
use http::response::Parts;
use http::Response;
use http_body_util::BodyExt;

use super::body::ProxyBody;
use super::observe::{RelayEnd, ResponseObserver};
use super::recorder::{Outcome, Recorder};
use crate::endpoint::Endpoint;
use crate::error::WardenError;
use crate::events::flags::{self, Flag};
use crate::openai::response_text as text;
use crate::pipeline::{Finding, RequestContext};
use crate::safety::filters::Scanner;
use crate::safety::moderation::{Moderator, Side};
use crate::safety::profiles::KeyFilters;

/// The stage name output findings carry in events.
pub const OUTPUT_STAGE: &str = "output_moderation";

/// Which checks an answer gets.
pub struct Checks {
    pub moderator: Arc<Moderator>,
    /// Output moderation is on.
    pub moderate: bool,
    /// The key's local filters, when on.
    pub scanner: Option<Arc<Scanner>>,
}

/// The checks for this answer: successful answers of the endpoints that carry model
/// text, when output moderation or the key's local filters are on.
pub fn checks(
    moderator: &Arc<Moderator>,
    filters: &KeyFilters,
    ctx: &RequestContext,
    head: &Parts,
) -> Option<Checks> {
    if !head.status.is_success()
        || !matches!(
            ctx.endpoint,
            Endpoint::ChatCompletions | Endpoint::Responses | Endpoint::Completions
        )
    {
        return None;
    }
    let config = moderator.config();
    let moderate = config.enabled && config.output.enabled;
    let scanner = Some(filters.for_key(ctx.key_name()))
        .filter(|s| s.enabled())
        .cloned();
    (moderate || scanner.is_some()).then(|| Checks {
        moderator: moderator.clone(),
        moderate,
        scanner,
    })
}

/// Builds the client's response for a checked answer.
pub async fn respond(
    checks: Checks,
    ctx: &RequestContext,
    mut head: Parts,
    upstream: crate::proxy::upstream::UpstreamBody,
    mut recorder: Recorder,
    mut observers: Vec<Box<dyn ResponseObserver>>,
    is_sse: bool,
) -> Response<ProxyBody> {
    head.headers.remove(http::header::CONTENT_LENGTH);
    let Checks {
        moderator,
        moderate,
        scanner,
    } = checks;
    if is_sse {
        let param = if ctx.endpoint == Endpoint::Responses {
            "output"
        } else {
            "choices"
        };
        let relay = stream::Relay {
            moderator,
            moderate,
            guard: scanner.map(|s| guard::Guard::new(s, param)),
            key: ctx.key.clone(),
            endpoint: ctx.endpoint,
            recorder: Some(recorder),
            observers,
        };
        return Response::from_parts(head, ProxyBody::Channel(relay.spawn(upstream)));
    }
    let limit = moderator.config().output.max_body_bytes;
    let answer = match http_body_util::Limited::new(upstream, limit)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(err) => {
            tracing::warn!(request_id = %ctx.request_id, error = %err, "upstream answer unreadable or over output.max_body_bytes; withheld");
            return refuse(
                recorder,
                observers,
                WardenError::ModerationUnavailable("output_unreadable"),
                &ctx.request_id,
            )
            .await;
        }
    };
    let checked = check_answer(
        &moderator,
        moderate,
        scanner.as_deref(),
        ctx,
        &answer,
        &mut recorder,
    )
    .await;
    let (bytes, blocked) = match checked {
        Ok(result) => result,
        Err(err) => return refuse(recorder, observers, err, &ctx.request_id).await,
    };
    for observer in &mut observers {
        observer.frame(&bytes);
        observer.end(RelayEnd::Complete);
    }
    if blocked {
        recorder
            .close_durable(Outcome::Blocked, Some("output_content_filter"))
            .await;
    } else {
        recorder.persist_flags().await;
        recorder.finish(Outcome::Allowed, None);
    }
    Response::from_parts(head, ProxyBody::full(bytes))
}

/// The answer to send (redacted, or with blocked choices withheld) and whether a check
/// blocked part of it.
async fn check_answer(
    moderator: &Moderator,
    moderate: bool,
    scanner: Option<&Scanner>,
    ctx: &RequestContext,
    answer: &Bytes,
    recorder: &mut Recorder,
) -> Result<(Bytes, bool), WardenError> {
    let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(answer) else {
        // Not JSON: nothing Warden can read as model text.
        return Ok((answer.clone(), false));
    };
    let mut withheld = Vec::new();
    let mut changed = false;
    if let Some(scanner) = scanner {
        let found = filters::answer(scanner, ctx.endpoint, &mut value);
        for note in found.notes {
            recorder.note(note);
        }
        for flag in found.flags {
            recorder.flag(flag);
        }
        if !found.blocked.is_empty() {
            recorder.note(Finding::OutputBlock {
                categories: found.categories.clone(),
                by_moderation: false,
            });
        }
        withheld.extend(found.blocked);
        changed |= found.changed;
    }
    if moderate {
        // After the filters: moderation sees the answer redacted, never a secret.
        withheld.extend(moderate_answer(moderator, ctx, &value, recorder).await?);
    }
    if !withheld.is_empty() {
        text::withhold(ctx.endpoint, &mut value, &withheld);
        changed = true;
    }
    let bytes = if changed {
        Bytes::from(value.to_string())
    } else {
        answer.clone()
    };
    Ok((bytes, !withheld.is_empty()))
}

/// Output moderation of a whole answer: the choice / output indexes it blocks.
async fn moderate_answer(
    moderator: &Moderator,
    ctx: &RequestContext,
    value: &serde_json::Value,
    recorder: &mut Recorder,
) -> Result<Vec<usize>, WardenError> {
    let pieces = text::of_answer(ctx.endpoint, value);
    if pieces.is_empty() {
        return Ok(Vec::new());
    }
    let checked = moderator
        .check(Side::Output, &pieces, ctx.key.as_deref())
        .await
        .map_err(|u| WardenError::ModerationUnavailable(u.0.label()))?;
    if let Some(why) = checked.failed_open {
        recorder.note(Finding::FailOpen {
            side: crate::pipeline::Side::Output,
            reason: why.label(),
        });
        recorder.flag(Flag::new(OUTPUT_STAGE, flags::FAIL_OPEN).rule(why.label()));
    }
    for hit in &checked.flagged {
        recorder.note(Finding::OutputFlag {
            categories: hit.categories.owned_names(),
        });
        recorder.flag(flags::of_hit(OUTPUT_STAGE, flags::FLAG, hit));
    }
    for hit in &checked.blocked {
        recorder.flag(flags::of_hit(OUTPUT_STAGE, flags::BLOCK, hit));
    }
    if checked.blocked.is_empty() {
        return Ok(Vec::new());
    }
    let mut categories: Vec<&str> = checked
        .blocked
        .iter()
        .flat_map(|hit| hit.categories.names())
        .collect();
    categories.dedup();
    recorder.note(Finding::OutputBlock {
        categories: categories.iter().map(|c| (*c).to_owned()).collect(),
        by_moderation: true,
    });
    Ok(checked
        .blocked
        .iter()
        .filter_map(|hit| text::leading_index(&hit.param))
        .collect())
}

async fn refuse(
    mut recorder: Recorder,
    mut observers: Vec<Box<dyn ResponseObserver>>,
    err: WardenError,
    request_id: &str,
) -> Response<ProxyBody> {
    for observer in &mut observers {
        observer.end(RelayEnd::UpstreamBroke);
    }
    let response = err.to_response(request_id);
    recorder.answered(response.status().as_u16(), None);
    recorder
        .close_durable(Outcome::Failed, Some(err.code()))
        .await;
    response.map(ProxyBody::full)
}
