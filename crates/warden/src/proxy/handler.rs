//! One request, start to finish: resolve the endpoint, run the pipeline, forward, relay.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;

use super::body::ProxyBody;
use super::client_ip::client_ip;
use super::recorder::{Outcome, Recorder};
use crate::endpoint::Endpoint;
use crate::error::WardenError;
use crate::gateway::Gateway;
use crate::pipeline::{deferred, Finding, RequestContext};

/// What every request does once its pipeline ran, an HTTP call or a Realtime handshake:
/// the event learns the context, a refused end user is still named by identifier (never
/// by the raw id alone), and the abuse detectors and the key-country tracker see it.
pub(crate) fn observe_pipeline(
    gateway: &Gateway,
    ctx: &RequestContext,
    ran: &Result<(), WardenError>,
    recorder: &mut Recorder,
) {
    recorder.learn(ctx);
    if let (Err(_), None, Some(key), Some(user)) = (
        ran,
        &ctx.safety_identifier,
        ctx.key_name(),
        ctx.end_user.as_ref(),
    ) {
        recorder.identify(gateway.enforcement.safety_identifier(key, &user.id));
    }
    gateway.abuse.observe(ctx, ran.as_ref().err());
    if let (Some(key), Some(country)) = (ctx.key_name(), ctx.country) {
        gateway
            .key_countries
            .observe(key, country, ctx.client_ip, &ctx.request_id);
    }
}

pub async fn handle(
    gateway: Arc<Gateway>,
    request: Request<Incoming>,
    peer: SocketAddr,
) -> Response<ProxyBody> {
    if crate::realtime::is_socket_request(&request) {
        return crate::realtime::relay::accept(gateway, request, peer).await;
    }
    let request_id = new_request_id();
    // The config this request runs on, start to finish, whatever a reload does meanwhile.
    let snapshot = gateway.snapshot();
    let (parts, incoming) = request.into_parts();
    let ip = client_ip(peer.ip(), &parts.headers, &snapshot.trusted_proxies);
    let forward_unknown = gateway.upstream.forward_unknown;
    let endpoint = match Endpoint::resolve_with(&parts.method, parts.uri.path(), forward_unknown) {
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
    // Started while the store was down, with the identifier secret kept there: no end
    // user can be named to OpenAI yet, so nothing is forwarded.
    if !gateway.safety_ids.ready() {
        return refuse(recorder, &WardenError::StoreUnavailable, &request_id).await;
    }
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
    if ran.is_ok() && ctx.endpoint == Endpoint::RealtimeClientSecrets {
        ran = crate::realtime::secrets::admit(&gateway, &mut ctx);
    }
    observe_pipeline(&gateway, &ctx, &ran, &mut recorder);
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
    super::respond::respond(&gateway, &snapshot, &mut ctx, reply, recorder).await
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

/// Warden's own answer to a refused or failed request, recorded with its reason. The
/// event is committed before the answer goes out (bounded by `events.durable_timeout_ms`).
pub(crate) async fn refuse(
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

pub(crate) fn new_request_id() -> String {
    format!("wrq_{:032x}", fastrand::u128(..))
}
