//! End-user enforcement: strikes with decay, the warn → throttle → suspend → ban ladder,
//! operator actions, and the directory that maps OpenAI's safety identifiers back to
//! users. The store holds the truth; each replica keeps the sanctioned few in memory and
//! polls the store every second, so a ban anywhere holds everywhere within a second.

pub mod ladder;
pub mod offences;
pub mod upstream_refusal;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::mpsc;

use crate::config::enforcement::EnforcementConfig;
use crate::events::{now_ms, EventLog, EventRecord};
use crate::identity::safety_id::SafetyIdentifiers;
use crate::store::{Sighting, StatusChange, Store, StoreError, StoredStrike, StoredUser};

pub use ladder::{Rung, Standing, Status};
pub use offences::{offence_channel, Offence, OffenceSink};

const POLL_EVERY: Duration = Duration::from_secs(1);
/// Replica clocks differ a little; polling re-reads this much of the past.
const POLL_OVERLAP_MS: i64 = 5_000;

/// Who is acting on a user's standing, for the event trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    Strikes,
    Operator,
    /// An OpenAI safety case (its id) or refusal.
    OpenAi(String),
}

impl Actor {
    fn label(&self) -> String {
        match self {
            Actor::Strikes => "strikes".into(),
            Actor::Operator => "operator".into(),
            Actor::OpenAi(case) => format!("openai:{case}"),
        }
    }
}

pub struct Enforcement {
    config: EnforcementConfig,
    store: Store,
    events: EventLog,
    safety_ids: Arc<SafetyIdentifiers>,
    /// Users with strikes or a sanction, by `key \u{1f} user`. Everyone else is clear.
    standings: DashMap<String, Standing>,
    /// Users seen since the last flush, with when. Sharded: every request writes here.
    sightings: DashMap<String, (String, String, i64)>,
    offences: Mutex<Option<mpsc::Receiver<Offence>>>,
    /// Where sanctions are announced; unset in the CLI.
    alerts: OnceLock<crate::alerts::Alerts>,
}

fn slot(key_name: &str, end_user: &str) -> String {
    let mut s = String::with_capacity(key_name.len() + end_user.len() + 1);
    s.push_str(key_name);
    s.push('\u{1f}');
    s.push_str(end_user);
    s
}

#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("no end user '{user}' has been seen under key '{key}'")]
    UnknownUser { key: String, user: String },
}

impl Enforcement {
    pub fn new(
        config: EnforcementConfig,
        store: Store,
        events: EventLog,
        safety_ids: Arc<SafetyIdentifiers>,
        offences: mpsc::Receiver<Offence>,
    ) -> Arc<Enforcement> {
        Arc::new(Enforcement {
            config,
            store,
            events,
            safety_ids,
            standings: DashMap::new(),
            sightings: DashMap::new(),
            offences: Mutex::new(Some(offences)),
            alerts: OnceLock::new(),
        })
    }

    /// Sends suspensions, bans and OpenAI cases to the operator's alert webhooks.
    pub fn connect_alerts(&self, alerts: crate::alerts::Alerts) {
        let _ = self.alerts.set(alerts);
    }

    /// Raises an alert when alerting is connected; never waits.
    pub fn alert(&self, alert: crate::alerts::Alert) {
        if let Some(alerts) = self.alerts.get() {
            alerts.raise(alert);
        }
    }

    fn announce(&self, key: &str, user: &str, action: &str, why: &str, until_ms: Option<i64>) {
        use crate::alerts::{Alert, Severity};
        let severity = if action == "ban" {
            Severity::Critical
        } else {
            Severity::Warning
        };
        let until = until_ms
            .map(|u| format!(" until {}", format_ms(u)))
            .unwrap_or_default();
        self.alert(Alert::new(
            "end_user_sanctioned",
            format!("{action}:{key}:{user}"),
            severity,
            format!("End user {action}: {user} (key {key})"),
            format!("{user} on key {key}: {action}{until}. {why}"),
            serde_json::json!({"key": key, "end_user": user, "action": action, "until_ms": until_ms, "why": why}),
        ));
    }

