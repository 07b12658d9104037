//! Warden's own count of what it sent on each upstream key, per minute: requests that
//! OpenAI answered with success and the tokens their `usage` reported. Counted in memory
//! on the response path, written to the store in batches so every replica's share is
//! there when the reconciler compares with OpenAI's Usage API.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::response::Parts;

use crate::endpoint::Endpoint;
use crate::openai::usage::Tail;
use crate::pipeline::RequestContext;
use crate::proxy::observe::{ObserverFactory, RelayEnd, ResponseObserver};
use crate::proxy::upstream::SentWith;
use crate::store::{MinuteCounts, Store};

/// How often counts are written to the store; the reconciler's `settle_delay` must be
/// longer, or a bucket could be compared before this replica's share is in.
pub const FLUSH_EVERY: Duration = Duration::from_secs(2);
/// Most distinct (key, minute) cells held between flushes; beyond, a cell is dropped
/// and counted (a store outage of hours), never an unbounded map.
const MAX_CELLS: usize = 100_000;

#[derive(Default)]
pub struct Ledger {
    cells: Mutex<HashMap<(String, i64), MinuteCounts>>,
    dropped: std::sync::atomic::AtomicU64,
}

impl Ledger {
    pub fn record(&self, key: &str, at_secs: i64, counts: MinuteCounts) {
        let minute = at_secs - at_secs.rem_euclid(60);
        let Ok(mut cells) = self.cells.lock() else {
            return;
        };
        if let Some(cell) = cells.get_mut(&(key.to_owned(), minute)) {
            cell.add(counts);
        } else if cells.len() < MAX_CELLS {
            cells.insert((key.to_owned(), minute), counts);
        } else {
            self.dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn take(&self) -> Vec<(String, i64, MinuteCounts)> {
        let Ok(mut cells) = self.cells.lock() else {
            return Vec::new();
        };
        std::mem::take(&mut *cells)
            .into_iter()
            .map(|((key, minute), counts)| (key, minute, counts))
            .collect()
    }

    /// Writes what was counted; on a store error the counts go back for the next try.
    pub async fn flush(&self, store: &Store) {
        let rows = self.take();
        if rows.is_empty() {
            return;
        }
        if let Err(err) = store.add_upstream_usage(&rows).await {
            tracing::warn!(%err, "could not write upstream key usage; retrying");
            for (key, minute, counts) in rows {
                self.record(&key, minute, counts);
            }
        }
    }

    pub fn spawn_flusher(self: &Arc<Self>, store: Store) {
        let ledger = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(FLUSH_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(ledger) = ledger.upgrade() else {
                    return;
                };
                ledger.flush(&store).await;
            }
        });
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Counts each successful answer of the endpoints OpenAI's Usage API reports on.
pub struct CountSent(pub Arc<Ledger>);

impl ObserverFactory for CountSent {
    fn observe(&self, ctx: &RequestContext, head: &Parts) -> Option<Box<dyn ResponseObserver>> {
        let billed = matches!(
            ctx.endpoint,
            Endpoint::ChatCompletions
                | Endpoint::Responses
                | Endpoint::Completions
                | Endpoint::Embeddings
                | Endpoint::ImagesGenerations
        );
        if !billed || !head.status.is_success() {
            return None;
        }
        let key = head.extensions.get::<SentWith>()?.0.clone();
        Some(Box::new(Counting {
            ledger: self.0.clone(),
            key,
            at_secs: crate::events::now_ms() / 1000,
            tail: Tail::default(),
        }))
    }
}

struct Counting {
    ledger: Arc<Ledger>,
    key: String,
    /// When the answer started: OpenAI buckets a request by when it was served.
    at_secs: i64,
    tail: Tail,
}

impl ResponseObserver for Counting {
    fn frame(&mut self, data: &Bytes) {
        self.tail.push(data);
    }

    fn end(&mut self, _how: RelayEnd) {
        // A stream cut before its usage chunk still counts as a request; its tokens are
        // unknown here, which the reconciler's token tolerance absorbs.
        let usage = self.tail.usage();
        self.ledger.record(
            &self.key,
            self.at_secs,
            MinuteCounts {
                requests: 1,
                input_tokens: usage.map_or(0, |u| u.input),
                output_tokens: usage.map_or(0, |u| u.output),
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_per_key_and_minute() {
        let ledger = Ledger::default();
        let one = MinuteCounts {
            requests: 1,
            input_tokens: 10,
            output_tokens: 5,
        };
        ledger.record("primary", 120, one);
        ledger.record("primary", 179, one);
        ledger.record("primary", 180, one);
        ledger.record("(env)", 120, one);
        let mut rows = ledger.take();
        rows.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[1].0, "primary");
        assert_eq!(rows[1].1, 120);
        assert_eq!(rows[1].2.requests, 2);
        assert_eq!(rows[1].2.tokens(), 30);
        assert!(ledger.take().is_empty(), "taken once");
    }
}
