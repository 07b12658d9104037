//! The pooled HTTP(S) client to OpenAI (or whatever `upstream.base_url` names).

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, Uri};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::headers;
use super::retry::{self, Verdict};
use crate::breaker::Breaker;
use crate::config::retries::RetryConfig;
use crate::config::UpstreamConfig;
use crate::error::WardenError;
use crate::pipeline::RequestContext;
use crate::secret::Secret;

/// A request body: bytes Warden holds (retried as needed), or a client body relayed as it
/// arrives (sent once; see `routes::StreamedBody`).
pub type RequestBody = Either<Full<Bytes>, crate::routes::StreamedBody>;

type HttpClient = Client<HttpsConnector<HttpConnector>, RequestBody>;

/// An upstream answer body: relayed as it arrives, or already read (an error answer
/// Warden had to look at before deciding on a retry).
pub type UpstreamBody = Either<Incoming, Full<Bytes>>;

/// Error answers are small; one bigger than this is not read for a retry decision.
const ERROR_BODY_MAX: usize = 64 * 1024;

pub struct Upstream {
    client: HttpClient,
    scheme: Scheme,
    authority: Authority,
    /// Path prefix that replaces the client's `/v1` (usually `/v1` itself).
    base_path: String,
    /// The default upstream key and its organization/project headers; swapped whole when
    /// an operator activates another key (requests already sent keep the one they had).
    defaults: arc_swap::ArcSwap<Defaults>,
    timeout: Duration,
    retries: RetryConfig,
    /// `[upstream] openai_beta`: the beta features a client may switch on.
    openai_beta: Vec<String>,
    /// `[upstream] unknown_paths = "forward"`.
    pub forward_unknown: bool,
    pub breaker: Breaker,
    /// Keeps the organization under its share of OpenAI's own rate limits.
    pub pacer: super::pacing::Pacer,
    retries_total: std::sync::atomic::AtomicU64,
}

/// The upstream key used when a virtual key has none of its own.
#[derive(Debug, Clone, Default)]
pub struct Defaults {
    pub key: Option<HeaderValue>,
    pub organization: Option<HeaderValue>,
    pub project: Option<HeaderValue>,
    /// The vault entry it came from; `None` for the environment or file key.
    pub name: Option<String>,
}

/// Which upstream key a request went out with, on the answer's extensions, so key
/// hygiene counts what Warden sent on each key: a vault key's name, `(env)` for the
/// environment or file key, `(key:NAME)` for a virtual key's own upstream key.
#[derive(Debug, Clone)]
pub struct SentWith(pub String);

impl SentWith {
    fn of(key: &crate::keys::VirtualKey, defaults: &Defaults) -> SentWith {
        SentWith(match (&key.upstream_key, &defaults.name) {
            (Some(_), _) => format!("(key:{})", key.name),
            (None, Some(name)) => name.clone(),
            (None, None) => "(env)".to_owned(),
        })
    }
}

/// The upstream's answer head and how long it took.
pub struct UpstreamReply {
    pub response: Response<UpstreamBody>,
    /// From the first attempt to the answer head, waits between retries included.
    pub elapsed: Duration,
}

