//! Spend caps: what each request cost (upstream `usage` × the price table), summed per
//! organization, key and end user for the current UTC day and month, and checked against
//! their budgets before a request is forwarded.
//!
//! Counting is in memory (atomics, nano-USD); a background task writes the increments to
//! the store in one batch per `flush_ms` and reads back the totals, so a restart keeps
//! the budgets and replicas sharing one store see each other's spend within a flush.

pub mod period;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;

use crate::config::spend::{Budget, SpendConfig};
use crate::error::WardenError;
use crate::openai::usage::Usage;
use crate::store::Store;
use period::{Periods, Window};

/// Whose spend a counter holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    Organization,
    Key,
    User,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Organization => "org",
            Scope::Key => "key",
            Scope::User => "user",
        }
    }

    pub fn parse(text: &str) -> Option<Scope> {
        match text {
            "org" => Some(Scope::Organization),
            "key" => Some(Scope::Key),
            "user" => Some(Scope::User),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CounterKey {
    pub scope: Scope,
    /// "" for the organization, the key name, or key name U+001F end-user id.
    pub subject: String,
    pub period: String,
}

#[derive(Default)]
struct Counter {
    /// The store's total at the last read (all replicas).
    stored: AtomicU64,
    /// Counted here, not yet written.
    pending: AtomicU64,
    /// Being written now: still counted until the store's total includes it.
    flushing: AtomicU64,
}

impl Counter {
    fn total(&self) -> u64 {
        self.stored.load(Ordering::Acquire)
            + self.pending.load(Ordering::Acquire)
            + self.flushing.load(Ordering::Acquire)
    }
}

/// A budget that ran out.
#[derive(Debug, Clone)]
pub struct BudgetRefusal {
    pub message: String,
    /// Until the budget's period ends.
    pub resets_in: Duration,
}

impl crate::error::Refusal for BudgetRefusal {
    fn status(&self) -> http::StatusCode {
        http::StatusCode::TOO_MANY_REQUESTS
    }
    fn code(&self) -> &'static str {
        "budget_exceeded"
    }
    /// OpenAI's type for "no money left"; the SDKs do not retry it with the header below.
    fn error_type(&self) -> &'static str {
        "insufficient_quota"
    }
    fn message(&self) -> String {
        self.message.clone()
    }
    /// Waiting hours is not a retry: say when, and tell the SDKs not to retry.
    fn headers(&self) -> Vec<(http::HeaderName, http::HeaderValue)> {
        let mut headers = crate::error::wait::retry_headers(self.resets_in);
        headers.push((
            http::HeaderName::from_static("x-should-retry"),
            http::HeaderValue::from_static("false"),
        ));
        headers
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

const NANO_PER_USD: f64 = 1e9;

struct Inner {
    config: SpendConfig,
    store: Store,
    counters: DashMap<CounterKey, Arc<Counter>, foldhash::fast::RandomState>,
}

#[derive(Clone)]
pub struct Spend {
    inner: Arc<Inner>,
}

fn user_subject(key: &str, user: &str) -> String {
    let mut s = String::with_capacity(key.len() + user.len() + 1);
    s.push_str(key);
    s.push('\u{1f}');
    s.push_str(user);
    s
}

impl Spend {
    /// Loads this day's and month's totals from the store.
    pub async fn start(config: SpendConfig, store: Store) -> anyhow::Result<Spend> {
        let spend = Spend::start_without_store(config, store);
        spend.load().await?;
        Ok(spend)
    }

    /// Counts from zero until `load` adds the stored totals (the local count is kept
    /// apart from them, so nothing is counted twice). Budgets are not enforced on the
    /// stored spend meanwhile.
    pub fn start_without_store(config: SpendConfig, store: Store) -> Spend {
        Spend {
            inner: Arc::new(Inner {
                config,
                store,
                counters: DashMap::default(),
            }),
        }
    }

    /// Reads this day's and month's stored totals.
    pub async fn load(&self) -> anyhow::Result<()> {
        if self.inner.config.enabled {
            self.reload(&Periods::now()).await?;
        }
        Ok(())
    }

    pub fn enabled(&self) -> bool {
        self.inner.config.enabled
    }

    /// Writes counted spend every `flush_ms` until the last handle is dropped.
    pub fn spawn_flusher(&self) -> tokio::task::JoinHandle<()> {
        let inner = Arc::downgrade(&self.inner);
        let every = self.inner.config.flush;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(inner) = inner.upgrade() else { return };
                Spend { inner }.flush().await;
            }
        })
    }

    fn total(&self, key: &CounterKey) -> u64 {
        self.inner.counters.get(key).map_or(0, |c| c.total())
    }

    /// Refuses when the organization's, the key's or the end user's daily or monthly
    /// budget is used up. A request is admitted while any budget remains, so the last
    /// one may overshoot by its own cost (its price is known only from its `usage`).
    pub fn check(&self, key: &str, user: Option<&str>) -> Result<(), WardenError> {
        let config = &self.inner.config;
        if !config.enabled || !config.has_budgets() {
            return Ok(());
        }
        let periods = Periods::now();
        let mut subjects: [(Scope, String, Budget, String); 3] = [
            (
                Scope::Organization,
                String::new(),
                config.organization,
                "the organization".into(),
            ),
            (
                Scope::Key,
                key.to_owned(),
                config.key_budget(key),
                format!("key '{key}'"),
            ),
            (Scope::User, String::new(), Budget::default(), String::new()),
        ];
        if let Some(user) = user {
            subjects[2] = (
                Scope::User,
                user_subject(key, user),
                config.per_user,
                "this end user".into(),
            );
        }
        for (scope, subject, budget, who) in subjects {
            for (window, cap) in [
                (Window::Monthly, budget.monthly_usd),
                (Window::Daily, budget.daily_usd),
            ] {
                let Some(cap) = cap else { continue };
                let used = self.total(&CounterKey {
                    scope,
                    subject: subject.clone(),
                    period: periods.label(window).to_owned(),
                });
                if used as f64 >= cap * NANO_PER_USD {
                    return Err(refusal(&who, window, cap, used, &periods));
                }
            }
        }
        Ok(())
    }

    /// Adds one response's cost to every counter it belongs to.
    pub fn record(&self, key: &str, user: Option<&str>, model: &str, usage: Usage) {
        let price = self.inner.config.price(model);
        let uncached = usage.input.saturating_sub(usage.cached_input) as f64;
        // Prices are USD per 1M tokens, so a token costs `price · 1000` nano-USD.
        let nano = (uncached * price.input
            + usage.cached_input as f64 * price.cached_input
            + usage.output as f64 * price.output)
            * 1000.0;
        let nano = nano.ceil() as u64;
        if nano == 0 {
            return;
        }
        let periods = Periods::now();
        let add = |scope, subject: &str| {
            for window in [Window::Daily, Window::Monthly] {
                let counter = self
                    .inner
                    .counters
                    .entry(CounterKey {
                        scope,
                        subject: subject.to_owned(),
                        period: periods.label(window).to_owned(),
                    })
                    .or_default()
                    .clone();
                counter.pending.fetch_add(nano, Ordering::AcqRel);
            }
        };
        add(Scope::Organization, "");
        add(Scope::Key, key);
        if let Some(user) = user {
            add(Scope::User, &user_subject(key, user));
        }
    }

    /// Spent so far in the current period, in USD (admin and tests).
    pub fn spent_usd(&self, scope: Scope, subject: &str, window: Window) -> f64 {
        let periods = Periods::now();
        self.total(&CounterKey {
            scope,
            subject: subject.to_owned(),
            period: periods.label(window).to_owned(),
        }) as f64
            / NANO_PER_USD
    }

    /// One batch write of everything counted since the last flush, then a read of the
    /// totals (other replicas' spend included). A failed write is kept for the next one.
    pub async fn flush(&self) {
        let mut batch = Vec::new();
        for entry in self.inner.counters.iter() {
            let take = entry.value().pending.swap(0, Ordering::AcqRel);
            if take > 0 {
                entry.value().flushing.fetch_add(take, Ordering::AcqRel);
                batch.push((entry.key().clone(), take, entry.value().clone()));
            }
        }
        if !batch.is_empty() {
            let rows: Vec<(&CounterKey, u64)> = batch.iter().map(|(k, n, _)| (k, *n)).collect();
            if let Err(err) = self.inner.store.add_spend(&rows).await {
                tracing::warn!(%err, rows = rows.len(), "could not write spend; will retry");
                for (_, take, counter) in &batch {
                    counter.flushing.fetch_sub(*take, Ordering::AcqRel);
                    counter.pending.fetch_add(*take, Ordering::AcqRel);
                }
                return;
            }
        }
        let periods = Periods::now();
        if let Err(err) = self.reload(&periods).await {
            tracing::warn!(%err, "could not read spend totals");
        }
        // The store's totals now include the batch.
        for (_, take, counter) in &batch {
            counter.flushing.fetch_sub(*take, Ordering::AcqRel);
        }
        // Past periods are in the store; forget them here.
        self.inner.counters.retain(|key, counter| {
            key.period == periods.day
                || key.period == periods.month
                || counter.pending.load(Ordering::Acquire) > 0
                || counter.flushing.load(Ordering::Acquire) > 0
        });
    }

    async fn reload(&self, periods: &Periods) -> anyhow::Result<()> {
        let rows = self
            .inner
            .store
            .load_spend(&[periods.day.as_str(), periods.month.as_str()])
            .await?;
        for (key, nano) in rows {
            self.inner
                .counters
                .entry(key)
                .or_default()
                .stored
                .store(nano, Ordering::Release);
        }
        Ok(())
    }
}

fn refusal(who: &str, window: Window, cap: f64, used: u64, periods: &Periods) -> WardenError {
    let ends = periods.ends(window);
    let now = crate::events::now_ms().div_euclid(1000);
    let resets_in = Duration::from_secs(ends.saturating_sub(now).max(1) as u64);
    let message = format!(
        "The {} spend budget of {who} is used up: ${:.2} of ${:.2} (USD) spent. It resets at {} (in {}).",
        window.as_str(),
        used as f64 / NANO_PER_USD,
        cap,
        period::rfc3339(ends),
        crate::limits::refusal::wait_text(resets_in),
    );
    WardenError::Refused(std::sync::Arc::new(BudgetRefusal { message, resets_in }))
}
