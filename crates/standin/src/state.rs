//! The state every request shares: the request log, queued faults, safety cases and the API key.

use crate::cases::Cases;
use crate::errors::ApiError;
use crate::faults::FaultQueue;
use crate::org::Org;
use crate::record::Recorder;
use http::header::AUTHORIZATION;
use http::HeaderMap;
use std::sync::Arc;

/// Shared by all connections of one stand-in. No `Debug`: it holds the API key.
pub(crate) struct App {
    pub(crate) recorder: Arc<Recorder>,
    pub(crate) faults: FaultQueue,
    pub(crate) cases: Cases,
    /// The organization: its projects and keys (with a configured `api_key`, the keys
    /// `/v1` accepts), and the usage each key caused.
    pub(crate) org: Org,
    /// Whether `/v1` calls must bear one of the organization's keys.
    keys_required: bool,
    /// The Admin key `/v1/organization` calls must bear, if any.
    admin_key: Option<String>,
    /// Files, batches, stored responses and the other stored objects (`rest`).
    pub(crate) objects: crate::rest::Objects,
    /// Client events received on realtime sockets, oldest first (the latest 10,000).
    realtime: std::sync::Mutex<std::collections::VecDeque<serde_json::Value>>,
}

/// Realtime client events kept for `GET /_standin/realtime`.
const REALTIME_LOG: usize = 10_000;

impl App {
    pub(crate) fn new(api_key: Option<String>, admin_key: Option<String>) -> Self {
        Self {
            recorder: Arc::new(Recorder::default()),
            faults: FaultQueue::default(),
            cases: Cases::default(),
            org: Org::new(api_key.as_deref()),
            keys_required: api_key.is_some(),
            admin_key,
            objects: crate::rest::Objects::default(),
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

    /// Adds `key` to the default project (a rotation done by hand in OpenAI's dashboard).
    pub(crate) fn accept_also(&self, key: &str) {
        if self.org.key_for(key).is_none() {
            self.org
                .add_key(crate::org::DEFAULT_PROJECT, "added by hand", key, false);
        }
    }

    /// Checks `Authorization: Bearer KEY` (scheme in any case) against the organization's
    /// live keys when keys are required; answers the key's (id, project) when it is one.
    pub(crate) fn check_auth(
        &self,
        headers: &HeaderMap,
    ) -> Result<Option<(String, String)>, ApiError> {
        let given = bearer(headers);
        let key = given.as_deref().and_then(|g| self.org.key_for(g));
        match (&given, key) {
            (_, Some(key)) => Ok(Some(key)),
            _ if !self.keys_required => Ok(None),
            (None, None) => Err(ApiError::invalid_api_key(None)),
            (Some(given), None) => Err(ApiError::invalid_api_key(
                (!given.is_empty()).then_some(given.as_str()),
            )),
        }
    }

    /// Checks the Admin key on `/v1/organization` calls (any caller when none is set).
    pub(crate) fn check_admin(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(expected) = &self.admin_key else {
            return Ok(());
        };
        match bearer(headers) {
            Some(given) if given == *expected => Ok(()),
            given => Err(ApiError::invalid_api_key(
                given.as_deref().filter(|g| !g.is_empty()),
            )),
        }
    }
}

/// The Bearer value, if the header is there (an empty string for another scheme).
fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(AUTHORIZATION)?;
    let value = String::from_utf8_lossy(value.as_bytes());
    Some(
        value
            .get(..7)
            .filter(|scheme| scheme.eq_ignore_ascii_case("bearer "))
            .map_or("", |_| value[7..].trim())
            .to_owned(),
    )
}
