//! Delivers alerts to the configured webhooks: Slack-compatible `{"text": …}` or the
//! alert as JSON; retried with exponential backoff, never from a request's task.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, Request};
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use tokio::sync::mpsc;

use super::{Alert, AlertCounts};
use crate::config::alerts::{AlertsConfig, Webhook, WebhookFormat};

const ATTEMPTS: u32 = 4;
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const TIMEOUT: Duration = Duration::from_secs(10);

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

pub(super) struct Sender {
    client: HttpClient,
    webhooks: Arc<Vec<Webhook>>,
    max_per_minute: u64,
    counts: Arc<AlertCounts>,
}

impl Sender {
    pub(super) fn new(config: &AlertsConfig, counts: Arc<AlertCounts>) -> anyhow::Result<Sender> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Ok(Sender {
            client: Client::builder(TokioExecutor::new()).build(https),
            webhooks: Arc::new(config.webhooks.clone()),
            max_per_minute: config.max_per_minute,
            counts,
        })
    }

    pub(super) async fn run(self, mut rx: mpsc::Receiver<Alert>) {
        let mut window_start = Instant::now();
        let mut sent_in_window = 0u64;
        while let Some(alert) = rx.recv().await {
            if window_start.elapsed() >= Duration::from_secs(60) {
                window_start = Instant::now();
                sent_in_window = 0;
            }
            if sent_in_window >= self.max_per_minute {
                self.counts.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            sent_in_window += 1;
            for hook in self.webhooks.iter() {
                // Each delivery retries on its own: a slow hook must not hold up the rest.
                let client = self.client.clone();
                let counts = self.counts.clone();
                let hook = hook.clone();
                let body = Bytes::from(payload(&alert, hook.format).to_string());
                tokio::spawn(async move {
                    let delivered = deliver(&client, &hook, body).await;
                    let counter = if delivered {
                        &counts.delivered
                    } else {
                        &counts.failed
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                });
            }
        }
    }
}

pub(super) fn payload(alert: &Alert, format: WebhookFormat) -> serde_json::Value {
    match format {
        WebhookFormat::Slack => json!({
            "text": format!(
                "[warden {}] {}\n{}",
                alert.severity.as_str(),
                alert.title,
                alert.text
            ),
        }),
        WebhookFormat::Json => json!({
            "source": "warden",
            "kind": alert.kind,
            "key": alert.key,
            "severity": alert.severity,
            "title": alert.title,
            "text": alert.text,
            "fields": alert.fields,
            "at_ms": alert.at_ms,
        }),
    }
}

/// `true` once the hook answered 2xx; 4xx other than 408/429 is not retried.
async fn deliver(client: &HttpClient, hook: &Webhook, body: Bytes) -> bool {
    let mut backoff = FIRST_BACKOFF;
    for attempt in 1..=ATTEMPTS {
        let request = Request::post(hook.url.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::USER_AGENT, "warden-alerts")
            .body(Full::new(body.clone()));
        let Ok(request) = request else { return false };
        let retry = match tokio::time::timeout(TIMEOUT, client.request(request)).await {
            Ok(Ok(response)) if response.status().is_success() => return true,
            Ok(Ok(response)) => {
                let status = response.status();
                tracing::warn!(%status, attempt, host = hook.url.host(), "alert webhook refused");
                status.is_server_error() || status == 408 || status == 429
            }
            Ok(Err(err)) => {
                tracing::warn!(%err, attempt, host = hook.url.host(), "alert webhook unreachable");
                true
            }
            Err(_) => {
                tracing::warn!(attempt, host = hook.url.host(), "alert webhook timed out");
                true
            }
        };
        if !retry || attempt == ATTEMPTS {
            break;
        }
        tokio::time::sleep(backoff).await;
        backoff *= 2;
    }
    false
}
