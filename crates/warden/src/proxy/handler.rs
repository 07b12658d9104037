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
use crate::pipeline::RequestContext;

pub async fn handle(
    gateway: Arc<Gateway>,
    request: Request<Incoming>,
    peer: SocketAddr,
) -> Response<ProxyBody> {
    let request_id = new_request_id();
    let (parts, incoming) = request.into_parts();
    let ip = client_ip(peer.ip(), &parts.headers, &gateway.trusted_proxies);
    let endpoint = match Endpoint::resolve(&parts.method, parts.uri.path()) {
        Ok(endpoint) => endpoint,
        Err(err) => {
            let recorder = Recorder::new(
                gateway.events.clone(),
                &request_id,
                "unknown",
                ip.to_string(),
            );
            return refuse(recorder, &err, &request_id);
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

    let ran = gateway.pipeline.run(&mut ctx).await;
    recorder.learn(&ctx);
    if let Err(err) = ran {
        return refuse(recorder, &err, &ctx.request_id);
    }

    let mut retries = 0;
    let sent = gateway.upstream.send(&ctx, &mut retries).await;
    if retries > 0 {
        recorder.note("upstream", &format!("retries={retries}"));
    }
    let reply = match sent {
        Ok(reply) => reply,
        Err(err) => return refuse(recorder, &err, &ctx.request_id),
    };
    let (mut head, upstream_body) = reply.response.into_parts();
    recorder.answered(head.status.as_u16(), Some(reply.elapsed));
    let request_id =
        HeaderValue::from_str(&ctx.request_id).unwrap_or(HeaderValue::from_static("unknown"));
    head.headers = headers::to_client(&head.headers, &request_id);
    let is_sse = head
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
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
    if super::output::applies(&gateway.moderator, &ctx, &head) {
        let moderator = gateway.moderator.clone();
        let response = super::output::respond(
            moderator,
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

/// Warden's own answer to a refused or failed request, recorded with its reason.
fn refuse(mut recorder: Recorder, err: &WardenError, request_id: &str) -> Response<ProxyBody> {
    let response = err.to_response(request_id);
    recorder.answered(response.status().as_u16(), None);
    let outcome = if response.status().is_server_error() {
        Outcome::Failed
    } else {
        Outcome::Blocked
    };
    recorder.finish(outcome, Some(err.code()));
    response.map(ProxyBody::full)
}

fn new_request_id() -> String {
    format!("wrq_{:032x}", fastrand::u128(..))
}
