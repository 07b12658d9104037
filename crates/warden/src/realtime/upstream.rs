//! The upstream Realtime socket: `ws://` or `wss://` at `upstream.base_url`'s host, opened
//! with the real key (never the client's) and the end user's safety identifier header.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Request, Uri};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::WebSocketStream;

use crate::error::WardenError;

/// Any byte stream the socket runs over (TCP, or TLS over TCP).
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub type UpstreamSocket = WebSocketStream<Box<dyn Io>>;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens the upstream socket at `uri` (`http(s)://host/v1/realtime?model=…`) with `headers`
/// (Authorization, organization, project, safety identifier). Refusals upstream answers
/// the handshake with are `UpstreamUnavailable` (logged with their status).
pub async fn connect(
    uri: &Uri,
    headers: HeaderMap,
    config: WebSocketConfig,
) -> Result<UpstreamSocket, WardenError> {
    let tls = uri.scheme_str() == Some("https");
    let host = uri.host().ok_or(WardenError::Internal)?.to_owned();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let connect = async {
        let tcp = TcpStream::connect((host.as_str(), port)).await?;
        let _ = tcp.set_nodelay(true);
        let stream: Box<dyn Io> = if tls {
            Box::new(tls_connector().connect(server_name(&host)?, tcp).await?)
        } else {
            Box::new(tcp)
        };
        Ok::<_, std::io::Error>(stream)
    };
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, connect)
        .await
        .map_err(|_| WardenError::UpstreamTimeout)?
        .map_err(|err| {
            tracing::warn!(%err, "realtime: upstream connection failed");
            WardenError::UpstreamUnavailable
        })?;
    let ws_uri = format!(
        "{}://{}{}",
        if tls { "wss" } else { "ws" },
        uri.authority().map_or(host.as_str(), |a| a.as_str()),
        uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let mut request = Request::get(ws_uri)
        .body(())
        .map_err(|_| WardenError::Internal)?;
    let out = request.headers_mut();
    *out = headers;
    for (name, value) in [
        (
            "host",
            uri.authority().map_or(host.clone(), |a| a.to_string()),
        ),
        ("connection", "Upgrade".into()),
        ("upgrade", "websocket".into()),
        ("sec-websocket-version", "13".into()),
        ("sec-websocket-key", generate_key()),
    ] {
        let value = HeaderValue::from_str(&value).map_err(|_| WardenError::Internal)?;
        out.insert(name, value);
    }
    let handshake = tokio_tungstenite::client_async_with_config(request, stream, Some(config));
    match tokio::time::timeout(CONNECT_TIMEOUT, handshake).await {
        Err(_) => Err(WardenError::UpstreamTimeout),
        Ok(Ok((socket, _))) => Ok(socket),
        Ok(Err(err)) => {
            tracing::warn!(%err, "realtime: upstream refused the WebSocket handshake");
            Err(WardenError::UpstreamUnavailable)
        }
    }
}

fn server_name(host: &str) -> std::io::Result<rustls::pki_types::ServerName<'static>> {
    rustls::pki_types::ServerName::try_from(host.to_owned())
        .map_err(|err| std::io::Error::new(std::io::ErrorKind::InvalidInput, err))
}

fn tls_connector() -> tokio_rustls::TlsConnector {
    static CONFIG: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
        .unwrap_or_else(|_| {
            rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        });
        Arc::new(config)
    });
    tokio_rustls::TlsConnector::from(config.clone())
}
