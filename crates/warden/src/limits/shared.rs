//! Limits shared by every replica through Redis: one Lua script call decides all the
//! checks of a request at once (GCRA, all or nothing, on Redis's clock). When Redis is
//! down or slow the caller decides locally; the degraded state is kept and shown.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;

use super::gcra::Rate;

/// KEYS: one per check. ARGV: per check its cost and period in µs. Returns
/// `{allowed, now, ahead_1, …}` where `ahead_i` is how far the check's arrival time was
/// ahead of now before this request (never negative).
const ADMIT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local ahead = {}
local ok = 1
for i = 1, #KEYS do
  local need = tonumber(ARGV[2 * i - 1])
  local period = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tat < now then tat = now end
  ahead[i] = tat - now
  if need > period or tat + need - now > period then ok = 0 end
end
if ok == 1 then
  for i = 1, #KEYS do
    local need = tonumber(ARGV[2 * i - 1])
    local new = now + ahead[i] + need
    redis.call('SET', KEYS[i], string.format('%.0f', new), 'PX', math.floor((new - now) / 1000) + 1000)
  end
end
local out = {ok, now}
for i = 1, #KEYS do out[i + 2] = ahead[i] end
return out
"#;

/// KEYS: cells to adjust. ARGV: per cell a signed delta in µs. Overdraws or gives back.
const ADJUST: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
for i = 1, #KEYS do
  local delta = tonumber(ARGV[i])
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tat < now then tat = now end
  local new = tat + delta
  if new > now then
    redis.call('SET', KEYS[i], string.format('%.0f', new), 'PX', math.floor((new - now) / 1000) + 1000)
  else
    redis.call('DEL', KEYS[i])
  end
end
return #KEYS
"#;

/// One check as Redis sees it.
#[derive(Debug, Clone)]
pub struct SharedCheck {
    pub key: String,
    pub rate: Rate,
    pub cost: u64,
}

#[derive(Debug, Clone)]
pub struct SharedOutcome {
    pub allowed: bool,
    /// Per check, how far ahead of now its arrival time was before this request (ns).
    pub ahead_ns: Vec<u64>,
}

/// How long to stop asking Redis after repeated failures before trying again.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);
/// One slow answer only sends that request local; this many in a row stop asking for
/// `RETRY_AFTER_FAILURE`, so a dead Redis does not add its timeout to every request.
const FAILURES_BEFORE_QUIET: u64 = 3;

pub struct SharedLimits {
    conn: ArcSwapOption<ConnectionManager>,
    prefix: String,
    timeout: Duration,
    admit: Script,
    adjust: Script,
    degraded: AtomicBool,
    /// Nanoseconds since `started` before which Redis is not asked again.
    quiet_until: AtomicU64,
    failures: AtomicU64,
    started: Instant,
}

impl SharedLimits {
    /// Starts connecting in the background; until connected, decisions are local.
    pub fn start(url: &str, prefix: &str, timeout: Duration) -> anyhow::Result<Arc<Self>> {
        let client = redis::Client::open(url)?;
        let shared = Arc::new(SharedLimits {
            conn: ArcSwapOption::empty(),
            prefix: prefix.to_owned(),
            timeout,
            admit: Script::new(ADMIT),
            adjust: Script::new(ADJUST),
            degraded: AtomicBool::new(true),
            quiet_until: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            started: Instant::now(),
        });
        let weak = Arc::downgrade(&shared);
        tokio::spawn(async move {
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(timeout.max(Duration::from_millis(500)))
                .set_response_timeout(timeout.max(Duration::from_millis(500)))
                .set_number_of_retries(1);
            loop {
                let Some(shared) = weak.upgrade() else { return };
                let attempt = tokio::time::timeout(
                    Duration::from_secs(2),
                    ConnectionManager::new_with_config(client.clone(), config.clone()),
                )
                .await;
                match attempt {
                    Ok(Ok(conn)) => {
                        shared.conn.store(Some(Arc::new(conn)));
                        shared.recovered();
                        return;
                    }
                    Ok(Err(err)) => shared.failed(&err.to_string()),
                    Err(_) => shared.failed("connect timed out"),
                }
                drop(shared);
                tokio::time::sleep(RETRY_AFTER_FAILURE).await;
            }
        });
        Ok(shared)
    }

    /// True while decisions fall back to this process's own counters.
    pub fn degraded(&self) -> bool {
        self.degraded.load(Ordering::Acquire)
    }

    pub fn key(&self, actor: &str, window: &str) -> String {
        format!("{}:rl:{actor}:{window}", self.prefix)
    }

    fn since_start(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn failed(&self, why: &str) {
        if self.failures.fetch_add(1, Ordering::AcqRel) + 1 >= FAILURES_BEFORE_QUIET {
            let until = self.since_start() + RETRY_AFTER_FAILURE.as_nanos() as u64;
            self.quiet_until.store(until, Ordering::Release);
        }
        if !self.degraded.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                error = why,
                "Redis unavailable: limits are per process until it answers again"
            );
        }
    }

    fn recovered(&self) {
        self.failures.store(0, Ordering::Release);
        if self.degraded.swap(false, Ordering::AcqRel) {
            tracing::info!("Redis answers again: limits are shared across replicas");
        }
    }

    /// The live connection, unless Redis failed a moment ago.
    fn connection(&self) -> Option<ConnectionManager> {
        if self.since_start() < self.quiet_until.load(Ordering::Acquire) {
            return None;
        }
        self.conn.load_full().map(|c| (*c).clone())
    }

    /// Decides every check in one round trip; `None` means decide locally.
    pub async fn admit(&self, checks: &[SharedCheck]) -> Option<SharedOutcome> {
        let mut conn = self.connection()?;
        let mut invocation = self.admit.prepare_invoke();
        for check in checks {
            invocation.key(&check.key);
        }
        for check in checks {
            invocation
                .arg(check.rate.cost_ns(check.cost) / 1000)
                .arg(check.rate.period_ns / 1000);
        }
        let call = invocation.invoke_async::<Vec<i64>>(&mut conn);
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(values)) if values.len() == checks.len() + 2 => {
                self.recovered();
                Some(SharedOutcome {
                    allowed: values[0] == 1,
                    ahead_ns: values[2..]
                        .iter()
                        .map(|us| u64::try_from(*us).unwrap_or(0).saturating_mul(1000))
                        .collect(),
                })
            }
            Ok(Ok(_)) => {
                self.failed("unexpected script reply");
                None
            }
            Ok(Err(err)) => {
                self.failed(&err.to_string());
                None
            }
            Err(_) => {
                self.failed("timed out");
                None
            }
        }
    }

    /// Charges or refunds token cells after the response; best effort.
    pub async fn adjust(&self, cells: &[(String, Rate, i64)]) -> bool {
        let Some(mut conn) = self.connection() else {
            return false;
        };
        let mut invocation = self.adjust.prepare_invoke();
        for (key, _, _) in cells {
            invocation.key(key);
        }
        for (_, rate, delta) in cells {
            let us = (rate.cost_ns(delta.unsigned_abs()) / 1000) as i64;
            invocation.arg(if *delta < 0 { -us } else { us });
        }
        let call = invocation.invoke_async::<i64>(&mut conn);
        match tokio::time::timeout(self.timeout * 4, call).await {
            Ok(Ok(_)) => true,
            Ok(Err(err)) => {
                self.failed(&err.to_string());
                false
            }
            Err(_) => {
                self.failed("timed out");
                false
            }
        }
    }
}
