//! OpenAI's safety notices, closed in a loop: a webhook receiver on the admin listener
//! verifies each delivery and queues it durably before answering; a worker fetches the
//! case, maps its `safety_identifier` back to the Warden key and end user (Warden derived
//! that identifier, so it alone can), and suspends or bans per policy. Deliveries and
//! cases live in the store, so a restart between acknowledgement and action loses nothing,
//! and a replayed or duplicate delivery is acted on once.

pub mod receiver;
pub mod signature;
mod worker;

use std::sync::Arc;

use http::HeaderValue;
use tokio::sync::Notify;

use crate::config::enforcement::NoticesConfig;
use crate::enforcement::Enforcement;
use crate::events::EventLog;
use crate::proxy::upstream::Upstream;
use crate::secret::Secret;
use crate::store::Store;

pub const WARNING_EVENT: &str = "safety.warning_issued";
pub const DEACTIVATION_EVENT: &str = "safety.deactivation_issued";

pub struct Notices {
    pub(crate) config: NoticesConfig,
    /// The HMAC key inside the `whsec_` secret; `None`: the receiver is not configured.
    key: Option<Vec<u8>>,
    /// `Bearer <key with api.safety.read>`; `None`: the upstream default key.
    case_auth: Option<HeaderValue>,
    store: Store,
    upstream: Arc<Upstream>,
    enforcement: Arc<Enforcement>,
    events: EventLog,
    wake: Notify,
}

impl Notices {
    pub fn new(
        config: NoticesConfig,
        secret: Option<&Secret>,
        case_key: Option<&Secret>,
        store: Store,
        upstream: Arc<Upstream>,
        enforcement: Arc<Enforcement>,
        events: EventLog,
    ) -> Arc<Notices> {
        Arc::new(Notices {
            key: secret.and_then(|s| signature::decode_secret(s.expose())),
            case_auth: case_key.and_then(|k| crate::proxy::headers::bearer(k.expose())),
            config,
            store,
            upstream,
            enforcement,
            events,
            wake: Notify::new(),
        })
    }

    pub fn configured(&self) -> bool {
        self.key.is_some()
    }
}
