//! Limits on every actor (organization, key, end user, client IP): requests and tokens
//! per minute and per day (GCRA), in-flight requests, and the ticket that releases them
//! when the response ends and settles tokens with the upstream's `usage`.

pub mod gcra;
pub mod local;
pub mod refusal;
pub mod shared;
pub mod tokens;

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use smallvec::SmallVec;

use crate::config::limits::{ClusterConfig, LimitsConfig, Rates};
use crate::error::WardenError;
use gcra::Rate;
use local::{ActorState, Check, LocalLimits};
use refusal::{Budget, BudgetState, RateLimitRefusal};
use shared::{SharedCheck, SharedLimits};

const MINUTE_NS: u64 = 60 * 1_000_000_000;
const DAY_NS: u64 = 86_400 * 1_000_000_000;
/// Windows in cell order: (budget, period, label for messages and Redis keys).
const WINDOWS: [(Budget, u64, &str); 4] = [
    (Budget::Requests, MINUTE_NS, "rpm"),
    (Budget::Requests, DAY_NS, "rpd"),
    (Budget::Tokens, MINUTE_NS, "tpm"),
    (Budget::Tokens, DAY_NS, "tpd"),
];
/// A concurrency refusal clears as soon as one request ends; retry soon.
const CONCURRENCY_RETRY: Duration = Duration::from_millis(500);

/// The actors one request is counted against.
#[derive(Debug, Clone)]
pub struct Admission<'a> {
    pub key: &'a str,
    pub key_rates: Rates,
    /// The end user and their tier's rates, when the request names one.
    pub user: Option<(&'a str, &'a str, Rates)>,
    pub ip: IpAddr,
    pub prompt_tokens: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Organization,
    Key,
    User,
    Ip,
}

struct Actor<'a> {
    id: String,
    kind: Kind,
    /// The key name or the user's tier, for messages.
    name: &'a str,
    rates: Rates,
}

impl Actor<'_> {
    /// Built only for a refusal's message.
    fn label(&self) -> String {
        match self.kind {
            Kind::Organization => "the organization".into(),
            Kind::Key => format!("key '{}'", self.name),
            Kind::User => format!("this end user (tier '{}')", self.name),
            Kind::Ip => "this client IP".into(),
        }
    }
}

type Actors<'a> = SmallVec<[Actor<'a>; 4]>;
type States = SmallVec<[Arc<ActorState>; 4]>;
type Checks = SmallVec<[Check; 16]>;

/// An actor id: parts joined by U+001F (a key or user name cannot hold it, so no two
/// actors share an id), without the formatting machinery.
fn id(parts: &[&str]) -> String {
    let mut out = String::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            out.push('\u{1f}');
        }
        out.push_str(part);
    }
    out
}

/// An actor's name in Redis keys. End-user ids (often e-mail addresses) never appear
/// there in clear: a user's is `u` and the first 16 bytes of SHA-256(key U+001F user),
/// in hex. Other actors keep their readable ids.
fn redis_actor(actor: &Actor<'_>) -> String {
    if actor.kind != Kind::User {
        return actor.id.clone();
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = ring::digest::digest(&ring::digest::SHA256, actor.id.as_bytes());
    let mut out = String::with_capacity(34);
    out.push_str("u\u{1f}");
    for b in &digest.as_ref()[..16] {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 15)] as char);
    }
    out
}

/// `i` and the address's bytes in hex: cheaper than `Display` for IPs.
fn ip_id(ip: IpAddr) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let octets: SmallVec<[u8; 16]> = match ip {
        IpAddr::V4(v4) => SmallVec::from_slice(&v4.octets()),
        IpAddr::V6(v6) => SmallVec::from_slice(&v6.octets()),
    };
    let mut out = String::with_capacity(2 + octets.len() * 2);
    out.push_str("i\u{1f}");
    for b in octets {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 15)] as char);
    }
    out
}

fn window_limit(rates: &Rates, window: usize) -> Option<u64> {
    match window {
        0 => rates.requests_per_minute,
        1 => rates.requests_per_day,
        2 => rates.tokens_per_minute,
        _ => rates.tokens_per_day,
    }
}

pub struct Inner {
    local: LocalLimits,
    shared: Option<Arc<SharedLimits>>,
    /// The organization's and each client IP's rates; a config reload replaces them.
    rates: arc_swap::ArcSwap<(Rates, Rates)>,
    /// Every limit times this, in thousandths (1000 = as configured; lockdown lowers it).
    scale_permille: AtomicU32,
}

