//! The response path: what happens to upstream's answer on its way to the client. The
//! order, written down once:
//! 1. `head` — upstream's headers filtered for the client (`headers::to_client`), plus the
//!    ones the stages added (the end user's standing).
//!    Then `objects` — an answer that created a stored object has its owner recorded
//!    before the client sees the id; a list keeps only the caller's objects
//!    (`routes::ownership`).
//! 2. `upstream_refusal` — a non-stream 4xx on a request that named an end user is read
//!    whole: if OpenAI refused that user by their safety identifier, Warden suspends them
//!    too. The error is relayed unchanged.
//! 3. `observe` — passive watchers that never change a byte (`proxy::settle`: the token
//!    limits' estimate, spend, the abuse detector's output signal).
//! 4. `output_checks` — local filters and output moderation, on the whole answer or on
//!    stream windows (`proxy::output`).
//! 5. `strip_usage` — the stream's usage-only chunk, when Warden asked for it and the
//!    client did not (`proxy::strip_usage`).
//! 6. `relay` — frames to the client as they come; the request's event is finished when
//!    the body ends, however it ends.

use http::{HeaderValue, Response};

use super::body::{ProxyBody, RelayBody};
use super::handler::refuse;
use super::headers;
use super::recorder::{Outcome, Recorder};
use super::upstream::UpstreamReply as Reply;
use crate::error::WardenError;
use crate::gateway::Gateway;
use crate::pipeline::RequestContext;
use crate::reload::Snapshot;

pub async fn respond(
    gateway: &Gateway,
    snapshot: &Snapshot,
    ctx: &mut RequestContext,
    reply: Reply,
    mut recorder: Recorder,
) -> Response<ProxyBody> {
    // 1. head
    let (mut head, upstream_body) = reply.response.into_parts();
    recorder.answered(head.status.as_u16(), Some(reply.elapsed));
    let request_id =
        HeaderValue::from_str(&ctx.request_id).unwrap_or(HeaderValue::from_static("unknown"));
    head.headers = headers::to_client(&head.headers, &request_id);
    head.headers.extend(ctx.response_headers.drain(..));
    let is_sse = head
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));

    // 1b. objects
    let upstream_body = match crate::routes::ownership::on_answer(
        &gateway.store,
        ctx,
        head.status,
        &mut head.headers,
        upstream_body,
    )
    .await
    {
        Ok(body) => body,
        Err(err) => return refuse(recorder, &err, &ctx.request_id).await,
    };

    // 2. upstream_refusal
    if !is_sse && may_target_user(ctx, head.status) {
        return relay_refusal(gateway, ctx, head, upstream_body, recorder).await;
    }

    // 3. observe
    let observers = gateway
        .observers
        .iter()
        .filter_map(|factory| factory.observe(ctx, &head))
        .collect();

    // 5. strip_usage is decided now, applied around whichever body 4 or 6 builds.
    let strip = is_sse
        && ctx
            .limit_ticket
            .as_ref()
            .is_some_and(|t| t.strip_usage_chunk);

    // 4. output_checks
    if let Some(checks) = super::output::checks(&snapshot.moderator, &snapshot.filters, ctx, &head)
    {
        let response = super::output::respond(
            checks,
            ctx,
            head,
            upstream_body,
            recorder,
            observers,
            is_sse,
        )
        .await;
        return super::strip_usage::wrap(response, strip);
    }

    // 6. relay
    let body = RelayBody::new(
        upstream_body,
        recorder,
        is_sse.then_some(ctx.endpoint),
        observers,
    );
    super::strip_usage::wrap(
        Response::from_parts(head, ProxyBody::Relay(Box::new(body))),
        strip,
    )
}

/// An upstream client error on a request that named an end user: it may be OpenAI
/// refusing that user.
fn may_target_user(ctx: &RequestContext, status: http::StatusCode) -> bool {
    status.is_client_error()
        && status != http::StatusCode::TOO_MANY_REQUESTS
        && ctx.safety_identifier.is_some()
        && ctx.end_user.is_some()
}

/// Error bodies are small: read it whole, suspend the end user if OpenAI refused them by
/// their identifier, and pass the error on unchanged.
async fn relay_refusal(
    gateway: &Gateway,
    ctx: &RequestContext,
    head: http::response::Parts,
    body: super::upstream::UpstreamBody,
    recorder: Recorder,
) -> Response<ProxyBody> {
    use http_body_util::BodyExt;
    const MAX_ERROR_BODY: usize = 256 * 1024;
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        http_body_util::Limited::new(body, MAX_ERROR_BODY).collect(),
    )
    .await;
    let bytes = match read {
        Ok(Ok(collected)) => collected.to_bytes(),
        _ => return refuse(recorder, &WardenError::UpstreamUnavailable, &ctx.request_id).await,
    };
    if let (Some(sid), Some(key), Some(user)) = (
        ctx.safety_identifier.as_deref(),
        ctx.key_name(),
        ctx.end_user.as_ref(),
    ) {
        if let Some(code) = crate::enforcement::upstream_refusal::targets_identifier(
            head.status.as_u16(),
            &bytes,
            sid,
        ) {
            gateway
                .enforcement
                .upstream_refused(key, &user.id, &ctx.request_id, &code)
                .await;
        }
    }
    recorder.finish(Outcome::Allowed, None);
    Response::from_parts(head, ProxyBody::full(bytes))
}
