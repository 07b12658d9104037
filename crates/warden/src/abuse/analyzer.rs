//! The background analyzer: owns every detector's state (one task, no locks), takes
//! observations off a bounded queue, raises alerts, keeps the throttle list, and
//! recomputes the risk score every second.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::mpsc;

use super::distillation::{Distillation, DistillationScore, Window};
use super::observation::Observation;
use super::risk::{self, ActorFinding, DistillationFinding, FlagRate, RiskReport};
use super::sharing::Sharing;
use super::spikes::{Ewma, SpikeRule};
use super::windows::{Windowed, WINDOWS};
use super::{actor_id, Message, Shared};
use crate::alerts::{Alert, Alerts, Severity};
use crate::config::abuse::{AbuseConfig, DistillationAction};
use crate::events::now_ms;
use crate::lockdown::{Lockdown, LockdownState};
use crate::store::Store;

/// Actors tracked at once; past this, new ones are counted in the totals only.
const MAX_ACTORS: usize = 50_000;
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

#[derive(Default)]
struct ActorState {
    is_key: bool,
    last_ms: i64,
    ewma: Ewma,
    distillation: Distillation,
    sharing: Sharing,
}

pub(super) struct Analyzer {
    pub(super) config: AbuseConfig,
    pub(super) shared: Arc<Shared>,
    pub(super) alerts: Alerts,
    pub(super) lockdown: Lockdown,
    pub(super) store: Store,
    requests: Windowed,
    flagged: Windowed,
    categories: HashMap<String, Windowed>,
    fail_open: Windowed,
    actors: HashMap<String, ActorState>,
    spikes: VecDeque<ActorFinding>,
    distillation: HashMap<String, DistillationFinding>,
    sharing: HashMap<String, ActorFinding>,
    /// Account-wide lines currently crossed (`flag_rate:1h`, `risk`): alerts go out when
    /// a line is crossed, not every second while it stays crossed.
    over: std::collections::HashSet<String>,
}

impl Analyzer {
    pub(super) fn new(
        config: AbuseConfig,
        shared: Arc<Shared>,
        alerts: Alerts,
        lockdown: Lockdown,
        store: Store,
    ) -> Analyzer {
        Analyzer {
            config,
            shared,
            alerts,
            lockdown,
            store,
            requests: Windowed::default(),
            flagged: Windowed::default(),
            categories: HashMap::new(),
            fail_open: Windowed::default(),
            actors: HashMap::new(),
            spikes: VecDeque::new(),
            distillation: HashMap::new(),
            sharing: HashMap::new(),
            over: std::collections::HashSet::new(),
        }
    }

    /// `true` when `line` is over now and was not at the last recomputation.
    fn crossed(&mut self, line: &str, over: bool) -> bool {
        if over {
            self.over.insert(line.to_owned())
        } else {
            self.over.remove(line);
            false
        }
    }

    pub(super) async fn run(mut self, mut rx: mpsc::Receiver<Message>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks = 0u64;
        loop {
            tokio::select! {
                message = rx.recv() => match message {
                    Some(Message::Request(observation)) => self.observe(*observation),
                    Some(Message::Output { key, user, tokens }) => self.output(key, user, tokens),
                    Some(Message::Flush(done)) => {
                        self.recompute().await;
                        let _ = done.send(());
                    }
                    None => return,
                },
                _ = tick.tick() => {
                    ticks += 1;
                    if ticks.is_multiple_of(60) {
                        self.sweep(now_ms());
                    }
                    self.recompute().await;
                }
            }
        }
    }

    fn observe(&mut self, o: Observation) {
        let at = o.at_ms;
        self.requests.add(at, 1);
        let relevant: Vec<&String> = o
            .categories
            .iter()
            .filter(|c| is_account_relevant(c))
            .collect();
        if !relevant.is_empty() {
            self.flagged.add(at, 1);
            for category in relevant {
                self.categories
                    .entry(category.clone())
                    .or_default()
                    .add(at, 1);
            }
        }
        if o.fail_open {
            self.fail_open.add(at, 1);
        }
        let fingerprint = o.prompt.as_deref().and_then(super::simhash::simhash);
        let Some(key) = o.key.as_deref() else { return };
        let mut actors = vec![(actor_id(key, None), true)];
        if let Some(user) = o.user.as_deref() {
            actors.push((actor_id(key, Some(user)), false));
        }
        for (id, is_key) in actors {
            self.observe_actor(&id, is_key, &o, fingerprint);
        }
    }

