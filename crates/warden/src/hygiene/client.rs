//! A small client for OpenAI's Admin, Usage and Costs APIs, authenticated with the Admin
//! key (never an inference key). Every call has one time budget (its pages included),
//! bounded answers, and OpenAI's error envelope turned into a typed error.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::wire::{self, ListPage, UsagePage};
use crate::secret::Secret;

/// Largest answer read from one call (a page of 1-minute usage buckets is far smaller).
const MAX_ANSWER_BYTES: usize = 8 * 1024 * 1024;
/// Most pages followed in one listing: a loop in the cursor cannot run forever.
const MAX_PAGES: usize = 200;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// OpenAI answered with an error envelope (or a non-2xx status without one).
    #[error("{method} {path}: OpenAI answered {status} ({code}): {message}")]
    Status {
        method: Method,
        path: String,
        status: u16,
        code: String,
        message: String,
    },
    #[error("{0}: the Admin API did not answer within the time budget")]
    Timeout(String),
    #[error("{0}: the Admin API is unreachable: {1}")]
    Unreachable(String, String),
    #[error("{0}: the answer is not what OpenAI documents: {1}")]
    Malformed(String, String),
    #[error("{0}: more than {MAX_PAGES} pages; the cursor seems to loop")]
    TooManyPages(String),
}

impl AdminError {
    /// A low-cardinality label for events and alerts.
    pub fn label(&self) -> &'static str {
        match self {
            AdminError::Status {
                status: 401 | 403, ..
            } => "admin_unauthorized",
            AdminError::Status { status: 429, .. } => "admin_rate_limited",
            AdminError::Status { .. } => "admin_error",
            AdminError::Timeout(_) => "admin_timeout",
            AdminError::Unreachable(..) => "admin_unreachable",
            AdminError::Malformed(..) => "admin_malformed",
            AdminError::TooManyPages(_) => "admin_pagination",
        }
    }
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

pub struct AdminClient {
    client: HttpClient,
    /// `scheme://host[:port]/v1` without a trailing slash.
    base: String,
    auth: HeaderValue,
    timeout: Duration,
}

