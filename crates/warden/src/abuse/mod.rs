//! Live abuse detection. The hot path only queues an `Observation` (a few field lookups,
//! no parsing) on a bounded channel; one background task runs the detectors:
//! - organization flag rate by category over 1 h, 24 h and 7 d;
//! - request-rate spikes per key and end user against their own EWMA baseline;
//! - the distillation score per key and end user (volume, templated prompts, JSON
//!   output, n > 1, logprobs, long outputs), with an optional throttle;
//! - key sharing: one key or end user seen from many IPs or countries;
//!
//! and from them the account risk score (0-100 with reasons), recomputed every second.
//! Crossing a line raises an alert.

mod analyzer;
pub mod distillation;
pub mod observation;
pub mod risk;
pub mod sharing;
pub mod simhash;
pub mod spikes;
pub mod windows;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use dashmap::DashMap;
use tokio::sync::{mpsc, oneshot};

use crate::alerts::Alerts;
use crate::config::abuse::AbuseConfig;
use crate::error::WardenError;
use crate::lockdown::Lockdown;
use crate::pipeline::RequestContext;
use crate::store::Store;
pub use observation::Observation;
pub use risk::{Enforcement, RiskReport};

/// Observations waiting for the analyzer; a full queue drops (and counts) them.
const QUEUE: usize = 4096;

pub(crate) enum Message {
    Request(Box<Observation>),
    Output {
        key: String,
        user: Option<String>,
        tokens: u64,
    },
    Flush(oneshot::Sender<()>),
}

/// `key:<name>` or `user:<key>/<end user>`: how actors are named in reports and alerts.
pub fn actor_id(key: &str, user: Option<&str>) -> String {
    match user {
        None => format!("key:{key}"),
        Some(user) => format!("user:{key}/{user}"),
    }
}

/// State the analyzer shares with request tasks and the admin API.
pub(crate) struct Shared {
    risk: ArcSwap<RiskReport>,
    /// Actors refused until the instant (distillation with `action = "throttle"`).
    throttled: DashMap<String, Instant>,
    throttled_len: AtomicUsize,
    enforcement: Mutex<Enforcement>,
    dropped: AtomicU64,
    auto_lockdown: AtomicBool,
}

impl Shared {
    fn throttle(&self, actor: &str, until: Instant) {
        self.throttled.insert(actor.to_owned(), until);
        self.throttled_len
            .store(self.throttled.len(), Ordering::Relaxed);
    }

    fn expire_throttles(&self) {
        let now = Instant::now();
        self.throttled.retain(|_, until| *until > now);
        self.throttled_len
            .store(self.throttled.len(), Ordering::Relaxed);
    }

    fn enforcement(&self) -> Enforcement {
        self.enforcement.lock().map(|e| *e).unwrap_or_default()
    }

    fn auto_lockdown_sent(&self) -> bool {
        self.auto_lockdown.load(Ordering::Relaxed)
    }

    fn mark_auto_lockdown(&self) {
        self.auto_lockdown.store(true, Ordering::Relaxed);
    }
}

#[derive(Clone)]
pub struct Abuse {
    tx: Option<mpsc::Sender<Message>>,
    shared: Arc<Shared>,
}

impl Abuse {
    /// Starts the analyzer (unless `[abuse] enabled = false`, when every call is a no-op
    /// and the risk report stays empty).
    pub fn start(config: AbuseConfig, alerts: Alerts, lockdown: Lockdown, store: Store) -> Abuse {
        let shared = Arc::new(Shared {
            risk: ArcSwap::from_pointee(RiskReport::default()),
            throttled: DashMap::new(),
            throttled_len: AtomicUsize::new(0),
            enforcement: Mutex::new(Enforcement::default()),
            dropped: AtomicU64::new(0),
            auto_lockdown: AtomicBool::new(false),
        });
        let tx = config.enabled.then(|| {
            let (tx, rx) = mpsc::channel(QUEUE);
            let analyzer = analyzer::Analyzer::new(config, shared.clone(), alerts, lockdown, store);
            tokio::spawn(analyzer.run(rx));
            tx
        });
        Abuse { tx, shared }
    }