    /// Whether Warden has seen this user before (directory or standing), for lockdown's
    /// "no new end users".
    pub async fn known(&self, key: &str, user: &str) -> Result<bool, StoreError> {
        let slot = slot(key, user);
        if self.standings.contains_key(&slot) || self.sightings.contains_key(&slot) {
            return Ok(true);
        }
        Ok(self
            .store
            .user(key, user)
            .await?
            .is_some_and(|u| u.first_seen_ms > 0))
    }

    pub fn config(&self) -> &EnforcementConfig {
        &self.config
    }

    /// The end user's identifier at OpenAI (what logs and events name them by).
    pub fn safety_identifier(&self, key_name: &str, end_user: &str) -> String {
        self.safety_ids.for_user(key_name, Some(end_user))
    }

    /// The rung a request from this user meets now; one map lookup, no I/O.
    pub fn rung(&self, key_name: &str, end_user: &str) -> (Rung, Option<Standing>) {
        if self.standings.is_empty() {
            return (Rung::Clear, None);
        }
        match self.standings.get(&slot(key_name, end_user)) {
            Some(standing) => (
                ladder::rung(&standing, now_ms(), &self.config),
                Some(standing.clone()),
            ),
            None => (Rung::Clear, None),
        }
    }

    /// Notes that the user made a request (for the directory), flushed every second.
    pub fn saw(&self, key_name: &str, end_user: &str) {
        let at = now_ms();
        self.sightings
            .entry(slot(key_name, end_user))
            .and_modify(|e| e.2 = at)
            .or_insert_with(|| (key_name.to_owned(), end_user.to_owned(), at));
    }

    /// Loads the store's standings, then keeps them fresh, flushes sightings and works
    /// through offences until the process ends.
    pub async fn start(self: &Arc<Self>) -> Result<(), StoreError> {
        for user in self.store.standings_changed_since(1).await? {
            self.apply(&user);
        }
        self.keep_fresh(now_ms());
        Ok(())
    }

    /// Like `start` while the store does not answer: the first poll that reaches it
    /// loads every standing. Until then no ban or suspension is known here.
    pub fn start_without_store(self: &Arc<Self>) {
        self.keep_fresh(POLL_OVERLAP_MS + 1);
    }

