//! The CLI's client for a running Warden's admin API (`--admin-url`): JSON in and out,
//! and failures turned into messages that say what to do.

use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::secret::Secret;

/// Reports can be large and slow to build; nothing else comes close.
const TIMEOUT: Duration = Duration::from_secs(120);
const MAX_RESPONSE: usize = 64 * 1024 * 1024;

pub struct AdminClient {
    base: String,
    token: Secret,
    token_env: String,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl AdminClient {
    /// `base` is the admin listener (`http://127.0.0.1:8081`); the token comes from the
    /// environment variable `token_env`, never from the command line.
    pub fn new(base: &str, token_env: &str) -> anyhow::Result<AdminClient> {
        let base = base.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            anyhow::bail!("--admin-url must start with http:// or https:// (got '{base}')");
        }
        let token = std::env::var(token_env)
            .ok()
            .filter(|t| !t.trim().is_empty())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "{token_env} is not set: export it with a token accepted by [admin] (token_env or token_sha256) to use --admin-url"
                )
            })?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Ok(AdminClient {
            base,
            token: Secret::new(token.trim().to_owned()),
            token_env: token_env.to_owned(),
            client: Client::builder(TokioExecutor::new()).build(https),
        })
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.json(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.json(Method::POST, path, Some(body)).await
    }

    /// A GET whose answer is a document (the report), returned as text.
    pub async fn get_text(&self, path: &str) -> anyhow::Result<String> {
        let bytes = self.call(Method::GET, path, None).await?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| anyhow::anyhow!("the admin API sent a document that is not UTF-8"))
    }

    async fn json(&self, method: Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let bytes = self.call(method, path, body).await?;
        serde_json::from_slice(&bytes).map_err(|err| {
            anyhow::anyhow!(
                "the admin API at {} answered with something that is not JSON ({err}): is --admin-url the admin listener?",
                self.base
            )
        })
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> anyhow::Result<Bytes> {
        let url = format!("{}{path}", self.base);
        let payload = body.map(|b| b.to_string()).unwrap_or_default();
        let request = Request::builder()
            .method(method)
            .uri(&url)
            .header(
                header::AUTHORIZATION,
                format!("Bearer {}", self.token.expose()),
            )
            .header(header::CONTENT_TYPE, "application/json")
            .header(
                header::USER_AGENT,
                concat!("warden-cli/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(Bytes::from(payload)))
            .map_err(|err| anyhow::anyhow!("--admin-url {}: {err}", self.base))?;
        let unreachable = |why: String| {
            anyhow::anyhow!(
                "cannot reach the Warden admin API at {}: {why} (is `warden serve` running, and is this its server.admin_listen address?)",
                self.base
            )
        };
        let response = match tokio::time::timeout(TIMEOUT, self.client.request(request)).await {
            Ok(Ok(response)) => response,
            Ok(Err(err)) => return Err(unreachable(root_cause(&err))),
            Err(_) => {
                return Err(unreachable(format!(
                    "no answer within {} s",
                    TIMEOUT.as_secs()
                )))
            }
        };
        let status = response.status();
        let bytes = Limited::new(response.into_body(), MAX_RESPONSE)
            .collect()
            .await
            .map_err(|err| unreachable(format!("the answer broke off: {err}")))?
            .to_bytes();
        if status.is_success() {
            return Ok(bytes);
        }
        Err(self.refusal(status, &bytes))
    }

    /// The API's OpenAI-shaped error, as advice.
    fn refusal(&self, status: StatusCode, body: &[u8]) -> anyhow::Error {
        let error: Value = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| v.get("error").cloned())
            .unwrap_or(Value::Null);
        let message = error["message"].as_str().unwrap_or("").to_owned();
        let code = error["code"].as_str().unwrap_or("");
        match (status, code) {
            (StatusCode::UNAUTHORIZED, _) => anyhow::anyhow!(
                "admin token rejected by {}: set {} to a token in [admin] (token_env or token_sha256)",
                self.base,
                self.token_env
            ),
            (_, "admin_api_disabled") => anyhow::anyhow!(
                "the admin API at {} is disabled: set [admin] token_env or token_sha256 in its config and restart it",
                self.base
            ),
            _ if message.is_empty() => anyhow::anyhow!(
                "the admin API at {} answered {status} (is --admin-url the admin listener of a Warden of this version?)",
                self.base
            ),
            _ => anyhow::anyhow!("{message}"),
        }
    }
}

/// The innermost error, which says what went wrong ("Connection refused").
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause: &dyn std::error::Error = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// Percent-encodes a path segment or query value (everything but RFC 3986 unreserved).
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::encode;

    #[test]
    fn encodes_all_but_unreserved_characters() {
        assert_eq!(encode("a b/c?d=é"), "a%20b%2Fc%3Fd%3D%C3%A9");
        assert_eq!(encode("2026-11-01T10:00Z"), "2026-11-01T10%3A00Z");
    }
}
