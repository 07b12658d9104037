//! Lockdown mode: the one switch an operator flips when OpenAI's warning e-mail arrives.
//! The state lives in the store (`settings`), so `warden lockdown on` on any machine
//! reaches every replica within a poll (about a second). While on: requests from the
//! refused tiers (and, by default, requests naming no end user) get 403 `lockdown`,
//! every limit is scaled down, and moderation thresholds are lowered.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::lockdown::LockdownConfig;
use crate::events::now_ms;
use crate::limits::Limiter;
use crate::safety::moderation::Moderator;
use crate::store::{Store, StoreError};

const POLL: Duration = Duration::from_secs(1);

/// What the store holds, and what `status` and the admin API show.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockdownState {
    pub on: bool,
    /// When it was last switched (unix ms).
    pub since_ms: i64,
    /// `cli`, `admin` or `auto`.
    pub by: String,
    pub reason: Option<String>,
}

impl LockdownState {
    pub fn new(on: bool, by: &str, reason: Option<String>) -> LockdownState {
        LockdownState {
            on,
            since_ms: now_ms(),
            by: by.into(),
            reason,
        }
    }
}

/// Reads the stored state; never set reads as off.
pub async fn load(store: &Store) -> Result<LockdownState, StoreError> {
    Ok(match store.lockdown_state().await? {
        Some(text) => serde_json::from_str(&text)
            .map_err(|e| StoreError::Corrupt(format!("settings.lockdown: {e}")))?,
        None => LockdownState::default(),
    })
}

pub async fn save(store: &Store, state: &LockdownState) -> Result<(), StoreError> {
    let text = serde_json::to_string(state).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    store.set_lockdown_state(&text).await
}

struct Inner {
    on: AtomicBool,
    state: Mutex<LockdownState>,
    /// Counts states applied by this process (admin API, auto-lockdown, start-up). A
    /// poll that began before one of them read the store before its save, so it is stale.
    applied: AtomicU64,
    config: LockdownConfig,
}

/// A cheap handle: `is_on()` is one atomic load, for any stage that needs it.
#[derive(Clone)]
pub struct Lockdown {
    inner: Arc<Inner>,
}

impl Lockdown {
    pub fn new(config: LockdownConfig) -> Lockdown {
        Lockdown {
            inner: Arc::new(Inner {
                on: AtomicBool::new(false),
                state: Mutex::new(LockdownState::default()),
                applied: AtomicU64::new(0),
                config,
            }),
        }
    }

    pub fn is_on(&self) -> bool {
        self.inner.on.load(Ordering::Relaxed)
    }

    /// Flips this process's switch only, without effects (unit tests of stages).
    #[cfg(test)]
    pub(crate) fn set_on_for_test(&self, on: bool) {
        self.inner.on.store(on, Ordering::SeqCst);
    }

    pub fn config(&self) -> &LockdownConfig {
        &self.inner.config
    }

    /// What the moderator's thresholds are lowered by now: `None` while lockdown is off.
    pub fn moderation_lowering(&self) -> Option<(f32, f32)> {
        let c = &self.inner.config;
        self.is_on().then_some((
            c.moderation_threshold_factor as f32,
            c.moderation_score_line,
        ))
    }

