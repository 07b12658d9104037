//! Upstream key hygiene with OpenAI's own Admin, Usage and Costs APIs: scheduled rotation,
//! leak detection by reconciling Warden's per-key counts with OpenAI's usage, unmanaged
//! keys, key age and real spend (see `docs/key-hygiene.md`).
//!
//! One pass, every `reconcile_every` (and on demand), in this order:
//! 1. key age: active vault keys older than `max_key_age` alert (no Admin key needed);
//! 2. inventory: the projects' keys, split into Warden's and unmanaged ones (alert);
//! 3. reconciliation: OpenAI's usage per key against Warden's ledger (alert, event, and
//!    by policy an immediate rotation);
//! 4. rotations due by `rotate_every_days`;
//! 5. upstream deletion of rotated-out keys whose overlap ended;
//! 6. costs: real spend per project and day next to Warden's estimate (drift alert).

pub mod client;
mod costs;
pub mod inventory;
pub mod ledger;
pub mod reconcile;
mod rotation;
pub mod wire;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::{json, Value};

use crate::alerts::{Alert, Alerts, Severity};
use crate::config::openai_admin::OpenaiAdminConfig;
use crate::events::{now_ms, EventLog, EventRecord};
use crate::secret::Secret;
use crate::store::{MinuteCounts, Store};
use crate::vault::MasterKey;

pub use rotation::RotationError;

use client::AdminClient;
use inventory::{Held, Inventory};

/// Where the last pass's status is kept, so the report and every replica can read it.
pub const STATUS_SETTING: &str = "key_hygiene_status";
/// The Usage APIs read; images count requests only (their result has no tokens).
const USAGE_KINDS: [&str; 3] = ["completions", "embeddings", "images"];
/// `settings` rows naming findings already reported by some replica.
const REPORTED_PREFIX: &str = "hygiene_reported:";
/// How long those rows are kept (longer than any lookback).
const REPORTED_KEEP_MS: i64 = 8 * 86_400_000;
/// Most excess buckets kept in the status (newest first).
const MAX_LISTED: usize = 50;

/// What the last pass found; served by the admin API and put in the report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    pub enabled: bool,
    pub at_ms: i64,
    /// The step that failed last, with OpenAI's error.
    pub errors: Vec<String>,
    pub managed: Vec<inventory::Managed>,
    pub unmanaged: Vec<inventory::Unmanaged>,
    pub compared: reconcile::Compared,
    pub excess: Vec<Value>,
    pub old_keys: Vec<Value>,
    pub rotations: Vec<Value>,
    pub costs: Vec<costs::DayCost>,
}

/// Secrets Warden holds outside the vault: the environment/file key and virtual keys'
/// own upstream keys, with the names the ledger counts them under.
pub type HeldOutsideVault = Vec<(String, Secret)>;

pub struct Hygiene {
    config: OpenaiAdminConfig,
    client: Option<AdminClient>,
    store: Store,
    vault: Option<Arc<MasterKey>>,
    held: HeldOutsideVault,
    alerts: Option<Alerts>,
    events: Option<EventLog>,
    pub ledger: Arc<ledger::Ledger>,
    status: Mutex<Status>,
    /// (key, minute) excesses and unmanaged key ids already recorded as events.
    reported: Mutex<HashSet<String>>,
    /// One pass at a time (the loop, the admin API's "run now", a rotation).
    running: tokio::sync::Mutex<()>,
    /// Events made without an event log (the CLI), for the caller to store.
    pending: Mutex<Vec<EventRecord>>,
}

impl Hygiene {
    pub fn new(
        config: OpenaiAdminConfig,
        admin_key: Option<&Secret>,
        default_base: &http::Uri,
        store: Store,
        vault: Option<Arc<MasterKey>>,
        held: HeldOutsideVault,
    ) -> anyhow::Result<Hygiene> {
        let client = match admin_key {
            Some(key) => Some(AdminClient::new(
                config.base_url.as_ref().unwrap_or(default_base),
                key,
                config.timeout,
            )?),
            None => None,
        };
        Ok(Hygiene {
            status: Mutex::new(Status {
                enabled: client.is_some(),
                ..Status::default()
            }),
            config,
            client,
            store,
            vault,
            held,
            alerts: None,
            events: None,
            ledger: Arc::default(),
            reported: Mutex::default(),
            running: tokio::sync::Mutex::new(()),
            pending: Mutex::default(),
        })
    }

    /// Alerts and events go here (a gateway); without them they are only logged (the CLI
    /// records its own).
    pub fn connect(&mut self, alerts: Alerts, events: EventLog) {
        self.alerts = Some(alerts);
        self.events = Some(events);
    }