    fn observe_actor(&mut self, id: &str, is_key: bool, o: &Observation, fingerprint: Option<u64>) {
        let c = &self.config;
        let at = o.at_ms;
        if !self.actors.contains_key(id) && self.actors.len() >= MAX_ACTORS {
            return;
        }
        let state = self.actors.entry(id.to_owned()).or_default();
        state.is_key = is_key;
        state.last_ms = at;
        let mut raised: Vec<Alert> = Vec::new();

        let interval = at.div_euclid(c.spike_interval.as_millis().max(1) as i64);
        let rule = SpikeRule {
            factor: c.spike_factor,
            min_requests: c.spike_min_requests,
            warmup: c.spike_warmup_intervals,
        };
        if let Some(spike) = state.ewma.record(interval, &rule) {
            let detail = format!(
                "{} requests in {} s against a baseline of {:.1}",
                spike.count,
                c.spike_interval.as_secs(),
                spike.baseline
            );
            self.spikes.push_back(ActorFinding {
                actor: id.to_owned(),
                at_ms: at,
                detail: detail.clone(),
            });
            raised.push(Alert::new(
                "spike",
                format!("spike:{id}"),
                Severity::Warning,
                format!("Request spike: {id}"),
                detail,
                json!({"actor": id, "count": spike.count, "baseline": spike.baseline}),
            ));
        }

        let window = Window {
            window_ms: c.distillation_window.as_millis() as i64,
            min_requests: c.distillation_min_requests,
            volume: c.distillation_volume,
        };
        state
            .distillation
            .record(at, fingerprint, o.shape.clone(), &window);
        let scored = state.distillation.score(at, &window);

        let sharing_ms = c.sharing_window.as_millis() as i64;
        state.sharing.ips.record(o.ip, at, sharing_ms);
        if let Some(country) = o.country {
            state.sharing.countries.record(country, at, sharing_ms);
        }
        let ips = state.sharing.ips.distinct(at, sharing_ms);
        let countries = state.sharing.countries.distinct(at, sharing_ms);
        let max_ips = if is_key {
            c.key_max_ips
        } else {
            c.user_max_ips
        };
        if ips as u64 > max_ips || countries as u64 > c.max_countries {
            let detail = format!(
                "seen from {ips} IPs and {countries} countries in {} s (lines: {max_ips} IPs, {} countries)",
                c.sharing_window.as_secs(),
                c.max_countries
            );
            let first = !self.sharing.contains_key(id);
            self.sharing.insert(
                id.to_owned(),
                ActorFinding {
                    actor: id.to_owned(),
                    at_ms: at,
                    detail: detail.clone(),
                },
            );
            if first {
                raised.push(Alert::new(
                    "key_sharing",
                    format!("key_sharing:{id}"),
                    Severity::Warning,
                    format!("Possible key sharing: {id}"),
                    detail,
                    json!({"actor": id, "ips": ips, "countries": countries}),
                ));
            }
        }
        if let Some(scored) = scored {
            self.distillation_scored(id, at, scored, &mut raised);
        }
        for alert in raised {
            self.alerts.raise(alert);
        }
    }

    fn distillation_scored(
        &mut self,
        id: &str,
        at: i64,
        scored: DistillationScore,
        raised: &mut Vec<Alert>,
    ) {
        let c = &self.config;
        let threshold = c.distillation_threshold;
        if u64::from(scored.score) * 2 < threshold {
            self.distillation.remove(id);
            return;
        }
        if u64::from(scored.score) >= threshold {
            let throttle = c.distillation_action == DistillationAction::Throttle;
            raised.push(Alert::new(
                "distillation",
                format!("distillation:{id}"),
                Severity::Warning,
                format!("Distillation pattern: {id} scores {}", scored.score),
                scored.reasons.join("; "),
                json!({"actor": id, "score": scored.score, "reasons": scored.reasons, "throttled": throttle}),
            ));
            if throttle {
                self.shared.throttle(id, Instant::now() + c.throttle);
            }
        }
        self.distillation.insert(
            id.to_owned(),
            DistillationFinding {
                actor: id.to_owned(),
                at_ms: at,
                score: scored.score,
                requests: scored.requests,
                reasons: scored.reasons,
            },
        );
    }

    fn output(&mut self, key: String, user: Option<String>, tokens: u64) {
        let at = now_ms();
        let window_ms = self.config.distillation_window.as_millis() as i64;
        let mut ids = vec![actor_id(&key, None)];
        if let Some(user) = user.as_deref() {
            ids.push(actor_id(&key, Some(user)));
        }
        for id in ids {
            if let Some(state) = self.actors.get_mut(&id) {
                state.distillation.record_output(at, tokens, window_ms);
            }
        }
    }

    /// Forgets idle actors and stale findings.
    fn sweep(&mut self, now: i64) {
        let keep_ms = self
            .config
            .distillation_window
            .max(self.config.sharing_window)
            .max(self.config.spike_interval * 10)
            .as_millis() as i64;
        self.actors.retain(|_, a| a.last_ms > now - keep_ms);
        let sharing_ms = self.config.sharing_window.as_millis() as i64;
        self.sharing.retain(|_, f| f.at_ms > now - sharing_ms);
        for state in self.actors.values_mut() {
            state.sharing.ips.forget_before(now - sharing_ms);
            state.sharing.countries.forget_before(now - sharing_ms);
        }
        self.shared.expire_throttles();
    }

