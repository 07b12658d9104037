//! Failed authentication on the admin listener (bad admin tokens, bad webhook signatures),
//! per client IP: past a few failures a minute the address is refused at once for a
//! while, and the failures become one counted event per address and minute instead of
//! one audit row each, so guessing can neither go fast nor flood the event log.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::events::{now_ms, EventLog, EventRecord};

/// Failures from one address within a window before it is refused outright.
const FAILURES_ALLOWED: u32 = 10;
const WINDOW: Duration = Duration::from_secs(60);
/// How many addresses are tracked at once; the oldest windows make room.
const MAX_TRACKED: usize = 10_000;

#[derive(Default)]
pub struct AuthFailures {
    // A std mutex: a map update, never held across an await.
    by_ip: Mutex<HashMap<IpAddr, Window>>,
}

struct Window {
    started: Instant,
    failures: u32,
    /// The failure that opened the window was recorded on its own; the rest are counted
    /// into one event when the window closes.
    counted: u32,
    what: &'static str,
}

impl AuthFailures {
    /// `Some(wait)` when this address has failed too often and must wait.
    pub fn blocked(&self, ip: IpAddr) -> Option<Duration> {
        let by_ip = self.by_ip.lock().ok()?;
        let window = by_ip.get(&ip)?;
        let left = WINDOW.checked_sub(window.started.elapsed())?;
        (window.failures >= FAILURES_ALLOWED).then_some(left.max(Duration::from_secs(1)))
    }

    /// Counts a failure; the first of a window is recorded at once, the others when the
    /// window closes (see [`AuthFailures::flush`]).
    pub fn failed(&self, events: &EventLog, ip: IpAddr, what: &'static str) {
        let Ok(mut by_ip) = self.by_ip.lock() else {
            return;
        };
        if let Some(window) = by_ip.get_mut(&ip) {
            if window.started.elapsed() < WINDOW {
                window.failures += 1;
                window.counted += 1;
                return;
            }
        }
        if let Some(old) = by_ip.remove(&ip) {
            summary(events, ip, &old);
        }
        if by_ip.len() >= MAX_TRACKED {
            let oldest = by_ip
                .iter()
                .min_by_key(|(_, w)| w.started)
                .map(|(ip, _)| *ip);
            if let Some(oldest) = oldest {
                if let Some(old) = by_ip.remove(&oldest) {
                    summary(events, oldest, &old);
                }
            }
        }
        by_ip.insert(
            ip,
            Window {
                started: Instant::now(),
                failures: 1,
                counted: 0,
                what,
            },
        );
        record(events, ip, what, 1);
    }

    /// Writes the counted failures of every closed window (of every window on shutdown).
    pub fn flush(&self, events: &EventLog, all: bool) {
        let Ok(mut by_ip) = self.by_ip.lock() else {
            return;
        };
        by_ip.retain(|ip, window| {
            if !all && window.started.elapsed() < WINDOW {
                return true;
            }
            summary(events, *ip, window);
            false
        });
    }

    /// Flushes closed windows every ten seconds, for as long as the event log lives.
    pub fn spawn_flusher(self: &std::sync::Arc<Self>, events: EventLog) {
        let failures = std::sync::Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            loop {
                tick.tick().await;
                let Some(failures) = failures.upgrade() else {
                    return;
                };
                failures.flush(&events, false);
            }
        });
    }
}

fn summary(events: &EventLog, ip: IpAddr, window: &Window) {
    if window.counted > 0 {
        record(events, ip, window.what, window.counted);
    }
}

fn record(events: &EventLog, ip: IpAddr, what: &'static str, count: u32) {
    events.record(EventRecord {
        request_id: format!("wad_{:032x}", fastrand::u128(..)),
        at_ms: now_ms(),
        kind: "admin",
        endpoint: "admin",
        client_ip: Some(ip.to_string()),
        status: 401,
        outcome: "blocked",
        reason: Some(format!("{what}: {count} refused")),
        ..Default::default()
    });
}
