//! What the stand-in received: the bounded log of `/v1` requests and the counters behind `/_standin/stats`.

use bytes::Bytes;
use http::{HeaderMap, Method};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Most requests kept; older ones are forgotten first.
const MAX_REQUESTS: usize = 10_000;
/// Most body bytes kept across all recorded requests (the newest request is always kept).
const MAX_BODY_BYTES: usize = 256 * 1024 * 1024;

/// One recorded `/v1` request, as `GET /_standin/requests` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedRequest {
    /// `GET`, `POST`, …
    pub method: String,
    /// The path without the query string, e.g. `/v1/chat/completions`.
    pub path: String,
    /// The query string without `?`, if there was one.
    pub query: Option<String>,
    /// Lower-case header names; a repeated header's values joined with `, `.
    pub headers: BTreeMap<String, String>,
    /// The body parsed as JSON, or `null` when it is empty or not JSON.
    pub body: Value,
    /// The body as text (invalid UTF-8 replaced).
    pub body_text: String,
}

impl RecordedRequest {
    /// The value of a header (name in any case), if it was sent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

/// The counters `GET /_standin/stats` reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Every `/v1` request ever received (clearing the log does not reset it).
    pub requests: u64,
    /// Streams whose client went away before the end.
    pub cancelled_streams: u64,
    /// Calls whose client went away before the answer was ready (e.g. during `delay_ms`).
    #[serde(default)]
    pub cancelled_requests: u64,
}

/// A request as it arrived; turned into a [`RecordedRequest`] only when someone reads the log,
/// so recording costs a few reference-count bumps and one header-map clone.
#[derive(Debug)]
struct Raw {
    method: Method,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    body: Bytes,
}

impl Raw {
    fn to_recorded(&self) -> RecordedRequest {
        let mut headers: BTreeMap<String, String> = BTreeMap::new();
        for (name, value) in &self.headers {
            let value = String::from_utf8_lossy(value.as_bytes());
            headers
                .entry(name.as_str().to_owned())
                .and_modify(|joined| {
                    joined.push_str(", ");
                    joined.push_str(&value);
                })
                .or_insert_with(|| value.into_owned());
        }
        RecordedRequest {
            method: self.method.to_string(),
            path: self.path.clone(),
            query: self.query.clone(),
            headers,
            body: serde_json::from_slice(&self.body).unwrap_or(Value::Null),
            body_text: String::from_utf8_lossy(&self.body).into_owned(),
        }
    }
}

#[derive(Debug, Default)]
struct Log {
    entries: VecDeque<Arc<Raw>>,
    body_bytes: usize,
}

/// The request log and counters.
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    log: Mutex<Log>,
    requests: AtomicU64,
    cancelled_streams: AtomicU64,
    cancelled_requests: AtomicU64,
}

impl Recorder {
    /// Records one `/v1` request.
    pub(crate) fn record(&self, parts: &http::request::Parts, body: &Bytes) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let raw = Arc::new(Raw {
            method: parts.method.clone(),
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().map(str::to_owned),
            headers: parts.headers.clone(),
            body: body.clone(),
        });
        let Ok(mut log) = self.log.lock() else {
            return;
        };
        log.body_bytes += raw.body.len();
        log.entries.push_back(raw);
        while log.entries.len() > MAX_REQUESTS
            || (log.body_bytes > MAX_BODY_BYTES && log.entries.len() > 1)
        {
            if let Some(old) = log.entries.pop_front() {
                log.body_bytes -= old.body.len();
            }
        }
    }

    /// The recorded requests, oldest first.
    pub(crate) fn requests(&self) -> Vec<RecordedRequest> {
        let entries: Vec<Arc<Raw>> = match self.log.lock() {
            Ok(log) => log.entries.iter().cloned().collect(),
            Err(_) => Vec::new(),
        };
        entries.iter().map(|raw| raw.to_recorded()).collect()
    }

    /// Forgets the recorded requests (the counters stay).
    pub(crate) fn clear(&self) {
        if let Ok(mut log) = self.log.lock() {
            log.entries.clear();
            log.body_bytes = 0;
        }
    }

    /// Counts one stream whose client went away before the end.
    pub(crate) fn stream_cancelled(&self) {
        self.cancelled_streams.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one call dropped before its answer was ready.
    pub(crate) fn request_cancelled(&self) {
        self.cancelled_requests.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now.
    pub(crate) fn stats(&self) -> Stats {
        Stats {
            requests: self.requests.load(Ordering::Relaxed),
            cancelled_streams: self.cancelled_streams.load(Ordering::Relaxed),
            cancelled_requests: self.cancelled_requests.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parts(uri: &str) -> http::request::Parts {
        let (parts, ()) = http::Request::post(uri)
            .header("X-Test", "a")
            .header("x-test", "b")
            .header("content-type", "application/json")
            .body(())
            .unwrap()
            .into_parts();
        parts
    }

    #[test]
    fn records_lowercase_joined_headers_and_json_body() {
        let recorder = Recorder::default();
        recorder.record(
            &parts("/v1/chat/completions?x=1"),
            &Bytes::from_static(b"{\"a\":1}"),
        );
        recorder.record(&parts("/v1/embeddings"), &Bytes::from_static(b"not json"));
        let requests = recorder.requests();
        assert_eq!(requests.len(), 2);
        assert_eq!(requests[0].path, "/v1/chat/completions");
        assert_eq!(requests[0].query.as_deref(), Some("x=1"));
        assert_eq!(requests[0].header("X-TEST"), Some("a, b"));
        assert_eq!(requests[0].body, serde_json::json!({"a": 1}));
        assert_eq!(requests[1].body, Value::Null);
        assert_eq!(requests[1].body_text, "not json");
        recorder.clear();
        assert!(recorder.requests().is_empty());
        assert_eq!(recorder.stats().requests, 2);
    }

    #[test]
    fn log_is_bounded() {
        let recorder = Recorder::default();
        for _ in 0..MAX_REQUESTS + 5 {
            recorder.record(&parts("/v1/models"), &Bytes::new());
        }
        assert_eq!(recorder.requests().len(), MAX_REQUESTS);
        assert_eq!(recorder.stats().requests, (MAX_REQUESTS + 5) as u64);
    }
}
