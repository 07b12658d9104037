//! Output moderation on the way back to the client. Used only when output moderation is
//! on for the endpoint; otherwise the handler keeps the zero-copy `RelayBody`.
//! Non-streamed answers are buffered (bounded), moderated, and rewritten on a block;
//! event streams go through the hold-back relay in `stream`.
//!
//! TODO(local filters): output checks should also run the local filter scanner
//! (`safety::filters`, e.g. a model echoing a secret) once it is wired; the hook is
//! `moderate_pieces` here and `Relay::check` in `stream`.

pub mod stream;
pub mod text;

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
use crate::pipeline::RequestContext;
use crate::safety::moderation::{Moderator, Side};

/// The stage name output findings carry in events.
pub const OUTPUT_STAGE: &str = "output_moderation";

/// Whether this answer gets output moderation: successful answers of the endpoints
/// that carry model text.
pub fn applies(moderator: &Moderator, ctx: &RequestContext, head: &Parts) -> bool {
    let config = moderator.config();
    config.enabled
        && config.output.enabled
        && head.status.is_success()
        && matches!(
            ctx.endpoint,
            Endpoint::ChatCompletions | Endpoint::Responses | Endpoint::Completions
        )
}

/// Builds the client's response for a moderated answer.
pub async fn respond(
    moderator: Arc<Moderator>,
    ctx: &RequestContext,
    mut head: Parts,
    upstream: crate::proxy::upstream::UpstreamBody,
    mut recorder: Recorder,
    mut observers: Vec<Box<dyn ResponseObserver>>,
    is_sse: bool,
) -> Response<ProxyBody> {
    head.headers.remove(http::header::CONTENT_LENGTH);
    if is_sse {
        let relay = stream::Relay {
            moderator,
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
    let (bytes, blocked) = match moderate_answer(&moderator, ctx, &answer, &mut recorder).await {
        Ok(result) => result,
        Err(err) => return refuse(recorder, observers, err, &ctx.request_id).await,
    };
    for observer in &mut observers {
        observer.frame(&bytes);
        observer.end(RelayEnd::Complete);
    }
    match blocked {
        Some(categories) => {
            recorder.note("moderation", &format!("output_block:{categories}"));
            recorder
                .close_durable(Outcome::Blocked, Some("output_content_filter"))
                .await;
        }
        None => {
            recorder.persist_flags().await;
            recorder.finish(Outcome::Allowed, None);
        }
    }
    Response::from_parts(head, ProxyBody::full(bytes))
}

/// The answer to send, and the categories that blocked part of it.
async fn moderate_answer(
    moderator: &Moderator,
    ctx: &RequestContext,
    answer: &Bytes,
    recorder: &mut Recorder,
) -> Result<(Bytes, Option<String>), WardenError> {
    let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(answer) else {
        // Not JSON: nothing Warden can read as model text.
        return Ok((answer.clone(), None));
    };
    let pieces = text::of_answer(ctx.endpoint, &value);
    if pieces.is_empty() {
        return Ok((answer.clone(), None));
    }
    let checked = moderator
        .check(Side::Output, &pieces, ctx.key.as_deref())
        .await
        .map_err(|u| WardenError::ModerationUnavailable(u.0.label()))?;
    if let Some(why) = checked.failed_open {
        recorder.note("moderation", &format!("output_fail_open:{}", why.label()));
        recorder.flag(Flag::new(OUTPUT_STAGE, flags::FAIL_OPEN).rule(why.label()));
    }
    for hit in &checked.flagged {
        recorder.note(
            "moderation",
            &format!("output_flag:{}", hit.categories.names().join(",")),
        );
        recorder.flag(flags::of_hit(OUTPUT_STAGE, flags::FLAG, hit));
    }
    for hit in &checked.blocked {
        recorder.flag(flags::of_hit(OUTPUT_STAGE, flags::BLOCK, hit));
    }
    if checked.blocked.is_empty() {
        return Ok((answer.clone(), None));
    }
    let indexes: Vec<usize> = checked
        .blocked
        .iter()
        .filter_map(|hit| text::leading_index(&hit.param))
        .collect();
    let mut categories: Vec<&str> = checked
        .blocked
        .iter()
        .flat_map(|hit| hit.categories.names())
        .collect();
    categories.dedup();
    text::withhold(ctx.endpoint, &mut value, &indexes);
    Ok((Bytes::from(value.to_string()), Some(categories.join(","))))
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
