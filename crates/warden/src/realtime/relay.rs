//! `GET /v1/realtime`: the WebSocket handshake, authenticated like an HTTP request.
//!
//! In order: 1. the request must ask for a WebSocket (426 otherwise); 2. a browser's
//! `openai-insecure-api-key.<key>` subprotocol stands in for `Authorization`; 3. the
//! standard pipeline runs (key, key scope with the `model` query parameter, end user,
//! standing, network policy, abuse gate, limits, safety identifier header); 4. the end
//! user's concurrent and hourly session limits; 5. the upstream socket opens with the
//! real key; only then 6. the client gets its `101` and the session runs on its own task.
//! Any refusal before 6 is an ordinary HTTP error in OpenAI's envelope.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

use super::session::Session;
use super::RealtimeRefusal;
use crate::endpoint::Endpoint;
use crate::gateway::Gateway;
use crate::pipeline::RequestContext;
use crate::proxy::body::ProxyBody;
use crate::proxy::client_ip::client_ip;
use crate::proxy::handler::{new_request_id, refuse};
use crate::proxy::recorder::Recorder;
use crate::stages::safety_identifier::SAFETY_HEADER;

/// Browsers cannot set headers on a WebSocket: OpenAI reads the key from this subprotocol.
const KEY_PROTOCOL: &str = "openai-insecure-api-key.";
/// ...and Warden reads the end-user token (`X-Warden-User-Token`) from this one.
const USER_TOKEN_PROTOCOL: &str = "warden-user-token.";

/// Frames queued toward a slow reader before writes wait (tungstenite's write buffer).
const WRITE_BUFFER: usize = 128 * 1024;

pub async fn accept(
    gateway: Arc<Gateway>,
    mut request: Request<Incoming>,
    peer: SocketAddr,
) -> Response<ProxyBody> {
    let request_id = new_request_id();
    let snapshot = gateway.snapshot();
    let on_upgrade = hyper::upgrade::on(&mut request);
    // Held by the session: the listener's connection caps count it until it ends.
    let place = request
        .extensions()
        .get::<crate::listener::ConnectionPlace>()
        .cloned();
    let (mut parts, incoming) = request.into_parts();
    let ip = client_ip(peer.ip(), &parts.headers, &snapshot.trusted_proxies);
    let recorder = Recorder::new(
        gateway.events.clone(),
        &request_id,
        "realtime",
        ip.to_string(),
    );
    let config = gateway.realtime.config().clone();
    if !config.enabled {
        return refuse(recorder, &super::secrets::disabled(), &request_id).await;
    }
    let Some(ws_key) = websocket_key(&parts.headers) else {
        let err = RealtimeRefusal::error(
            StatusCode::UPGRADE_REQUIRED,
            "websocket_required",
            "GET /v1/realtime is a WebSocket endpoint: connect with a WebSocket client (Upgrade: websocket).",
        );
        return refuse(recorder, &err, &request_id).await;
    };
    let offered_realtime = key_from_subprotocol(&mut parts.headers);
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or_else(|| "/v1/realtime".to_owned(), |p| p.as_str().to_owned());
    let model = query_value(parts.uri.query(), "model");
    let mut ctx = RequestContext::new(
        request_id,
        Endpoint::Realtime,
        parts.method,
        path_and_query,
        parts.headers,
        ip,
        incoming,
    );
    ctx.model = model;
    let mut recorder = recorder;
    let ran = snapshot.pipeline.run(&mut ctx).await;
    // Like an HTTP request: volume and key-sharing signals see every handshake.
    crate::proxy::handler::observe_pipeline(&gateway, &ctx, &ran, &mut recorder);
    if let Err(err) = ran {
        recorder.blocked_by(&err, &ctx);
        return refuse(recorder, &err, &ctx.request_id).await;
    }
    let slot = match (ctx.key_name(), ctx.end_user.as_ref()) {
        (Some(key), Some(user)) => match gateway.realtime.open(key, &user.id) {
            Ok(slot) => Some(slot),
            Err(err) => return refuse(recorder, &err, &ctx.request_id).await,
        },
        _ => None,
    };
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(config.max_frame_bytes))
        .max_frame_size(Some(config.max_frame_bytes))
        .write_buffer_size(0)
        .max_write_buffer_size(WRITE_BUFFER.max(config.max_frame_bytes * 2));
    let upstream = match open_upstream(&gateway, &ctx, ws_config).await {
        Ok(socket) => socket,
        Err(err) => return refuse(recorder, &err, &ctx.request_id).await,
    };
    recorder.answered(101, None);

    let mut response = Response::new(ProxyBody::full(bytes::Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONNECTION,
        HeaderValue::from_static("upgrade"),
    );
    headers.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(ws_key.as_bytes())) {
        headers.insert(http::header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    if offered_realtime {
        headers.insert(
            http::header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("realtime"),
        );
    }
    if let Ok(id) = HeaderValue::from_str(&ctx.request_id) {
        headers.insert("x-warden-request-id", id);
    }
    let session = Session {
        gateway: gateway.clone(),
        snapshot,
        ctx,
        recorder,
        slot,
    };
    tokio::spawn(async move {
        let _place = place;
        match on_upgrade.await {
            Ok(upgraded) => {
                let client = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(ws_config),
                )
                .await;
                session.run(client, upstream).await;
            }
            Err(err) => tracing::debug!(%err, "realtime: the client left during the upgrade"),
        }
    });
    response
}