#[derive(Clone)]
pub struct Limiter {
    inner: Arc<Inner>,
}

impl Limiter {
    /// A limiter; with a Redis URL it shares its decisions (and connects in the background).
    pub fn new(limits: &LimitsConfig, cluster: &ClusterConfig) -> anyhow::Result<Limiter> {
        let shared = match &cluster.redis_url {
            Some(url) => Some(SharedLimits::start(
                url,
                &cluster.key_prefix,
                cluster.timeout,
            )?),
            None => None,
        };
        Ok(Limiter {
            inner: Arc::new(Inner {
                local: LocalLimits::default(),
                shared,
                rates: arc_swap::ArcSwap::from_pointee((limits.organization, limits.per_ip)),
                scale_permille: AtomicU32::new(1000),
            }),
        })
    }

    /// Takes the organization and per-IP rates of a reloaded config. Counters are kept:
    /// GCRA cells hold arrival times, so a new rate applies to the budget already spent.
    pub fn set_rates(&self, limits: &LimitsConfig) {
        self.inner
            .rates
            .store(Arc::new((limits.organization, limits.per_ip)));
    }

    /// Scales every limit (lockdown halves them); 1.0 restores the configured values.
    pub fn set_scale(&self, factor: f64) {
        let permille = (factor.clamp(0.001, 1.0) * 1000.0).round() as u32;
        self.inner.scale_permille.store(permille, Ordering::Relaxed);
    }

    /// A limit after `set_scale`; never below 1.
    fn scaled(&self, limit: u64) -> u64 {
        match self.inner.scale_permille.load(Ordering::Relaxed) {
            1000.. => limit,
            permille => (limit.saturating_mul(u64::from(permille)) / 1000).max(1),
        }
    }

    pub fn is_shared(&self) -> bool {
        self.inner.shared.is_some()
    }

    /// `Some(true)` while Redis is configured but unusable and limits are per process.
    pub fn degraded(&self) -> Option<bool> {
        self.inner.shared.as_ref().map(|s| s.degraded())
    }

