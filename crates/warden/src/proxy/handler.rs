//! One request, start to finish: resolve the endpoint, run the pipeline, forward, relay.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;

use super::body::{ProxyBody, RelayBody};
use super::client_ip::client_ip;
use super::headers;
use super::recorder::{Outcome, Recorder};
use crate::endpoint::Endpoint;
use crate::error::WardenError;
use crate::gateway::Gateway;
use crate::pipeline::{deferred, Finding, RequestContext};

pub async fn handle(
    gateway: Arc<Gateway>,
    request: Request<Incoming>,
    peer: SocketAddr,
) -> Response<ProxyBody> {
    let request_id = new_request_id();
    // The config this request runs on, start to finish, whatever a reload does meanwhile.
    let snapshot = gateway.snapshot();
    let (parts, incoming) = request.into_parts();
    let ip = client_ip(peer.ip(), &parts.headers, &snapshot.trusted_proxies);
    let endpoint = match Endpoint::resolve(&parts.method, parts.uri.path()) {
        Ok(endpoint) => endpoint,
        Err(err) => {
            let recorder = Recorder::new(
                gateway.events.clone(),
                &request_id,
                "unknown",
                ip.to_string(),
            );
            return refuse(recorder, &err, &request_id).await;
        }
    };
    let mut recorder = Recorder::new(
        gateway.events.clone(),
        &request_id,
        endpoint.label(),
        ip.to_string(),
    );
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| parts.uri.path().to_owned());
    let mut ctx = RequestContext::new(
        request_id,
        endpoint,
        parts.method,
        path_and_query,
        parts.headers,
        ip,
        incoming,
    );

    let mut ran = snapshot.pipeline.run(&mut ctx).await;
    let mut retries = 0;
    // `parallel` moderation: upstream's answer, held until the verdict passed.
    let mut early = None;
    if let (Ok(()), Some(verdict)) = (&ran, ctx.deferred.take()) {
        let (stage, settled, sent) =
            deferred::race(verdict, gateway.upstream.send(&ctx, &mut retries)).await;
        ran = deferred::settle(&mut ctx, stage, settled);
        early = sent;
    }
    recorder.learn(&ctx);
    // Refused before the safety_identifier stage: the event and log line still name the
    // end user by identifier, never by the raw id alone.
    if let (Err(_), None, Some(key), Some(user)) = (
        &ran,
        &ctx.safety_identifier,
        ctx.key_name(),
        ctx.end_user.as_ref(),
    ) {
        recorder.identify(gateway.enforcement.safety_identifier(key, &user.id));
    }
    gateway.abuse.observe(&ctx, ran.as_ref().err());
    if let (Some(key), Some(country)) = (ctx.key_name(), ctx.country) {
        gateway
            .key_countries
            .observe(key, country, ctx.client_ip, &ctx.request_id);
    }
    if let Err(err) = ran {
        leak_alert(&gateway, &ctx);
        recorder.blocked_by(&err, &ctx);
        return refuse(recorder, &err, &ctx.request_id).await;
    }

    // A flagged request's `flag` event is committed while upstream works on the answer.
    let sent = if let Some(sent) = early {
        recorder.persist_flags().await;
        sent
    } else if recorder.has_pending_flags() {
        let (sent, ()) = tokio::join!(
            gateway.upstream.send(&ctx, &mut retries),
            recorder.persist_flags()
        );
        sent
    } else {
        gateway.upstream.send(&ctx, &mut retries).await
    };
    if retries > 0 {
        recorder.note(Finding::UpstreamRetries(retries));
    }
    let reply = match sent {
        Ok(reply) => reply,
        Err(err) => return refuse(recorder, &err, &ctx.request_id).await,
    };
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
    if !is_sse && may_target_user(&ctx, head.status) {
        return relay_refusal(&gateway, &ctx, head, upstream_body, recorder).await;
    }
    let observers = gateway
        .observers
        .iter()
        .filter_map(|factory| factory.observe(&ctx, &head))
        .collect();
    // Warden asked for the stream's usage chunk; the client did not (limits stage).
    let strip = is_sse
        && ctx
            .limit_ticket
            .as_ref()
            .is_some_and(|t| t.strip_usage_chunk);
    if let Some(checks) = super::output::checks(&snapshot.moderator, &snapshot.filters, &ctx, &head)
    {
        let response = super::output::respond(
            checks,
            &ctx,
            head,
            upstream_body,
            recorder,
            observers,
            is_sse,
        )
        .await;
        return crate::limits::strip::wrap(response, strip);
    }
    let body = RelayBody::new(
        upstream_body,
        recorder,
        is_sse.then_some(endpoint),
        observers,
    );
    crate::limits::strip::wrap(
        Response::from_parts(head, ProxyBody::Relay(Box::new(body))),
        strip,
    )
}

/// A revoked or expired virtual key still in use is probably leaked: tell the operator.
fn leak_alert(gateway: &Gateway, ctx: &RequestContext) {
    let Some(name) = ctx.findings.iter().find_map(|f| match f {
        Finding::RetiredKey { name } => Some(name),
        _ => None,
    }) else {
        return;
    };
    let ip = ctx.client_ip.to_string();
    gateway.alerts.raise(crate::alerts::Alert::new(
        "revoked_key_used",
        format!("revoked-key:{name}:{ip}"),
        crate::alerts::Severity::Critical,
        format!("Revoked virtual key '{name}' is still in use"),
        format!("A request with the revoked or expired key '{name}' came from {ip} and was refused (401). The key has probably leaked: find where it is still configured."),
        serde_json::json!({"key": name, "client_ip": ip, "request_id": ctx.request_id}),
    ));
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

/// Warden's own answer to a refused or failed request, recorded with its reason. The
/// event is committed before the answer goes out (bounded by `events.durable_timeout_ms`).
async fn refuse(
    mut recorder: Recorder,
    err: &WardenError,
    request_id: &str,
) -> Response<ProxyBody> {
    if let WardenError::ContentFiltered(block) = err {
        recorder.note(Finding::Blocked {
            categories: block.categories.clone(),
        });
    }
    let response = err.to_response(request_id);
    recorder.answered(response.status().as_u16(), None);
    let outcome = if response.status().is_server_error() {
        Outcome::Failed
    } else {
        Outcome::Blocked
    };
    recorder.close_durable(outcome, Some(err.code())).await;
    response.map(ProxyBody::full)
}

fn new_request_id() -> String {
    format!("wrq_{:032x}", fastrand::u128(..))
}