/// The client's `Sec-WebSocket-Key`, when the request is a valid WebSocket upgrade.
fn websocket_key(headers: &HeaderMap) -> Option<String> {
    let has = |name: http::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    if !has(http::header::UPGRADE, "websocket") || !has(http::header::CONNECTION, "upgrade") {
        return None;
    }
    if headers.get(http::header::SEC_WEBSOCKET_VERSION)?.as_bytes() != b"13" {
        return None;
    }
    headers
        .get(http::header::SEC_WEBSOCKET_KEY)?
        .to_str()
        .ok()
        .map(str::to_owned)
}

/// Moves a browser's key subprotocol into `Authorization` and its user-token subprotocol
/// into `X-Warden-User-Token` (when the headers were not sent) and drops the subprotocol
/// header, so neither travels further. Returns whether the client
/// offered the `realtime` subprotocol (answered in the 101).
fn key_from_subprotocol(headers: &mut HeaderMap) -> bool {
    let Some(offered) = headers
        .remove(http::header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok().map(str::to_owned))
    else {
        return false;
    };
    let mut realtime = false;
    for protocol in offered.split(',').map(str::trim) {
        if protocol == "realtime" {
            realtime = true;
        } else if let Some(token) = protocol.strip_prefix(USER_TOKEN_PROTOCOL) {
            let header = crate::stages::end_user::USER_TOKEN_HEADER;
            if !headers.contains_key(header) {
                if let Ok(value) = HeaderValue::from_str(token) {
                    headers.insert(header, value);
                }
            }
        } else if let Some(key) = protocol.strip_prefix(KEY_PROTOCOL) {
            if !headers.contains_key(http::header::AUTHORIZATION) {
                if let Some(value) = crate::proxy::headers::bearer(key) {
                    headers.insert(http::header::AUTHORIZATION, value);
                }
            }
        }
    }
    realtime
}

fn query_value(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name && !v.is_empty()).then(|| v.replace("%2D", "-").replace("%2d", "-"))
    })
}

/// The upstream socket with the virtual key's upstream key (or the default), the
/// organization and project, and the end user's safety identifier.
async fn open_upstream(
    gateway: &Gateway,
    ctx: &RequestContext,
    config: WebSocketConfig,
) -> Result<super::upstream::UpstreamSocket, crate::error::WardenError> {
    use crate::error::WardenError;
    let key = ctx.key.as_deref().ok_or(WardenError::Internal)?;
    let defaults = gateway.upstream.defaults();
    let auth = key
        .upstream_key
        .as_ref()
        .or(defaults.key.as_ref())
        .ok_or(WardenError::NoUpstreamKey)?;
    let mut headers = HeaderMap::new();
    headers.insert(http::header::AUTHORIZATION, auth.clone());
    if let Some(org) = &defaults.organization {
        headers.insert("openai-organization", org.clone());
    }
    if let Some(project) = key.openai_project.as_ref().or(defaults.project.as_ref()) {
        headers.insert("openai-project", project.clone());
    }
    if let Some(id) = ctx.headers.get(SAFETY_HEADER) {
        headers.insert(SAFETY_HEADER, id.clone());
    }
    if let Some(beta) = ctx.headers.get("openai-beta") {
        headers.insert("openai-beta", beta.clone());
    }
    let uri = gateway.upstream.uri_for(&ctx.path_and_query)?;
    super::upstream::connect(&uri, headers, config).await
}
