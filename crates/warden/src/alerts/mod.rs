//! Alerts: anything in Warden can `raise` one without waiting. The same alert (same
//! dedup key) is sent at most once per cool-down; at most `max_per_minute` leave per
//! minute; a bounded queue sits between `raise` and the sender, and a full queue drops
//! (and counts) rather than block a request. Each webhook is retried with backoff.

mod webhook;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::mpsc;

use crate::config::alerts::AlertsConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Alert {
    /// Same key, same alert: `distillation:key:app`, `risk`, `ban:app:alice`, …
    pub key: String,
    /// What kind of alert (`key_sharing`, `spike`, …): the low-cardinality label.
    pub kind: &'static str,
    pub severity: Severity,
    pub title: String,
    pub text: String,
    /// Structured details for the JSON form.
    pub fields: serde_json::Value,
    pub at_ms: i64,
}

impl Alert {
    pub fn new(
        kind: &'static str,
        key: impl Into<String>,
        severity: Severity,
        title: impl Into<String>,
        text: impl Into<String>,
        fields: serde_json::Value,
    ) -> Alert {
        Alert {
            key: key.into(),
            kind,
            severity,
            title: title.into(),
            text: text.into(),
            fields,
            at_ms: crate::events::now_ms(),
        }
    }
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct AlertCounts {
    pub raised: AtomicU64,
    /// Same key within the cool-down.
    pub deduplicated: AtomicU64,
    /// Queue full or over `max_per_minute`.
    pub dropped: AtomicU64,
    pub delivered: AtomicU64,
    /// A webhook still failing after every retry.
    pub failed: AtomicU64,
}

struct Inner {
    tx: mpsc::Sender<Alert>,
    recent: Mutex<HashMap<String, Instant>>,
    cooldown: Duration,
    counts: Arc<AlertCounts>,
}

#[derive(Clone)]
pub struct Alerts {
    inner: Arc<Inner>,
}

impl Alerts {
    /// Starts the sender task (it ends when every handle is dropped).
    pub fn start(config: &AlertsConfig) -> anyhow::Result<Alerts> {
        let (tx, rx) = mpsc::channel(config.queue);
        let counts = Arc::new(AlertCounts::default());
        let sender = webhook::Sender::new(config, counts.clone())?;
        tokio::spawn(sender.run(rx));
        Ok(Alerts {
            inner: Arc::new(Inner {
                tx,
                recent: Mutex::new(HashMap::new()),
                cooldown: config.cooldown,
                counts,
            }),
        })
    }

    /// Queues an alert without waiting; `false` when it was a duplicate or dropped.
    pub fn raise(&self, alert: Alert) -> bool {
        let counts = &self.inner.counts;
        counts.raised.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        if let Ok(mut recent) = self.inner.recent.lock() {
            if recent
                .get(&alert.key)
                .is_some_and(|at| now.duration_since(*at) < self.inner.cooldown)
            {
                counts.deduplicated.fetch_add(1, Ordering::Relaxed);
                return false;
            }
            if recent.len() >= 4096 {
                let cooldown = self.inner.cooldown;
                recent.retain(|_, at| now.duration_since(*at) < cooldown);
            }
            recent.insert(alert.key.clone(), now);
        }
        tracing::warn!(
            target: "warden::alerts",
            kind = alert.kind,
            key = %alert.key,
            severity = alert.severity.as_str(),
            title = %alert.title,
            "alert"
        );
        if self.inner.tx.try_send(alert).is_err() {
            counts.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    pub fn counts(&self) -> &AlertCounts {
        &self.inner.counts
    }

    /// Prometheus lines for the alert counters.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write;
        let c = self.counts();
        let _ = writeln!(
            out,
            "# HELP warden_alerts_total Alerts by what became of them."
        );
        let _ = writeln!(out, "# TYPE warden_alerts_total counter");
        for (state, n) in [
            ("raised", &c.raised),
            ("deduplicated", &c.deduplicated),
            ("dropped", &c.dropped),
            ("delivered", &c.delivered),
            ("failed", &c.failed),
        ] {
            let _ = writeln!(
                out,
                "warden_alerts_total{{state=\"{state}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
    }
}