    /// Events recorded while no event log was connected (the CLI stores them itself).
    pub fn take_pending_events(&self) -> Vec<EventRecord> {
        self.pending
            .lock()
            .map(|mut p| std::mem::take(&mut *p))
            .unwrap_or_default()
    }

    fn record(&self, event: EventRecord) {
        match &self.events {
            Some(events) => events.record(event),
            None => {
                if let Ok(mut pending) = self.pending.lock() {
                    pending.push(event);
                }
            }
        }
    }

    pub fn enabled(&self) -> bool {
        self.client.is_some()
    }

    /// How long a rotated-out key keeps working upstream.
    pub fn rotation_overlap(&self) -> std::time::Duration {
        self.config.rotation_overlap
    }

    pub fn status(&self) -> Status {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Runs a pass every `reconcile_every` (the first one at once) and flushes the ledger.
    pub fn spawn(self: &Arc<Self>) {
        if self.enabled() {
            self.ledger.spawn_flusher(self.store.clone());
        }
        let hygiene = Arc::downgrade(self);
        let every = self.config.reconcile_every;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(hygiene) = hygiene.upgrade() else {
                    return;
                };
                hygiene.pass().await;
            }
        });
    }

    /// One pass (see the module doc); failures are in the status and the log, never fatal.
    pub async fn pass(&self) -> Status {
        let _one = self.running.lock().await;
        let mut status = Status {
            enabled: self.enabled(),
            at_ms: now_ms(),
            ..Status::default()
        };
        let keys = match self.store.upstream_keys().await {
            Ok(keys) => keys,
            Err(err) => {
                status.errors.push(format!("store: {err}"));
                return self.publish(status).await;
            }
        };
        self.check_age(&keys, &mut status);
        let cutoff = format!("{:020}", now_ms() - REPORTED_KEEP_MS);
        if let Err(err) = self.store.prune_settings(REPORTED_PREFIX, &cutoff).await {
            tracing::debug!(%err, "could not prune reported findings");
        }
        if let Some(client) = &self.client {
            let held = self.held(&keys);
            match inventory::take(client, &self.config.projects, &held).await {
                Ok(inventory) => {
                    self.remember_ids(&inventory).await;
                    self.report_unmanaged(&inventory).await;
                    if let Err(err) = self.reconcile(client, &inventory, &mut status).await {
                        status.errors.push(format!("reconciliation: {err}"));
                    }
                    status.managed = inventory.managed;
                    status.unmanaged = inventory.unmanaged;
                }
                Err(err) => status.errors.push(format!("inventory: {err}")),
            }
            // Read again: a leak may have rotated a key just now.
            match self.store.upstream_keys().await {
                Ok(keys) => self.rotate_due(&keys, &mut status).await,
                Err(err) => status.errors.push(format!("store: {err}")),
            }
            self.delete_due(&mut status).await;
            if let Err(err) = self.costs(client, &mut status).await {
                status.errors.push(format!("costs: {err}"));
            }
        }
        for error in &status.errors {
            tracing::warn!(%error, "key hygiene pass");
        }
        self.publish(status).await
    }

    async fn publish(&self, status: Status) -> Status {
        if let Ok(mut current) = self.status.lock() {
            *current = status.clone();
        }
        if let Ok(text) = serde_json::to_string(&status) {
            if let Err(err) = self.store.set_setting(STATUS_SETTING, &text).await {
                tracing::warn!(%err, "could not store the key hygiene status");
            }
        }
        status
    }

    /// Every key Warden holds, vault keys opened (those deleted upstream are gone).
    fn held(&self, keys: &[crate::store::StoredUpstreamKey]) -> Vec<Held> {
        let mut held: Vec<Held> = self
            .held
            .iter()
            .map(|(name, secret)| Held {
                name: name.clone(),
                secret: secret.clone(),
                vault: None,
            })
            .collect();
        if let Some(master) = &self.vault {
            for key in keys.iter().filter(|k| k.deleted_upstream_ms.is_none()) {
                match master.open(&key.name, &key.sealed) {
                    Ok(secret) => held.push(Held {
                        name: key.name.clone(),
                        secret: Secret::new(String::from_utf8_lossy(&secret).into_owned()),
                        vault: Some(key.clone()),
                    }),
                    Err(err) => tracing::warn!(name = %key.name, %err, "cannot open vault key"),
                }
            }
        }
        held
    }

    async fn remember_ids(&self, inventory: &Inventory) {
        for (name, id) in &inventory.discovered {
            if let Err(err) = self.store.set_upstream_key_identity(name, id, None).await {
                tracing::warn!(%err, %name, "could not store the key's OpenAI id");
            }
        }
    }

    /// Whether this replica is the first in the cluster to report `what`: the insert of
    /// a row in `settings` decides, so several replicas send one alert and one event.
    /// Without an answer from the store it reports (a duplicate beats silence).
    async fn first_in_cluster(&self, what: String) -> bool {
        if !self.first_time(what.clone()) {
            return false;
        }
        let token = format!("{:020}:{:016x}", now_ms(), fastrand::u64(..));
        let name = format!("{REPORTED_PREFIX}{what}");
        match self.store.setting_or_insert(&name, &token).await {
            Ok(stored) => stored == token,
            Err(err) => {
                tracing::warn!(%err, "could not check whether another replica reported this");
                true
            }
        }
    }

    fn first_time(&self, what: String) -> bool {
        self.reported
            .lock()
            .map(|mut seen| {
                if seen.len() > 10_000 {
                    seen.clear();
                }
                seen.insert(what)
            })
            .unwrap_or(false)
    }

    fn check_age(&self, keys: &[crate::store::StoredUpstreamKey], status: &mut Status) {
        let Some(max) = self.config.max_key_age else {
            return;
        };
        let now = now_ms();
        for key in keys.iter().filter(|k| k.state == "active") {
            let age_days = (now - key.created_ms) / 86_400_000;
            if now - key.created_ms < max.as_millis() as i64 {
                continue;
            }
            status
                .old_keys
                .push(json!({"name": key.name, "age_days": age_days}));
            let max_days = max.as_secs() / 86_400;
            self.note(Note {
                kind: "upstream_key_old",
                dedup: format!("upstream_key_old:{}", key.name),
                severity: Severity::Warning,
                key: Some(&key.name),
                title: format!("Upstream key '{}' is {age_days} days old", key.name),
                text: format!("The active upstream key '{}' is older than {max_days} days. Rotate it (`warden upstream-keys rotate {} --now`) or set a schedule (`warden upstream-keys schedule {} --every-days 30`).", key.name, key.name, key.name),
                fields: json!({"key": key.name, "age_days": age_days, "max_age_days": max_days}),
                event: self.first_time(format!("old:{}", key.name)),
            });
        }
    }

    async fn report_unmanaged(&self, inventory: &Inventory) {
        for key in &inventory.unmanaged {
            if !self
                .first_in_cluster(format!("unmanaged:{}", key.api_key_id))
                .await
            {
                continue;
            }
            self.note(Note {
                kind: "upstream_key_unmanaged",
                dedup: format!("upstream_key_unmanaged:{}", key.api_key_id),
                severity: Severity::Warning,
                key: None,
                title: format!("Unmanaged OpenAI key {} ({}) in project {}", key.api_key_id, key.redacted_value, key.project),
                text: format!("The project {} holds the key {} ({}, owner {}) that Warden does not manage; any traffic on it bypasses Warden, and it may be the leak. Delete it in OpenAI's dashboard if nobody needs it.", key.project, key.api_key_id, key.redacted_value, key.owner),
                fields: serde_json::to_value(key).unwrap_or_default(),
                event: true,
            });
        }
    }

    async fn reconcile(
        &self,
        client: &AdminClient,
        inventory: &Inventory,
        status: &mut Status,
    ) -> anyhow::Result<()> {
        let (names, alias) = inventory.aliases();
        let now = now_ms() / 1000;
        let (first, end) = reconcile::window(&self.config, now);
        if end <= first {
            return Ok(());
        }
        let mut openai = reconcile::PerKeyMinute::new();
        for name in names.values() {
            openai.entry(name.clone()).or_default();
        }
        for kind in USAGE_KINDS {
            for bucket in client.usage(kind, first, end).await? {
                let minute = bucket.start_time - bucket.start_time.rem_euclid(60);
                for result in bucket.results {
                    let Some(name) = result.api_key_id.as_ref().and_then(|id| names.get(id)) else {
                        continue;
                    };
                    openai
                        .entry(name.clone())
                        .or_default()
                        .entry(minute)
                        .or_default()
                        .add(MinuteCounts {
                            requests: result.num_model_requests,
                            input_tokens: result.input_tokens,
                            output_tokens: result.output_tokens,
                        });
                }
            }
        }
        let k = reconcile::skew_minutes(&self.config) * 60;
        let mut warden = reconcile::PerKeyMinute::new();
        for (name, minute, counts) in self.store.upstream_usage(first - k, end + k).await? {
            let name = alias.get(&name).cloned().unwrap_or(name);
            warden
                .entry(name)
                .or_default()
                .entry(minute)
                .or_default()
                .add(counts);
        }
        let (found, compared) = reconcile::compare(&self.config, &openai, &warden, (first, end));
        status.compared = compared;
        let ids: HashMap<&str, &inventory::Managed> = inventory
            .managed
            .iter()
            .map(|m| (m.name.as_str(), m))
            .collect();
        let mut to_rotate = Vec::new();
        for excess in found.iter().rev().take(MAX_LISTED) {
            let managed = ids.get(excess.key.as_str());
            let bucket = crate::enforcement::format_ms(excess.minute * 1000);
            let fields = json!({
                "key": excess.key, "api_key_id": managed.map(|m| &m.api_key_id),
                "project": managed.map(|m| &m.project), "bucket_start": bucket,
                "bucket_start_unix": excess.minute, "bucket_seconds": 60,
                "excess_requests": excess.requests, "excess_tokens": excess.tokens,
                "openai_requests": excess.openai.requests, "warden_requests": excess.warden.requests,
                "openai_tokens": excess.openai.tokens(), "warden_tokens": excess.warden.tokens(),
            });
            status.excess.push(fields.clone());
            if !self
                .first_in_cluster(format!("excess:{}:{}", excess.key, excess.minute))
                .await
            {
                continue;
            }
            self.note(Note {
                kind: "upstream_key_used_elsewhere",
                dedup: format!("upstream_key_used_elsewhere:{}", excess.key),
                severity: Severity::Critical,
                key: Some(&excess.key),
                title: format!("Upstream key '{}' used outside Warden", excess.key),
                text: format!("OpenAI counted {} more requests ({} more tokens) on the upstream key '{}' in the minute from {bucket} than Warden sent: the key is probably leaked. Rotate it (`warden upstream-keys rotate {} --now`).", excess.requests, excess.tokens, excess.key, excess.key),
                fields,
                event: true,
            });
            if self.config.rotate_on_leak && !to_rotate.contains(&excess.key) {
                to_rotate.push(excess.key.clone());
            }
        }
        for name in to_rotate {
            match self.rotate_locked(&name, "used_elsewhere").await {
                Ok(new) => status
                    .rotations
                    .push(json!({"from": name, "to": new, "reason": "used_elsewhere"})),
                Err(err) => status
                    .errors
                    .push(format!("rotation of '{name}' after the leak: {err}")),
            }
        }
        // Rows far older than any lookback are of no more use.
        let keep = (self.config.lookback.as_secs() as i64 + 86_400).max(7 * 86_400);
        if let Err(err) = self.store.prune_upstream_usage(now - keep).await {
            tracing::debug!(%err, "could not prune upstream usage");
        }
        Ok(())
    }

    fn note(&self, note: Note<'_>) {
        match &self.alerts {
            Some(alerts) => {
                alerts.raise(Alert::new(
                    note.kind,
                    note.dedup,
                    note.severity,
                    note.title,
                    note.text,
                    note.fields.clone(),
                ));
            }
            None => tracing::warn!(kind = note.kind, title = %note.title, "key hygiene"),
        }
        if !note.event {
            return;
        }
        {
            self.record(EventRecord {
                request_id: format!("whk_{:032x}", fastrand::u128(..)),
                at_ms: now_ms(),
                kind: "alert",
                key_name: note.key.map(str::to_owned),
                endpoint: "",
                outcome: "flagged",
                reason: Some(note.kind.into()),
                detail: Some(note.fields.to_string()),
                ..Default::default()
            });
        }
    }

    /// Records one rotation step as an event of kind `admin` (reason `upstream_key_*`).
    fn step(&self, reason: &'static str, key: &str, outcome: &'static str, detail: Value) {
        tracing::info!(reason, key, %detail, "key rotation");
        {
            self.record(EventRecord {
                request_id: format!("whk_{:032x}", fastrand::u128(..)),
                at_ms: now_ms(),
                kind: "admin",
                key_name: Some(key.to_owned()),
                endpoint: "",
                outcome,
                reason: Some(reason.into()),
                detail: Some(detail.to_string()),
                ..Default::default()
            });
        }
    }
}

struct Note<'a> {
    kind: &'static str,
    dedup: String,
    severity: Severity,
    key: Option<&'a str>,
    title: String,
    text: String,
    fields: Value,
    /// Also an event (once per finding, while the alert repeats per cool-down).
    event: bool,
}
