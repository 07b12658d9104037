//! Starting while the store (PostgreSQL) is down. `serve` does not wait for it: it
//! serves config keys at once, spools its events, and reads what the store holds once it
//! answers. Until then each part falls back as documented in docs/outages.md:
//! - store keys, the vault's active key, lockdown and end-user standings are unknown
//!   (config keys and the environment key serve; the pollers pick the rest up);
//! - spend counts from zero on top of the stored totals read later;
//! - with no `[identity]` secret configured, the generated one lives in the store, so
//!   requests get 503 `store_unavailable` until it is read.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::identity::safety_id::SafetyIdentifiers;
use crate::keys::countries::KeyCountries;
use crate::proxy::upstream::Upstream;
use crate::store::Store;
use crate::vault::MasterKey;

/// How often the start-up reads are tried again while the store does not answer.
const RETRY: Duration = Duration::from_secs(1);

/// Awaits `$attempt` until it succeeds, a second apart, logging each failure.
macro_rules! retry {
    ($what:expr, $attempt:expr) => {
        loop {
            match $attempt.await {
                Ok(value) => break value,
                Err(err) => {
                    tracing::warn!(%err, "could not read {} from the store; retrying", $what)
                }
            }
            tokio::time::sleep(RETRY).await;
        }
    };
}

/// Awaits `$attempt` again while the store is unreachable; any other outcome is returned.
macro_rules! retry_while_unreachable {
    ($attempt:expr) => {
        loop {
            match $attempt.await {
                Err(crate::vault::VaultError::Store(err)) => {
                    tracing::warn!(%err, "the vault's store is unreachable; retrying");
                    tokio::time::sleep(RETRY).await;
                }
                other => break other,
            }
        }
    };
}

/// Whether the start-up reads from the store are done (`/readyz`, the admin API).
#[derive(Default)]
pub struct StoreLoaded(AtomicBool);

impl StoreLoaded {
    pub fn done() -> StoreLoaded {
        StoreLoaded(AtomicBool::new(true))
    }

    pub fn is_done(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// What the start-up reads fill in once the store answers.
pub struct Pending {
    pub store: Store,
    pub loaded: Arc<StoreLoaded>,
    pub safety_ids: Arc<SafetyIdentifiers>,
    pub vault: Option<(Arc<MasterKey>, String)>,
    pub upstream: Arc<Upstream>,
    pub key_countries: Arc<KeyCountries>,
    pub spend: crate::spend::Spend,
    pub alerts: crate::alerts::Alerts,
}

impl Pending {
    /// Migrates the store when it answers, then does each start-up read, retrying each
    /// until it succeeds, then marks the store loaded.
    pub fn spawn(self) {
        tokio::spawn(async move { self.run().await });
    }

    async fn run(self) {
        self.store.migrate_when_reachable(RETRY).await;
        if !self.safety_ids.ready() {
            let secret = retry!(
                "the safety-identifier secret",
                crate::gateway::stored_safety_secret(&self.store)
            );
            self.safety_ids.set(&secret);
        }
        if let Some((master, setting)) = &self.vault {
            self.open_vault(master.clone(), setting).await;
        }
        retry!("the keys' countries", self.key_countries.load(&self.store));
        retry!("the spend totals", self.spend.load());
        self.loaded.0.store(true, Ordering::Release);
        tracing::info!("the store answers: start-up state loaded, serving in full");
    }

    async fn open_vault(&self, master: Arc<MasterKey>, setting: &str) {
        let unlocked = retry_while_unreachable!(crate::vault::unlock(&self.store, &master));
        if let Err(err) = unlocked {
            // A wrong master key is a mistake, not an outage: the environment key keeps
            // serving and the operator is told, as a start would have told them.
            tracing::error!(%err, "{setting}: the vault cannot be opened; serving with the environment key");
            self.alerts.raise(crate::alerts::Alert::new(
                "vault_locked",
                "vault_locked",
                crate::alerts::Severity::Critical,
                "The upstream key vault cannot be opened",
                format!("{setting}: {err}. Warden serves with the environment or file key."),
                serde_json::json!({ "setting": setting }),
            ));
            return;
        }
        let fallback = (*self.upstream.defaults()).clone();
        let served = retry_while_unreachable!(crate::vault::serve_active(
            self.store.clone(),
            master.clone(),
            self.upstream.clone(),
            fallback.clone(),
        ));
        if let Err(err) = served {
            tracing::error!(%err, "the vault's active key cannot be served");
        }
    }
}
