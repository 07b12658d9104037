//! The pooled HTTP(S) client to OpenAI (or whatever `upstream.base_url` names).

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::headers;
use crate::config::UpstreamConfig;
use crate::error::WardenError;
use crate::pipeline::RequestContext;
use crate::secret::Secret;

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

pub struct Upstream {
    client: HttpClient,
    scheme: Scheme,
    authority: Authority,
    /// Path prefix that replaces the client's `/v1` (usually `/v1` itself).
    base_path: String,
    default_key: Option<HeaderValue>,
    organization: Option<HeaderValue>,
    project: Option<HeaderValue>,
    timeout: Duration,
}

/// The upstream's answer head and how long it took.
pub struct UpstreamReply {
    pub response: Response<Incoming>,
    pub elapsed: Duration,
}

impl Upstream {
    pub fn new(config: &UpstreamConfig, default_key: Option<&Secret>) -> anyhow::Result<Self> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(config.connect_timeout));
        http.set_keepalive(Some(Duration::from_secs(60)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(https);
        let parts = config.base_url.clone().into_parts();
        let header = |v: &Option<String>| v.as_deref().and_then(|v| HeaderValue::from_str(v).ok());
        Ok(Self {
            client,
            scheme: parts.scheme.unwrap_or(Scheme::HTTPS),
            authority: parts
                .authority
                .ok_or_else(|| anyhow::anyhow!("upstream.base_url has no host"))?,
            base_path: parts
                .path_and_query
                .map(|p| p.path().trim_end_matches('/').to_owned())
                .unwrap_or_default(),
            default_key: default_key.and_then(|k| headers::bearer(k.expose())),
            organization: header(&config.organization),
            project: header(&config.project),
            timeout: config.timeout,
        })
    }

    /// The upstream URI for a client path under `/v1`.
    fn uri_for(&self, client_path_and_query: &str) -> Result<Uri, WardenError> {
        let rest = client_path_and_query
            .strip_prefix("/v1")
            .unwrap_or(client_path_and_query);
        let path = PathAndQuery::try_from(format!("{}{rest}", self.base_path))
            .map_err(|_| WardenError::Internal)?;
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path)
            .build()
            .map_err(|_| WardenError::Internal)
    }

    /// A call Warden makes on its own behalf (e.g. `/moderations`) with the key's
    /// upstream key (or the default) and project; the answer is read whole, up to
    /// `max_bytes`. Timeouts are the caller's: each internal call has its own budget.
    pub async fn call_internal(
        &self,
        client_path: &str,
        key: Option<&crate::keys::VirtualKey>,
        body: Bytes,
        max_bytes: usize,
    ) -> Result<(http::StatusCode, Bytes), WardenError> {
        use http_body_util::BodyExt;
        let auth = key
            .and_then(|k| k.upstream_key.as_ref())
            .or(self.default_key.as_ref())
            .ok_or(WardenError::NoUpstreamKey)?;
        let mut request = Request::builder()
            .method(http::Method::POST)
            .uri(self.uri_for(client_path)?)
            .header(http::header::AUTHORIZATION, auth.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(|_| WardenError::Internal)?;
        let project = key
            .and_then(|k| k.openai_project.as_ref())
            .or(self.project.as_ref());
        for (name, value) in [
            ("openai-organization", self.organization.as_ref()),
            ("openai-project", project),
        ] {
            if let Some(value) = value {
                request.headers_mut().insert(name, value.clone());
            }
        }
        let response = self.client.request(request).await.map_err(|err| {
            tracing::warn!(error = %err, path = client_path, "internal upstream call failed");
            WardenError::UpstreamUnavailable
        })?;
        let status = response.status();
        let bytes = http_body_util::Limited::new(response.into_body(), max_bytes)
            .collect()
            .await
            .map_err(|_| WardenError::UpstreamUnavailable)?
            .to_bytes();
        Ok((status, bytes))
    }

    /// Sends the request as the pipeline left it. Dropping the returned future (a client
    /// that went away) drops the upstream connection, which cancels the call.
    pub async fn send(&self, ctx: &RequestContext) -> Result<UpstreamReply, WardenError> {
        let key = ctx.key.as_deref().ok_or(WardenError::Internal)?;
        let upstream_key = key
            .upstream_key
            .as_ref()
            .or(self.default_key.as_ref())
            .ok_or(WardenError::NoUpstreamKey)?;
        let body = if ctx.endpoint.has_json_body() {
            Some(ctx.outgoing_body())
        } else {
            None
        };
        let headers = headers::to_upstream(
            &ctx.headers,
            upstream_key,
            self.organization.as_ref(),
            key.openai_project.as_ref().or(self.project.as_ref()),
            body.as_ref().map(Bytes::len),
        );
        let mut request = Request::builder()
            .method(ctx.method.clone())
            .uri(self.uri_for(&ctx.path_and_query)?)
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|_| WardenError::Internal)?;
        *request.headers_mut() = headers;

        let sent = Instant::now();
        match tokio::time::timeout(self.timeout, self.client.request(request)).await {
            Ok(Ok(response)) => Ok(UpstreamReply {
                response,
                elapsed: sent.elapsed(),
            }),
            Ok(Err(err)) => {
                tracing::warn!(request_id = %ctx.request_id, error = %err, source = ?std::error::Error::source(&err), "upstream request failed");
                Err(WardenError::UpstreamUnavailable)
            }
            Err(_) => {
                tracing::warn!(request_id = %ctx.request_id, timeout_s = self.timeout.as_secs(), "upstream timed out");
                Err(WardenError::UpstreamTimeout)
            }
        }
    }
}

impl Upstream {
    /// A GET Warden makes on its own behalf (e.g. `/safety/cases/{id}`) with `auth` (a
    /// Bearer value) or the default key; the answer is read whole, up to `max_bytes`,
    /// within the upstream timeout.
    pub async fn get_internal(
        &self,
        client_path: &str,
        auth: Option<&HeaderValue>,
        max_bytes: usize,
    ) -> Result<(http::StatusCode, Bytes), WardenError> {
        use http_body_util::BodyExt;
        let auth = auth
            .or(self.default_key.as_ref())
            .ok_or(WardenError::NoUpstreamKey)?;
        let mut request = Request::builder()
            .method(http::Method::GET)
            .uri(self.uri_for(client_path)?)
            .header(http::header::AUTHORIZATION, auth.clone())
            .body(Full::new(Bytes::new()))
            .map_err(|_| WardenError::Internal)?;
        if let Some(org) = &self.organization {
            request
                .headers_mut()
                .insert("openai-organization", org.clone());
        }
        let call = async {
            let response = self.client.request(request).await.map_err(|err| {
                tracing::warn!(error = %err, path = client_path, "internal upstream GET failed");
                WardenError::UpstreamUnavailable
            })?;
            let status = response.status();
            let bytes = http_body_util::Limited::new(response.into_body(), max_bytes)
                .collect()
                .await
                .map_err(|_| WardenError::UpstreamUnavailable)?
                .to_bytes();
            Ok((status, bytes))
        };
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| WardenError::UpstreamTimeout)?
    }
}