    pub fn state(&self) -> LockdownState {
        self.inner
            .state
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    /// Takes a state read from the store: flips the switch and applies its effects to
    /// the limiter and the moderator. Returns whether the switch changed. The moderator
    /// is asked for after the switch flips: a config reload swaps in a new one, then
    /// reads the switch (`moderation_lowering`), so neither side misses the other.
    pub fn apply(
        &self,
        state: LockdownState,
        limiter: &Limiter,
        moderator: &dyn Fn() -> Arc<Moderator>,
    ) -> bool {
        let mut current = self.lock_state();
        self.inner.applied.fetch_add(1, Ordering::AcqRel);
        self.switch(&mut current, state, limiter, moderator)
    }

    /// Applies a state the poller read, unless this process applied one since the read
    /// began (`seen`): that read may predate the other's save and would flip the switch
    /// back for a poll interval. Clocks are not compared, so replicas may disagree on time.
    fn apply_polled(
        &self,
        state: LockdownState,
        seen: u64,
        limiter: &Limiter,
        moderator: &dyn Fn() -> Arc<Moderator>,
    ) -> bool {
        let mut current = self.lock_state();
        if self.inner.applied.load(Ordering::Acquire) != seen {
            return false;
        }
        self.switch(&mut current, state, limiter, moderator)
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, LockdownState> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn switch(
        &self,
        current: &mut LockdownState,
        state: LockdownState,
        limiter: &Limiter,
        moderator: &dyn Fn() -> Arc<Moderator>,
    ) -> bool {
        let changed = self.inner.on.swap(state.on, Ordering::AcqRel) != state.on;
        if changed {
            if state.on {
                limiter.set_scale(self.inner.config.limit_factor);
                moderator().set_lockdown(self.moderation_lowering());
                tracing::warn!(by = %state.by, reason = state.reason.as_deref(), "lockdown ON");
            } else {
                limiter.set_scale(1.0);
                moderator().set_lockdown(None);
                tracing::warn!(by = %state.by, "lockdown off");
            }
        }
        *current = state;
        changed
    }

    /// Polls the store about every second and applies what it finds. A store error
    /// keeps the last known state (lockdown must not flap off because a read failed).
    pub fn spawn_poller(
        &self,
        store: Store,
        limiter: Limiter,
        moderator: impl Fn() -> Arc<Moderator> + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let lockdown = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(POLL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(inner) = lockdown.upgrade() else {
                    return;
                };
                let handle = Lockdown { inner };
                let seen = handle.inner.applied.load(Ordering::Acquire);
                match load(&store).await {
                    Ok(state) => {
                        handle.apply_polled(state, seen, &limiter, &moderator);
                    }
                    Err(err) => {
                        tracing::warn!(%err, "could not read the lockdown state; keeping the last known")
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::config::StorageConfig;

    async fn round_trip(store: &Store, on: bool) {
        let first = LockdownState::new(on, "cli", Some("warning e-mail".into()));
        save(store, &first).await.unwrap();
        assert_eq!(load(store).await.unwrap(), first);
        let off = LockdownState::new(false, "admin", None);
        save(store, &off).await.unwrap();
        assert_eq!(load(store).await.unwrap(), off);
    }

    #[tokio::test]
    async fn state_round_trips_on_both_stores() {
        let sqlite = Store::open(&StorageConfig::SqliteMemory).await.unwrap();
        assert_eq!(load(&sqlite).await.unwrap(), LockdownState::default());
        round_trip(&sqlite, true).await;
        let postgres = Store::open(&StorageConfig::Postgres {
            url: std::env::var("WARDEN_TEST_POSTGRES_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into()),
        })
        .await
        .unwrap();
        // The test database is shared with other test runs: never switch it on there.
        round_trip(&postgres, false).await;
    }

    #[test]
    fn apply_scales_limits_and_flips_the_switch() {
        let config = crate::config::Config::embedded_default().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let limiter = crate::limits::Limiter::new(&config.limits, &config.cluster).unwrap();
            let moderator = Arc::new(Moderator::new(
                config.safety.moderation.clone(),
                Arc::new(crate::safety::moderation::tests::Fake::default()),
            ));
            let moderator = &|| moderator.clone();
            let lockdown = Lockdown::new(LockdownConfig::default());
            assert!(lockdown.apply(LockdownState::new(true, "cli", None), &limiter, moderator));
            assert!(lockdown.is_on());
            // The same state again changes nothing.
            assert!(!lockdown.apply(LockdownState::new(true, "cli", None), &limiter, moderator));
            assert!(lockdown.apply(LockdownState::default(), &limiter, moderator));
            assert!(!lockdown.is_on());

            // A poll that read the store before the admin API's save must not undo it.
            let seen = lockdown.inner.applied.load(Ordering::Acquire);
            assert!(lockdown.apply(LockdownState::new(true, "admin", None), &limiter, moderator));
            let stale_read = LockdownState::default();
            assert!(!lockdown.apply_polled(stale_read.clone(), seen, &limiter, moderator));
            assert!(lockdown.is_on(), "the stale read was dropped");
            assert!(moderator().lowered_for_lockdown());
            // The next poll, begun after the save, applies what it reads.
            let seen = lockdown.inner.applied.load(Ordering::Acquire);
            assert!(lockdown.apply_polled(stale_read, seen, &limiter, moderator));
            assert!(!lockdown.is_on());
        });
    }
}