    fn keep_fresh(self: &Arc<Self>, since: i64) {
        let receiver = self.offences.lock().ok().and_then(|mut r| r.take());
        if let Some(mut receiver) = receiver {
            let me = Arc::downgrade(self);
            tokio::spawn(async move {
                while let Some(offence) = receiver.recv().await {
                    let Some(me) = me.upgrade() else { return };
                    if let Err(err) = me.strike(&offence).await {
                        tracing::error!(%err, request_id = %offence.request_id, "strike not recorded");
                    }
                }
            });
        }
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut since = since;
            let mut tick = tokio::time::interval(POLL_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(me) = me.upgrade() else { return };
                let started = now_ms();
                match me
                    .store
                    .standings_changed_since(since - POLL_OVERLAP_MS)
                    .await
                {
                    Ok(users) => {
                        for user in &users {
                            me.apply(user);
                        }
                        since = started;
                    }
                    Err(err) => tracing::warn!(%err, "could not refresh end-user standings"),
                }
                me.flush_sightings().await;
            }
        });
    }

    /// Writes pending sightings now (also called every second).
    pub async fn flush_sightings(&self) {
        if self.sightings.is_empty() {
            return;
        }
        // A sighting that lands between the copy and the removal only loses a later
        // last-seen time; the user was written already.
        let pending: Vec<(String, (String, String, i64))> = self
            .sightings
            .iter()
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect();
        for (slot, _) in &pending {
            self.sightings.remove(slot);
        }
        let batch: Vec<Sighting> = pending
            .into_iter()
            .map(|(_, (key_name, end_user, at_ms))| Sighting {
                safety_identifier: self.safety_ids.for_user(&key_name, Some(&end_user)),
                key_name,
                end_user,
                at_ms,
            })
            .collect();
        if let Err(err) = self.store.record_sightings(&batch).await {
            tracing::warn!(%err, users = batch.len(), "could not record end-user sightings");
        }
    }

    /// Takes a stored row into the in-memory view (newer rows win).
    fn apply(&self, user: &StoredUser) {
        let standing = Standing {
            status: Status::parse(&user.status, user.status_until_ms),
            weight: user.strike_weight,
            weight_at_ms: user.strike_at_ms,
            reason: user.status_reason.clone(),
        };
        let key = slot(&user.key_name, &user.end_user);
        if standing.status == Status::Active && standing.weight <= 0.0 {
            self.standings.remove(&key);
        } else {
            self.standings.insert(key, standing);
        }
    }

    /// Adds one strike, recomputes the decayed weight from the stored strikes, and moves
    /// the user up the ladder if it crossed a rung.
    pub async fn strike(&self, offence: &Offence) -> Result<(), StoreError> {
        if !self.config.enabled {
            return Ok(());
        }
        let (key, user) = (&offence.key_name, &offence.end_user);
        let now = now_ms();
        self.store
            .add_strike(
                key,
                user,
                &StoredStrike {
                    at_ms: offence.at_ms,
                    weight: offence.weight,
                    category: offence.category.clone(),
                    request_id: Some(offence.request_id.clone()),
                },
            )
            .await?;
        let since = now - ladder::horizon_ms(self.config.half_life);
        let weight: f64 = self
            .store
            .strikes_since(key, user, since)
            .await?
            .iter()
            .map(|s| ladder::decayed(s.weight, s.at_ms, now, self.config.half_life))
            .sum();
        let before = self.current(key, user).await?;
        let before_rung = ladder::rung(&before, now, &self.config);
        let status = ladder::status_after_strike(before.status, weight, now, &self.config);
        let reason = match status {
            Status::Active => None,
            _ if status == before.status => before.reason.clone(),
            _ => Some(format!(
                "strike weight {weight:.1} after {}",
                offence.category
            )),
        };
        let after = Standing {
            status,
            weight,
            weight_at_ms: now,
            reason,
        };
        self.save(key, user, &after, now).await?;
        let after_rung = ladder::rung(&after, now, &self.config);
        let detail = serde_json::json!({
            "category": offence.category,
            "weight": offence.weight,
            "total": rounded(weight),
            "rung": after_rung.label(),
        });
        self.event(&offence.request_id, key, user, "strike", detail);
        if after_rung.is_above(&before_rung) {
            self.event(
                &offence.request_id,
                key,
                user,
                after_rung.label(),
                serde_json::json!({
                    "by": Actor::Strikes.label(),
                    "total": rounded(weight),
                    "until_ms": status.until_ms(),
                }),
            );
            tracing::warn!(key, end_user = %user, rung = after_rung.label(), weight, "end user moved up the strike ladder");
            if matches!(after_rung, Rung::Suspended { .. } | Rung::Banned) {
                let why = format!("strike weight {weight:.1}, last for {}", offence.category);
                self.announce(key, user, after_rung.label(), &why, status.until_ms());
            }
        }
        Ok(())
    }

    /// The stored standing (the in-memory copy may lag another replica by a second).
    async fn current(&self, key: &str, user: &str) -> Result<Standing, StoreError> {
        Ok(match self.store.user(key, user).await? {
            Some(u) => Standing {
                status: Status::parse(&u.status, u.status_until_ms),
                weight: u.strike_weight,
                weight_at_ms: u.strike_at_ms,
                reason: u.status_reason,
            },
            None => Standing {
                status: Status::Active,
                weight: 0.0,
                weight_at_ms: 0,
                reason: None,
            },
        })
    }

    async fn save(&self, key: &str, user: &str, s: &Standing, now: i64) -> Result<(), StoreError> {
        let sid = self.safety_ids.for_user(key, Some(user));
        self.store
            .set_standing(
                key,
                user,
                &sid,
                &StatusChange {
                    status: s.status.label(),
                    until_ms: s.status.until_ms(),
                    reason: s.reason.as_deref(),
                    strike_weight: s.weight,
                    strike_at_ms: s.weight_at_ms,
                    at_ms: now,
                },
            )
            .await?;
        let slot = slot(key, user);
        if s.status == Status::Active && s.weight <= 0.0 {
            self.standings.remove(&slot);
        } else {
            self.standings.insert(slot, s.clone());
        }
        Ok(())
    }

    /// Sets a sanction (or lifts one) on behalf of an operator or OpenAI. `for_how_long`
    /// applies to suspensions. Strikes are kept unless `reset`.
    pub async fn act(
        &self,
        key: &str,
        user: &str,
        action: Action,
        reason: &str,
        actor: Actor,
    ) -> Result<Standing, ActionError> {
        let now = now_ms();
        let mut standing = self.current(key, user).await?;
        standing.weight = ladder::decayed(
            standing.weight,
            standing.weight_at_ms,
            now,
            self.config.half_life,
        );
        standing.weight_at_ms = now;
        let label = match action {
            Action::Ban => {
                standing.status = Status::Banned;
                standing.reason = Some(reason.to_owned());
                "ban"
            }
            Action::Suspend(period) => {
                let until_ms = now + period.as_millis() as i64;
                // A longer suspension or a ban already in place is not shortened.
                match standing.status {
                    Status::Banned => {}
                    Status::Suspended { until_ms: u } if u >= until_ms => {}
                    _ => {
                        standing.status = Status::Suspended { until_ms };
                        standing.reason = Some(reason.to_owned());
                    }
                }
                "suspend"
            }
            Action::Lift => {
                standing.status = Status::Active;
                standing.reason = None;
                "unban"
            }
            Action::Reset => {
                self.store.clear_strikes(key, user).await?;
                standing = Standing {
                    status: Status::Active,
                    weight: 0.0,
                    weight_at_ms: now,
                    reason: None,
                };
                "reset"
            }
        };
        self.save(key, user, &standing, now).await?;
        if matches!(actor, Actor::OpenAi(_)) && matches!(action, Action::Ban | Action::Suspend(_)) {
            self.announce(key, user, label, reason, standing.status.until_ms());
        }
        let request_id = format!("wen_{:032x}", fastrand::u128(..));
        self.event(
            &request_id,
            key,
            user,
            label,
            serde_json::json!({
                "by": actor.label(),
                "reason": reason,
                "until_ms": standing.status.until_ms(),
            }),
        );
        Ok(standing)
    }

    /// OpenAI refused a request by this user's identifier: suspend them now, so their
    /// next requests stop at Warden instead of adding to the organization's record.
    pub async fn upstream_refused(&self, key: &str, user: &str, request_id: &str, code: &str) {
        if !self.config.enabled {
            return;
        }
        let reason = format!("OpenAI refused this user's request ({code})");
        let suspend = Action::Suspend(self.config.upstream_refusal_suspend_for);
        match self
            .act(
                key,
                user,
                suspend,
                &reason,
                Actor::OpenAi(format!("refusal:{request_id}")),
            )
            .await
        {
            Ok(_) => {
                tracing::warn!(key, end_user = %user, code, "OpenAI refused an end user; suspended")
            }
            Err(err) => tracing::error!(%err, key, "could not suspend an end user OpenAI refused"),
        }
    }

    fn event(
        &self,
        request_id: &str,
        key: &str,
        user: &str,
        action: &str,
        detail: serde_json::Value,
    ) {
        self.events.record(EventRecord {
            request_id: request_id.to_owned(),
            at_ms: now_ms(),
            kind: "enforcement",
            key_name: Some(key.to_owned()),
            end_user: Some(user.to_owned()),
            safety_identifier: Some(self.safety_ids.for_user(key, Some(user))),
            endpoint: "",
            outcome: "enforced",
            reason: Some(action.to_owned()),
            detail: Some(detail.to_string()),
            ..Default::default()
        });
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Action {
    Ban,
    Suspend(Duration),
    /// Unban / unsuspend; strikes stay.
    Lift,
    /// Lift and forget every strike.
    Reset,
}

/// Milliseconds since the epoch as RFC 3339 UTC, for messages and tables.
pub use crate::error::wait::format_ms;

/// A decayed strike total to two places for events and reports: the decay leaves values
/// like 2.9999999908313866, which say nothing more than 3.0.
pub fn rounded(weight: f64) -> f64 {
    (weight * 100.0).round() / 100.0
}
