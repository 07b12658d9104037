//! The state every request shares: the request log, queued faults, safety cases and the API key.

use crate::cases::Cases;
use crate::errors::ApiError;
use crate::faults::FaultQueue;
use crate::record::Recorder;
use http::header::AUTHORIZATION;
use http::HeaderMap;
use std::sync::Arc;

/// Shared by all connections of one stand-in. No `Debug`: it holds the API key.
pub(crate) struct App {
    pub(crate) recorder: Arc<Recorder>,
    pub(crate) faults: FaultQueue,
    pub(crate) cases: Cases,
    /// The key every `/v1` call must bear, if any.
    api_key: Option<String>,
    /// More keys accepted besides `api_key` (a key rotation in progress).
    also_accepted: std::sync::RwLock<Vec<String>>,
    /// Client events received on realtime sockets, oldest first (the latest 10,000).
    realtime: std::sync::Mutex<std::collections::VecDeque<serde_json::Value>>,
}

/// Realtime client events kept for `GET /_standin/realtime`.
const REALTIME_LOG: usize = 10_000;

impl App {
    pub(crate) fn new(api_key: Option<String>) -> Self {
        Self {
            recorder: Arc::new(Recorder::default()),
            faults: FaultQueue::default(),
            cases: Cases::default(),
            api_key,
            also_accepted: std::sync::RwLock::default(),
            realtime: std::sync::Mutex::default(),
        }
    }

    /// Keeps one client event of a realtime session (a non-JSON frame as a string).
    pub(crate) fn realtime_log(&self, event: serde_json::Value) {
        if let Ok(mut log) = self.realtime.lock() {
            if log.len() == REALTIME_LOG {
                log.pop_front();
            }
            log.push_back(event);
        }
    }

    /// Every kept realtime client event, oldest first.
    pub(crate) fn realtime_events(&self) -> Vec<serde_json::Value> {
        self.realtime
            .lock()
            .map(|log| log.iter().cloned().collect())
            .unwrap_or_default()
    }

    pub(crate) fn clear_realtime(&self) {
        if let Ok(mut log) = self.realtime.lock() {
            log.clear();
        }
    }

    pub(crate) fn accept_also(&self, key: &str) {
        if let Ok(mut keys) = self.also_accepted.write() {
            keys.push(key.to_owned());
        }
    }

    /// Checks `Authorization: Bearer KEY` (scheme in any case) when a key is configured.
    pub(crate) fn check_auth(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(expected) = &self.api_key else {
            return Ok(());
        };
        let Some(value) = headers.get(AUTHORIZATION) else {
            return Err(ApiError::invalid_api_key(None));
        };
        let value = String::from_utf8_lossy(value.as_bytes());
        let given = value
            .get(..7)
            .filter(|scheme| scheme.eq_ignore_ascii_case("bearer "))
            .map_or("", |_| value[7..].trim());
        let also = self
            .also_accepted
            .read()
            .is_ok_and(|keys| keys.iter().any(|k| k == given));
        if given == expected.as_str() || also {
            Ok(())
        } else {
            Err(ApiError::invalid_api_key(
                (!given.is_empty()).then_some(given),
            ))
        }
    }
}