    /// Forgets idle actors now and then so the map holds only active ones.
    pub fn spawn_sweeper(&self) -> tokio::task::JoinHandle<()> {
        let inner = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(30));
            loop {
                tick.tick().await;
                let Some(inner) = inner.upgrade() else { return };
                inner.local.sweep();
            }
        })
    }

    fn actors<'a>(&self, a: &Admission<'a>) -> SmallVec<[Actor<'a>; 4]> {
        let mut actors = SmallVec::new();
        let (organization, per_ip) = **self.inner.rates.load();
        actors.push(Actor {
            id: "o".into(),
            kind: Kind::Organization,
            name: "",
            rates: organization,
        });
        actors.push(Actor {
            id: id(&["k", a.key]),
            kind: Kind::Key,
            name: a.key,
            rates: a.key_rates,
        });
        if let Some((user, tier, rates)) = a.user {
            actors.push(Actor {
                id: id(&["u", a.key, user]),
                kind: Kind::User,
                name: tier,
                rates,
            });
        }
        actors.push(Actor {
            id: ip_id(a.ip),
            kind: Kind::Ip,
            name: "",
            rates: per_ip,
        });
        actors
    }

    /// Decides locally, without waiting (no Redis configured).
    pub fn admit_local(&self, a: &Admission<'_>) -> Result<Ticket, WardenError> {
        let (actors, states, checks, ticket) = self.prepare(a)?;
        let outcome = self.inner.local.take_all(&states, &checks);
        self.conclude(&actors, &checks, ticket, outcome, false)
    }

    /// Decides through Redis when configured and healthy, else locally.
    pub async fn admit(&self, a: &Admission<'_>) -> Result<Ticket, WardenError> {
        let Some(shared) = self.inner.shared.clone() else {
            return self.admit_local(a);
        };
        let (actors, states, checks, mut ticket) = self.prepare(a)?;
        ticket.actor_ids = actors.iter().map(redis_actor).collect();
        let remote: Vec<SharedCheck> = checks
            .iter()
            .map(|c| SharedCheck {
                key: shared.key(&ticket.actor_ids[c.actor], WINDOWS[c.window].2),
                rate: c.rate,
                cost: c.cost,
            })
            .collect();
        let outcome = match shared.admit(&remote).await {
            Some(answer) => {
                let outcome = shared_outcome(&checks, &answer);
                self.mirror(&states, &checks, &outcome);
                outcome
            }
            None => self.inner.local.take_all(&states, &checks),
        };
        let via_redis = !shared.degraded();
        self.conclude(&actors, &checks, ticket, outcome, via_redis)
    }

    /// Keeps each local cell at the shared state Redis just reported, so when Redis
    /// goes away the local fallback starts from the last known usage, not a full bucket
    /// (an outage must not grant every actor a fresh burst). One atomic store per check.
    fn mirror(&self, states: &States, checks: &Checks, outcome: &local::Outcome) {
        // The shared outcome's clock has now = DAY_NS; move it onto the local clock.
        let now = self.inner.local.now();
        for (check, tat) in checks.iter().zip(&outcome.tats) {
            let ahead = tat.saturating_sub(outcome.now);
            states[check.actor].cells[check.window].mirror(now.saturating_add(ahead));
        }
    }

    /// Takes the in-flight slots (or refuses) and lists the rate checks.
    #[allow(
        clippy::type_complexity,
        reason = "the four parts of one admission, named at the call site"
    )]
    fn prepare<'a>(
        &self,
        a: &Admission<'a>,
    ) -> Result<(Actors<'a>, States, Checks, Ticket), WardenError> {
        let actors = self.actors(a);
        let states: States = actors
            .iter()
            .map(|actor| self.inner.local.actor(&actor.id))
            .collect();
        let mut ticket = Ticket {
            inner: self.inner.clone(),
            in_flight: SmallVec::new(),
            token_cells: SmallVec::new(),
            estimated: a.prompt_tokens,
            actor_ids: Vec::new(),
            via_redis: false,
            settled: AtomicBool::new(false),
            strip_usage_chunk: false,
            priority: Default::default(),
        };
        for (actor, state) in actors.iter().zip(&states) {
            if let Some(max) = actor.rates.concurrency.map(|m| self.scaled(m)) {
                let before = state.in_flight.fetch_add(1, Ordering::AcqRel);
                ticket.in_flight.push(state.clone());
                if before >= max {
                    // Dropping the ticket gives back the slots taken so far.
                    return Err(WardenError::Refused(std::sync::Arc::new(RateLimitRefusal {
                        budget: Budget::Requests,
                        message: format!(
                            "Too many concurrent requests for {}: limit {max} in flight. Please try again in {}.",
                            actor.label(),
                            refusal::wait_text(CONCURRENCY_RETRY)
                        ),
                        retry_after: Some(CONCURRENCY_RETRY),
                        requests: None,
                        tokens: None,
                    })));
                }
            }
        }
        let mut checks = Checks::new();
        for (i, actor) in actors.iter().enumerate() {
            for (w, (budget, period, _)) in WINDOWS.iter().enumerate() {
                let Some(limit) = window_limit(&actor.rates, w).map(|l| self.scaled(l)) else {
                    continue;
                };
                let rate = Rate::new(limit, *period);
                let cost = match budget {
                    Budget::Requests => 1,
                    Budget::Tokens => a.prompt_tokens,
                };
                if *budget == Budget::Tokens {
                    ticket.token_cells.push(TokenCell {
                        state: states[i].clone(),
                        window: w,
                        rate,
                        actor: i,
                    });
                }
                checks.push(Check {
                    actor: i,
                    window: w,
                    rate,
                    cost,
                });
            }
        }
        Ok((actors, states, checks, ticket))
    }

    fn conclude(
        &self,
        actors: &[Actor<'_>],
        checks: &[Check],
        mut ticket: Ticket,
        outcome: local::Outcome,
        via_redis: bool,
    ) -> Result<Ticket, WardenError> {
        ticket.via_redis = via_redis;
        // The refusal that waits longest; one that never fits beats every wait.
        let Some(&(worst, wait)) = outcome.refused.iter().max_by_key(|(_, wait)| match wait {
            None => u64::MAX,
            Some(ns) => *ns,
        }) else {
            return Ok(ticket);
        };
        let check = checks[worst];
        let actor = &actors[check.actor];
        let (budget, _, window_label) = WINDOWS[check.window];
        let state_of = |window: usize| {
            checks
                .iter()
                .position(|c| c.actor == check.actor && c.window == window)
                .map(|i| BudgetState {
                    limit: checks[i].rate.limit,
                    remaining: checks[i].rate.remaining(outcome.tats[i], outcome.now),
                    reset: Duration::from_nanos(outcome.tats[i].saturating_sub(outcome.now)),
                })
        };
        let day = check.window % 2;
        let per = if day == 1 { "day" } else { "minute" };
        let what = match budget {
            Budget::Requests => "requests",
            Budget::Tokens => "tokens",
        };
        let message = match wait {
            Some(ns) => format!(
                "Rate limit reached for {} on {what} per {per} ({window_label}): Limit {}, Requested {}. Please try again in {}.",
                actor.label(),
                check.rate.limit,
                check.cost,
                refusal::wait_text(Duration::from_nanos(ns))
            ),
            None => format!(
                "Request too large for {} on {what} per {per} ({window_label}): Limit {}, Requested {}. Send a smaller request.",
                actor.label(), check.rate.limit, check.cost
            ),
        };
        Err(WardenError::Refused(std::sync::Arc::new(
            RateLimitRefusal {
                budget,
                message,
                retry_after: wait.map(Duration::from_nanos),
                requests: state_of(day),
                tokens: state_of(2 + day),
            },
        )))
    }
}