    fn flag_rates(&self, now: i64) -> Vec<FlagRate> {
        WINDOWS
            .iter()
            .zip(self.config.flag_rate)
            .map(|((label, window_ms), line)| {
                let requests = self.requests.sum(now, *window_ms);
                let flagged = self.flagged.sum(now, *window_ms);
                let categories: BTreeMap<String, u64> = self
                    .categories
                    .iter()
                    .map(|(name, w)| (name.clone(), w.sum(now, *window_ms)))
                    .filter(|(_, n)| *n > 0)
                    .collect();
                FlagRate {
                    window: label,
                    requests,
                    flagged,
                    rate: if requests == 0 {
                        0.0
                    } else {
                        flagged as f64 / requests as f64
                    },
                    line,
                    categories,
                }
            })
            .collect()
    }

    async fn recompute(&mut self) {
        let now = now_ms();
        while self
            .spikes
            .front()
            .is_some_and(|s| s.at_ms <= now - HOUR_MS)
        {
            self.spikes.pop_front();
        }
        let window_ms = self.config.distillation_window.as_millis() as i64;
        self.distillation.retain(|_, f| f.at_ms > now - window_ms);
        let sharing_ms = self.config.sharing_window.as_millis() as i64;
        self.sharing.retain(|_, f| f.at_ms > now - sharing_ms);

        let flag_rates = self.flag_rates(now);
        for rate in &flag_rates {
            let over =
                rate.requests >= self.config.flag_rate_min_requests && rate.rate >= rate.line;
            if self.crossed(&format!("flag_rate:{}", rate.window), over) {
                self.alerts.raise(Alert::new(
                    "flag_rate",
                    format!("flag_rate:{}", rate.window),
                    Severity::Critical,
                    format!(
                        "Flag rate {:.1}% over {:.1}% in the last {}",
                        rate.rate * 100.0,
                        rate.line * 100.0,
                        rate.window
                    ),
                    format!(
                        "{} of {} requests flagged or blocked for content; by category: {:?}",
                        rate.flagged, rate.requests, rate.categories
                    ),
                    json!({"window": rate.window, "rate": rate.rate, "line": rate.line, "categories": rate.categories}),
                ));
            }
        }
        let mut distillation: Vec<DistillationFinding> =
            self.distillation.values().cloned().collect();
        distillation.sort_by_key(|d| std::cmp::Reverse(d.score));
        let mut sharing: Vec<ActorFinding> = self.sharing.values().cloned().collect();
        sharing.sort_by(|a, b| a.actor.cmp(&b.actor));
        let enforcement = self.shared.enforcement();
        let fail_open_24h = self.fail_open.sum(now, DAY_MS);
        let (score, reasons) = risk::score(&risk::Inputs {
            flag_rates: &flag_rates,
            min_requests: self.config.flag_rate_min_requests,
            enforcement,
            spikes: self.spikes.len(),
            distillation_top: distillation.first().map(|d| (d.actor.as_str(), d.score)),
            distillation_threshold: self.config.distillation_threshold,
            sharing: sharing.len(),
            fail_open_24h,
        });
        let report = RiskReport {
            score,
            computed_at_ms: now,
            reasons,
            flag_rates,
            spikes: self.spikes.iter().cloned().collect(),
            distillation,
            key_sharing: sharing,
            moderation_fail_open_24h: fail_open_24h,
            enforcement,
            dropped_observations: self.shared.dropped.load(Ordering::Relaxed),
        };
        if self.crossed("risk", u64::from(score) >= self.config.risk_alert_above) {
            let summary: Vec<String> = report
                .reasons
                .iter()
                .map(|r| format!("{} (+{})", r.detail, r.points))
                .collect();
            self.alerts.raise(Alert::new(
                "risk",
                "risk",
                Severity::Critical,
                format!("Account risk score {score}"),
                summary.join("; "),
                json!({"score": score, "reasons": report.reasons}),
            ));
        }
        let auto = self.lockdown.config().auto_above;
        if let Some(line) = auto.filter(|line| u64::from(score) >= *line) {
            if !self.lockdown.is_on() && !self.shared.auto_lockdown_sent() {
                self.auto_lockdown(score, line).await;
            }
        }
        self.shared.risk.store(Arc::new(report));
    }

    async fn auto_lockdown(&self, score: u8, line: u64) {
        let state = LockdownState::new(
            true,
            "auto",
            Some(format!("risk score {score} reached auto_above = {line}")),
        );
        match crate::lockdown::save(&self.store, &state).await {
            Ok(()) => {
                self.shared.mark_auto_lockdown();
                self.alerts.raise(Alert::new(
                    "lockdown",
                    "lockdown:auto",
                    Severity::Critical,
                    "Lockdown turned on automatically",
                    format!("The risk score reached {score} (auto_above = {line})."),
                    json!({"score": score, "auto_above": line}),
                ));
            }
            Err(err) => tracing::error!(%err, "could not turn lockdown on automatically"),
        }
    }
}

/// Categories that count towards the organization's flag rate: the Moderation
/// endpoint's and jailbreak attempts. Secrets and PII rules protect the operator, not
/// OpenAI's policies.
fn is_account_relevant(category: &str) -> bool {
    category == "jailbreak" || crate::safety::moderation::categories::index_of(category).is_some()
}