impl AdminClient {
    pub fn new(base_url: &Uri, key: &Secret, timeout: Duration) -> anyhow::Result<AdminClient> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let auth = crate::proxy::headers::bearer(key.expose())
            .ok_or_else(|| anyhow::anyhow!("openai_admin.key_env: the key is not header-safe"))?;
        Ok(AdminClient {
            client: Client::builder(TokioExecutor::new()).build(https),
            base: base_url.to_string().trim_end_matches('/').to_owned(),
            auth,
            timeout,
        })
    }

    /// One call; `path` starts after `/v1` (e.g. `/organization/projects?limit=100`).
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, AdminError> {
        let uri: Uri = format!("{}{path}", self.base)
            .parse()
            .map_err(|_| AdminError::Malformed(path.to_owned(), "the URL is not valid".into()))?;
        let bytes = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let mut request = Request::builder()
            .method(method.clone())
            .uri(uri)
            .header(http::header::AUTHORIZATION, self.auth.clone());
        if body.is_some() {
            request = request.header(http::header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(bytes))
            .map_err(|e| AdminError::Malformed(path.to_owned(), e.to_string()))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| AdminError::Unreachable(path.to_owned(), e.to_string()))?;
            let status = response.status();
            let body = http_body_util::Limited::new(response.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| AdminError::Unreachable(path.to_owned(), e.to_string()))?
                .to_bytes();
            Ok::<_, AdminError>((status, body))
        };
        let (status, body) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| AdminError::Timeout(path.to_owned()))??;
        if !status.is_success() {
            let (code, message) = wire::error_of(&body);
            return Err(AdminError::Status {
                method,
                path: path.split('?').next().unwrap_or(path).to_owned(),
                status: status.as_u16(),
                code,
                message,
            });
        }
        serde_json::from_slice(&body)
            .map_err(|e| AdminError::Malformed(path.to_owned(), format!("not JSON: {e}")))
    }

    fn parse<T: DeserializeOwned>(path: &str, value: Value) -> Result<T, AdminError> {
        serde_json::from_value(value)
            .map_err(|e| AdminError::Malformed(path.to_owned(), e.to_string()))
    }

    /// Every item of an Admin API list (`has_more` + `last_id` → `after`).
    async fn list_all<T: DeserializeOwned>(&self, path: &str) -> Result<Vec<T>, AdminError> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut url = format!("{path}?limit=100");
            if let Some(cursor) = &after {
                url.push_str("&after=");
                url.push_str(&encode(cursor));
            }
            let page: ListPage<T> = Self::parse(path, self.call(Method::GET, &url, None).await?)?;
            let more = page.has_more && page.last_id.is_some() && page.last_id != after;
            after = page.last_id;
            out.extend(page.data);
            if !more {
                return Ok(out);
            }
        }
        Err(AdminError::TooManyPages(path.to_owned()))
    }

    /// Every bucket of a Usage or Costs query (`has_more` + `next_page` → `page`).
    async fn buckets(&self, path: &str, query: &str) -> Result<Vec<wire::Bucket>, AdminError> {
        let mut out = Vec::new();
        let mut page: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut url = format!("{path}?{query}");
            if let Some(cursor) = &page {
                url.push_str("&page=");
                url.push_str(&encode(cursor));
            }
            let answer: UsagePage = Self::parse(path, self.call(Method::GET, &url, None).await?)?;
            out.extend(answer.data);
            match answer.next_page.filter(|_| answer.has_more) {
                Some(next) if Some(&next) != page.as_ref() => page = Some(next),
                _ => return Ok(out),
            }
        }
        Err(AdminError::TooManyPages(path.to_owned()))
    }

    pub async fn projects(&self) -> Result<Vec<wire::Project>, AdminError> {
        self.list_all("/organization/projects").await
    }

    pub async fn project_api_keys(
        &self,
        project: &str,
    ) -> Result<Vec<wire::ProjectApiKey>, AdminError> {
        self.list_all(&format!(
            "/organization/projects/{}/api_keys",
            encode(project)
        ))
        .await
    }

    /// A new service account in `project`; OpenAI answers with its one API key, in clear
    /// this once.
    pub async fn create_service_account(
        &self,
        project: &str,
        name: &str,
    ) -> Result<wire::NewServiceAccount, AdminError> {
        let path = format!(
            "/organization/projects/{}/service_accounts",
            encode(project)
        );
        let body = serde_json::json!({ "name": name });
        Self::parse(&path, self.call(Method::POST, &path, Some(&body)).await?)
    }

    pub async fn delete_service_account(&self, project: &str, id: &str) -> Result<(), AdminError> {
        let path = format!(
            "/organization/projects/{}/service_accounts/{}",
            encode(project),
            encode(id)
        );
        let answer: wire::Deleted =
            Self::parse(&path, self.call(Method::DELETE, &path, None).await?)?;
        deleted(&path, answer)
    }

    pub async fn delete_api_key(&self, project: &str, key_id: &str) -> Result<(), AdminError> {
        let path = format!(
            "/organization/projects/{}/api_keys/{}",
            encode(project),
            encode(key_id)
        );
        let answer: wire::Deleted =
            Self::parse(&path, self.call(Method::DELETE, &path, None).await?)?;
        deleted(&path, answer)
    }

    /// Usage of one kind (`completions`, `embeddings`, …) in 1-minute buckets over
    /// `[start, end)` (Unix seconds), grouped by key and project.
    pub async fn usage(
        &self,
        kind: &str,
        start: i64,
        end: i64,
    ) -> Result<Vec<wire::Bucket>, AdminError> {
        let minutes = ((end - start) / 60).clamp(1, 1440);
        let query = format!(
            "start_time={start}&end_time={end}&bucket_width=1m&group_by=api_key_id,project_id&limit={minutes}"
        );
        self.buckets(&format!("/organization/usage/{kind}"), &query)
            .await
    }

    /// Costs per project in 1-day buckets over `[start, end)`.
    pub async fn costs(&self, start: i64, end: i64) -> Result<Vec<wire::Bucket>, AdminError> {
        let days = ((end - start) / 86_400).clamp(1, 180);
        let query = format!(
            "start_time={start}&end_time={end}&bucket_width=1d&group_by=project_id&limit={days}"
        );
        self.buckets("/organization/costs", &query).await
    }
}

fn deleted(path: &str, answer: wire::Deleted) -> Result<(), AdminError> {
    if answer.deleted {
        Ok(())
    } else {
        Err(AdminError::Malformed(
            path.to_owned(),
            "OpenAI answered deleted: false".into(),
        ))
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters (cursors are base64).
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::encode;

    #[test]
    fn cursors_are_percent_encoded() {
        assert_eq!(encode("page_AAA+/b=="), "page_AAA%2B%2Fb%3D%3D");
        assert_eq!(encode("proj_abc-1.2~"), "proj_abc-1.2~");
    }
}