/// Turns Redis's answer into the local shape (arrival times on a clock whose now is
/// `ahead` = 0, so remaining and reset come out the same).
fn shared_outcome(checks: &[Check], answer: &shared::SharedOutcome) -> local::Outcome {
    let now = DAY_NS;
    let mut tats = SmallVec::new();
    let mut refused = SmallVec::new();
    for (i, check) in checks.iter().enumerate() {
        let ahead = answer.ahead_ns.get(i).copied().unwrap_or(0);
        let need = check.rate.cost_ns(check.cost);
        if answer.allowed {
            tats.push(now + ahead + need);
        } else {
            tats.push(now + ahead);
            if need > check.rate.period_ns {
                refused.push((i, None));
            } else if ahead + need > check.rate.period_ns {
                refused.push((i, Some(ahead + need - check.rate.period_ns)));
            }
        }
    }
    local::Outcome { now, tats, refused }
}

struct TokenCell {
    state: Arc<ActorState>,
    window: usize,
    rate: Rate,
    actor: usize,
}

/// An admitted request: holds its in-flight slots until dropped (when both the
/// pipeline and the relayed response are done) and settles its token estimate once.
pub struct Ticket {
    inner: Arc<Inner>,
    in_flight: SmallVec<[Arc<ActorState>; 4]>,
    token_cells: SmallVec<[TokenCell; 8]>,
    estimated: u64,
    /// Actor ids, kept only when decided through Redis (to settle there).
    actor_ids: Vec<String>,
    via_redis: bool,
    settled: AtomicBool,
    /// Warden asked for `stream_options.include_usage`; the client did not.
    pub strip_usage_chunk: bool,
    /// The request's tier among all tiers, for upstream pacing (lowest is shed first).
    pub priority: crate::proxy::pacing::Priority,
}

impl Ticket {
    pub fn estimated_prompt_tokens(&self) -> u64 {
        self.estimated
    }

    /// Replaces the prompt estimate with what upstream reports (prompt + completion);
    /// `None` keeps the estimate (a stream that broke before its usage).
    pub fn settle(&self, actual_total: Option<u64>) {
        if self.settled.swap(true, Ordering::AcqRel) {
            return;
        }
        let Some(actual) = actual_total else { return };
        let delta = actual as i64 - self.estimated as i64;
        if delta == 0 || self.token_cells.is_empty() {
            return;
        }
        if let (true, Some(shared)) = (self.via_redis, self.inner.shared.clone()) {
            let cells: Vec<(String, Rate, i64)> = self
                .token_cells
                .iter()
                .filter_map(|c| {
                    let id = self.actor_ids.get(c.actor)?;
                    Some((shared.key(id, WINDOWS[c.window].2), c.rate, delta))
                })
                .collect();
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move { shared.adjust(&cells).await });
                return;
            }
        }
        for cell in &self.token_cells {
            self.inner
                .local
                .adjust(&cell.state, cell.window, cell.rate, delta);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        for state in &self.in_flight {
            state.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests;