/// One attempt's result, before the retry decision.
enum Attempt {
    /// An answer; an error answer comes with its body already read.
    Answer(Response<UpstreamBody>, Option<Bytes>),
    Unreachable,
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
            defaults: arc_swap::ArcSwap::from_pointee(Defaults {
                key: default_key.and_then(|k| headers::bearer(k.expose())),
                organization: header(&config.organization),
                project: header(&config.project),
                name: None,
            }),
            timeout: config.timeout,
            retries: config.retries,
            openai_beta: config.openai_beta.clone(),
            forward_unknown: config.unknown_paths == crate::config::UnknownPaths::Forward,
            breaker: Breaker::new(
                "upstream",
                config.retries.breaker_failures,
                config.retries.breaker_cooldown,
            ),
            retries_total: std::sync::atomic::AtomicU64::new(0),
            pacer: super::pacing::Pacer::new(config.pacing),
        })
    }

    /// The upstream URI for a client path under `/v1`.
    pub(crate) fn uri_for(&self, client_path_and_query: &str) -> Result<Uri, WardenError> {
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

    /// The default key now in use.
    pub fn defaults(&self) -> std::sync::Arc<Defaults> {
        self.defaults.load_full()
    }

    /// Switches the default key; requests already on their way keep the one they took.
    pub fn set_defaults(&self, defaults: Defaults) {
        self.defaults.store(std::sync::Arc::new(defaults));
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
        let defaults = self.defaults.load();
        let auth = key
            .and_then(|k| k.upstream_key.as_ref())
            .or(defaults.key.as_ref())
            .ok_or(WardenError::NoUpstreamKey)?;
        let mut request = Request::builder()
            .method(http::Method::POST)
            .uri(self.uri_for(client_path)?)
            .header(http::header::AUTHORIZATION, auth.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Either::Left(Full::new(body)))
            .map_err(|_| WardenError::Internal)?;
        let project = key
            .and_then(|k| k.openai_project.as_ref())
            .or(defaults.project.as_ref());
        for (name, value) in [
            ("openai-organization", defaults.organization.as_ref()),
            ("openai-project", project),
        ] {
            if let Some(value) = value {
                request.headers_mut().insert(name, value.clone());
            }
        }
        self.read_whole(request, client_path, max_bytes).await
    }

    /// Sends one of Warden's own calls and reads the answer whole, up to `max_bytes`.
    async fn read_whole(
        &self,
        request: Request<RequestBody>,
        client_path: &str,
        max_bytes: usize,
    ) -> Result<(http::StatusCode, Bytes), WardenError> {
        use http_body_util::BodyExt;
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

    /// Sends the request as the pipeline left it, retrying failed attempts (429, 5xx,
    /// connection errors) within `max_retries` and the retry deadline. Nothing has reached
    /// the client yet, streams included: a retry happens before any byte is released.
    /// `retries` counts the extra attempts made. Dropping the returned future (a client
    /// that went away) drops the upstream connection, which cancels the call.
    pub async fn send(
        &self,
        ctx: &RequestContext,
        retries: &mut u32,
    ) -> Result<UpstreamReply, WardenError> {
        let key = ctx.key.as_deref().ok_or(WardenError::Internal)?;
        let defaults = self.defaults.load_full();
        let upstream_key = key
            .upstream_key
            .as_ref()
            .or(defaults.key.as_ref())
            .ok_or(WardenError::NoUpstreamKey)?;
        let outgoing = crate::routes::forward::outgoing(ctx)?;
        let mut headers = headers::to_upstream(
            &ctx.headers,
            upstream_key,
            defaults.organization.as_ref(),
            key.openai_project.as_ref().or(defaults.project.as_ref()),
            outgoing.declared_len(),
            &self.openai_beta,
        );
        if let Some(content_type) = outgoing.content_type() {
            headers.insert(http::header::CONTENT_TYPE, content_type);
        }
        let (body, mut stream) = outgoing.into_parts();
        let uri = self.uri_for(&ctx.path_and_query)?;
        let body = body.unwrap_or_default();
        let streamed = stream.is_some();
        let (priority, tokens) = ctx
            .limit_ticket
            .as_ref()
            .map_or((Default::default(), 0), |t| {
                (t.priority, t.estimated_prompt_tokens())
            });
        self.pacer.admit(priority, tokens).await?;

        let started = Instant::now();
        let deadline = started + self.retries.deadline;
        let mut last: Option<Response<UpstreamBody>> = None;
        loop {
            let permit = match self.breaker.admit() {
                Ok(permit) => permit,
                // Opened while retrying: the last answer is the truest one to relay.
                Err(_) if last.is_some() => break,
                Err(wait) => {
                    return Err(WardenError::UpstreamCircuitOpen {
                        retry_after: wait,
                        failures: self.breaker.threshold(),
                    })
                }
            };
            let request_body = match stream.take() {
                Some(stream) => Either::Right(stream),
                // A relayed body is gone once sent: its last answer is the one to relay.
                None if streamed => break,
                None => Either::Left(Full::new(body.clone())),
            };
            let mut request = Request::builder()
                .method(ctx.method.clone())
                .uri(uri.clone())
                .body(request_body)
                .map_err(|_| WardenError::Internal)?;
            *request.headers_mut() = headers.clone();
            let attempt = match tokio::time::timeout(self.timeout, self.attempt(request)).await {
                Ok(attempt) => attempt,
                Err(_) => {
                    permit.failure();
                    tracing::warn!(request_id = %ctx.request_id, timeout_s = self.timeout.as_secs(), "upstream timed out");
                    // A full timeout already spent the retry budget many times over.
                    return Err(WardenError::UpstreamTimeout);
                }
            };
            if let Attempt::Answer(response, _) = &attempt {
                self.pacer.observe(response.headers());
            }
            let verdict = match &attempt {
                Attempt::Unreachable => Verdict::Retry {
                    upstream_down: true,
                },
                Attempt::Answer(response, body) => {
                    retry::classify(response.status(), response.headers(), body.as_deref())
                }
            };
            match verdict {
                Verdict::Retry {
                    upstream_down: true,
                } => permit.failure(),
                Verdict::Retry { .. } => permit.neutral(),
                Verdict::Final => permit.success(),
            }
            let response = match attempt {
                Attempt::Answer(response, _) => Some(response),
                Attempt::Unreachable => None,
            };
            if verdict == Verdict::Final || streamed {
                if let Some(mut response) = response {
                    response
                        .extensions_mut()
                        .insert(SentWith::of(key, &defaults));
                    return Ok(UpstreamReply {
                        response,
                        elapsed: started.elapsed(),
                    });
                }
            }
            last = response.or(last);
            if *retries >= self.retries.max_retries {
                break;
            }
            let wait = retry::wait_before(
                *retries + 1,
                last.as_ref().map(|r| r.headers()),
                &self.retries,
            );
            if Instant::now() + wait >= deadline {
                break;
            }
            tokio::time::sleep(wait).await;
            *retries += 1;
            self.retries_total
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        match last {
            Some(mut response) => Ok(UpstreamReply {
                response: {
                    response
                        .extensions_mut()
                        .insert(SentWith::of(key, &defaults));
                    response
                },
                elapsed: started.elapsed(),
            }),
            None => Err(WardenError::UpstreamUnavailable),
        }
    }

    /// One call: the answer (error answers read whole, so the retry decision can look at
    /// them and they can still be relayed), or `Unreachable` for a transport failure.
    async fn attempt(&self, request: Request<RequestBody>) -> Attempt {
        let response = match self.client.request(request).await {
            Ok(response) => response,
            Err(err) => {
                tracing::warn!(error = %err, source = ?std::error::Error::source(&err), "upstream request failed");
                return Attempt::Unreachable;
            }
        };
        let status = response.status();
        let worth_reading = retry::needs_body(status) || status.is_server_error();
        if !worth_reading {
            return Attempt::Answer(response.map(Either::Left), None);
        }
        let (head, body) = response.into_parts();
        match http_body_util::Limited::new(body, ERROR_BODY_MAX)
            .collect()
            .await
        {
            Ok(collected) => {
                let bytes = collected.to_bytes();
                let response = Response::from_parts(head, Either::Right(Full::new(bytes.clone())));
                Attempt::Answer(response, Some(bytes))
            }
            Err(err) => {
                tracing::warn!(error = %err, %status, "upstream error answer unreadable");
                Attempt::Unreachable
            }
        }
    }

    /// Retries made since start, for `/metrics`.
    pub fn retries_total(&self) -> u64 {
        self.retries_total
            .load(std::sync::atomic::Ordering::Relaxed)
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
        let defaults = self.defaults.load();
        let auth = auth
            .or(defaults.key.as_ref())
            .ok_or(WardenError::NoUpstreamKey)?;
        let mut request = Request::builder()
            .method(http::Method::GET)
            .uri(self.uri_for(client_path)?)
            .header(http::header::AUTHORIZATION, auth.clone())
            .body(Either::Left(Full::new(Bytes::new())))
            .map_err(|_| WardenError::Internal)?;
        if let Some(org) = &defaults.organization {
            request
                .headers_mut()
                .insert("openai-organization", org.clone());
        }
        let call = self.read_whole(request, client_path, max_bytes);
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| WardenError::UpstreamTimeout)?
    }
}