    fn send(&self, message: Message) {
        let Some(tx) = &self.tx else { return };
        if tx.try_send(message).is_err() {
            let lost = self.shared.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if lost.is_power_of_two() {
                tracing::warn!(lost, "abuse analyzer queue full: observations dropped");
            }
        }
    }

    /// Called once per request after the pipeline ran (allowed or refused).
    /// Requests without a valid key are not counted: they never reach OpenAI and say
    /// nothing about the account's users.
    pub fn observe(&self, ctx: &RequestContext, refused: Option<&WardenError>) {
        if self.tx.is_some() && ctx.key.is_some() {
            self.send(Message::Request(Box::new(Observation::of(ctx, refused))));
        }
    }

    /// A response's output tokens, for the long-output signal.
    /// Whether the detector runs (`[abuse] enabled`).
    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    pub fn observe_output(&self, key: String, user: Option<String>, tokens: u64) {
        self.send(Message::Output { key, user, tokens });
    }

    /// The latest risk report (recomputed every second).
    pub fn risk(&self) -> Arc<RiskReport> {
        self.shared.risk.load_full()
    }

    /// The hook for end-user enforcement: current strike, suspension and ban totals
    /// feed the risk score from the next recomputation on.
    pub fn set_enforcement(&self, totals: Enforcement) {
        if let Ok(mut e) = self.shared.enforcement.lock() {
            *e = totals;
        }
    }

    /// How long this key or end user is still throttled, if at all. One atomic load
    /// when nobody is throttled.
    pub fn throttled(&self, key: &str, user: Option<&str>) -> Option<Duration> {
        if self.shared.throttled_len.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let now = Instant::now();
        let left = |id: String| {
            self.shared
                .throttled
                .get(&id)
                .and_then(|until| until.checked_duration_since(now))
                .filter(|d| !d.is_zero())
        };
        left(actor_id(key, None)).or_else(|| user.and_then(|u| left(actor_id(key, Some(u)))))
    }

    /// Waits until every observation queued so far is analysed and the report is fresh.
    pub async fn flush(&self) {
        let Some(tx) = &self.tx else { return };
        let (done, wait) = oneshot::channel();
        if tx.send(Message::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }

    /// Prometheus lines: the risk score, its parts, and what the analyzer dropped.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write;
        let report = self.risk();
        let _ = writeln!(out, "# HELP warden_risk_score Account risk score (0-100).");
        let _ = writeln!(out, "# TYPE warden_risk_score gauge");
        let _ = writeln!(out, "warden_risk_score {}", report.score);
        let _ = writeln!(
            out,
            "# HELP warden_risk_points Points each signal adds to the risk score."
        );
        let _ = writeln!(out, "# TYPE warden_risk_points gauge");
        for signal in [
            "flag_rate",
            "enforcement",
            "spikes",
            "distillation",
            "key_sharing",
            "moderation_fail_open",
        ] {
            let points = report
                .reasons
                .iter()
                .find(|r| r.signal == signal)
                .map_or(0, |r| r.points);
            let _ = writeln!(out, "warden_risk_points{{signal=\"{signal}\"}} {points}");
        }
        let _ = writeln!(
            out,
            "# HELP warden_flag_rate Share of requests flagged for content, per window."
        );
        let _ = writeln!(out, "# TYPE warden_flag_rate gauge");
        for rate in &report.flag_rates {
            let _ = writeln!(
                out,
                "warden_flag_rate{{window=\"{}\"}} {}",
                rate.window, rate.rate
            );
        }
        let _ = writeln!(
            out,
            "# HELP warden_abuse_observations_dropped_total Observations lost to a full analyzer queue."
        );
        let _ = writeln!(
            out,
            "# TYPE warden_abuse_observations_dropped_total counter"
        );
        let _ = writeln!(
            out,
            "warden_abuse_observations_dropped_total {}",
            self.shared.dropped.load(Ordering::Relaxed)
        );
    }
}
