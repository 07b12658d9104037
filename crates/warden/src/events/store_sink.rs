//! The store sink: commits event batches to the store, hash-chained (see `events::chain`),
//! and — with a spool — never drops them: while the store is unreachable it keeps nothing
//! in memory and later replays the spool in sequence order, leftovers of earlier
//! processes first.
//!
//! Two modes. Live: each batch is committed as it comes (positions are the numbers the
//! event log gave at record time). Backlog (the store failed, or a number is missing from
//! the queue): batches are only counted — they are in the spool — and every
//! `RETRY` the spool is replayed from the committed head; when it runs dry the sink is
//! live again. Events neither committed nor spooled are counted in
//! `warden_events_dropped_total` and leave a gap in the chain.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

use super::spool::{Cursor, Spool};
use super::writer::{EventSink, SinkFuture};
use super::{chain, EventRecord};
use crate::store::audit::ChainPosition;
use crate::store::Store;

/// Events per replayed transaction.
const REPLAY_BATCH: usize = 512;
/// How often a sink with a backlog tries the store again.
const RETRY: Duration = Duration::from_millis(500);
/// Longest one commit may take before the store counts as unreachable (a stopped
/// database otherwise holds the writer for the pool's acquire timeout).
const COMMIT_TIMEOUT: Duration = Duration::from_secs(2);

pub struct StoreSink {
    store: Store,
    chain_id: String,
    started_at: i64,
    excerpt_retention: Duration,
    spool: Option<Arc<Spool>>,
    dropped: Arc<AtomicU64>,
    /// Raised while in backlog mode (see `EventOptions::store_down`).
    store_down: Arc<AtomicBool>,
    state: Mutex<State>,
    last_ok: AtomicBool,
}

#[derive(Clone)]
struct Head {
    seq: i64,
    hash: String,
}

struct State {
    head: Head,
    /// Replaying from the spool instead of committing from the queue.
    backlog: bool,
    /// Chains earlier processes left in the spool, oldest first.
    leftovers: Vec<String>,
    next_try: Instant,
}

impl StoreSink {
    /// A sink that starts a new chain for this process, without a spool: a batch the
    /// store refuses four times is lost (and counted).
    pub fn new(store: Store, excerpt_retention: Duration) -> StoreSink {
        StoreSink::build(
            store,
            excerpt_retention,
            chain::new_chain_id(),
            None,
            Arc::new(AtomicU64::new(0)),
        )
    }

    /// A sink whose chain is the spool's, falling back to it while the store is away;
    /// `dropped` and `store_down` are the event log's (`EventOptions`).
    pub fn spooled(
        store: Store,
        excerpt_retention: Duration,
        spool: Arc<Spool>,
        dropped: Arc<AtomicU64>,
        store_down: Arc<AtomicBool>,
    ) -> StoreSink {
        let chain_id = spool.chain_id().to_owned();
        let mut sink = StoreSink::build(store, excerpt_retention, chain_id, None, dropped);
        sink.store_down = store_down;
        let leftovers = spool.leftover_chains();
        let state = sink.state.get_mut();
        state.backlog = !leftovers.is_empty();
        state.leftovers = leftovers;
        sink.spool = Some(spool);
        sink
    }

    fn build(
        store: Store,
        excerpt_retention: Duration,
        chain_id: String,
        spool: Option<Arc<Spool>>,
        dropped: Arc<AtomicU64>,
    ) -> StoreSink {
        StoreSink {
            store,
            started_at: started_at(&chain_id),
            chain_id,
            excerpt_retention,
            spool,
            dropped,
            store_down: Arc::new(AtomicBool::new(false)),
            state: Mutex::new(State {
                head: Head {
                    seq: 0,
                    hash: chain::GENESIS.to_owned(),
                },
                backlog: false,
                leftovers: Vec::new(),
                next_try: Instant::now(),
            }),
            last_ok: AtomicBool::new(true),
        }
    }

    pub fn chain_id(&self) -> String {
        self.chain_id.clone()
    }

    /// Commits `events` (in sequence order, all after `head`) to `chain` and moves `head`.
    async fn commit(
        &self,
        chain: &str,
        started_at: i64,
        head: &mut Head,
        events: &[EventRecord],
    ) -> Result<(), String> {
        let mut positions = Vec::with_capacity(events.len());
        let mut prev = head.hash.clone();
        let mut seq = head.seq;
        for event in events {
            seq = event.chain_seq.unwrap_or(seq + 1);
            let hash = chain::Link::of(chain, seq, event).hash(&prev);
            positions.push(ChainPosition {
                seq,
                prev_hash: std::mem::replace(&mut prev, hash.clone()),
                hash,
            });
        }
        let expires = super::now_ms().saturating_add(self.excerpt_retention.as_millis() as i64);
        let stored = tokio::time::timeout(
            COMMIT_TIMEOUT,
            self.store
                .append_chained(chain, started_at, events, &positions, expires),
        )
        .await;
        match stored {
            Ok(Ok(())) => {
                head.seq = seq;
                head.hash = prev;
                Ok(())
            }
            Ok(Err(err)) => Err(err.to_string()),
            Err(_) => Err(format!("no answer within {COMMIT_TIMEOUT:?}")),
        }
    }

    /// Live mode: commit the batch, or switch to the backlog.
    async fn write_live(&self, state: &mut State, batch: &[EventRecord]) {
        // Skip what a replay already committed; notice a number missing from the queue.
        let fresh = batch
            .iter()
            .position(|e| e.chain_seq.is_none_or(|s| s > state.head.seq))
            .map_or(&batch[..0], |start| &batch[start..]);
        if fresh.is_empty() {
            self.last_ok.store(true, Ordering::Relaxed);
            return;
        }
        let mut expected = state.head.seq + 1;
        let contiguous = fresh.iter().all(|e| {
            let ok = e.chain_seq.is_none_or(|s| s == expected);
            expected = e.chain_seq.unwrap_or(expected) + 1;
            ok
        });
        if self.spool.is_some() && !contiguous {
            tracing::warn!("event queue skipped a number: replaying from the spool");
            // The store is fine: replay at the next tick.
            self.enter_backlog(state, fresh, Duration::ZERO);
            return;
        }
        let attempts = if self.spool.is_some() { 1 } else { 4 };
        let mut delay = Duration::from_millis(50);
        for attempt in 1..=attempts {
            let mut head = state.head.clone();
            match self
                .commit(&self.chain_id, self.started_at, &mut head, fresh)
                .await
            {
                Ok(()) => {
                    state.head = head;
                    if let Some(spool) = &self.spool {
                        spool.release(&self.chain_id, state.head.seq);
                    }
                    self.last_ok.store(true, Ordering::Relaxed);
                    return;
                }
                Err(err) if attempt < attempts => {
                    tracing::warn!(%err, attempt, "event batch not stored; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err(err) => {
                    if self.spool.is_some() {
                        tracing::warn!(%err, "event store unreachable: events go to the spool until it returns");
                        self.enter_backlog(state, fresh, RETRY);
                    } else {
                        tracing::error!(%err, lost = fresh.len(), "event batch could not be stored");
                        self.dropped
                            .fetch_add(fresh.len() as u64, Ordering::Relaxed);
                        self.last_ok.store(false, Ordering::Relaxed);
                    }
                }
            }
        }
    }

    fn enter_backlog(&self, state: &mut State, batch: &[EventRecord], retry_in: Duration) {
        state.backlog = true;
        // Only a failing store lets refusals stop waiting for their commit.
        self.store_down
            .store(retry_in > Duration::ZERO, Ordering::Relaxed);
        state.next_try = Instant::now() + retry_in;
        self.count_unspooled(state, batch);
    }

    /// Backlog mode: what is spooled waits there; what is not is lost.
    fn count_unspooled(&self, state: &State, batch: &[EventRecord]) {
        let lost = batch
            .iter()
            .filter(|e| !e.spooled && e.chain_seq.is_none_or(|s| s > state.head.seq))
            .count() as u64;
        if lost > 0 {
            let total = self.dropped.fetch_add(lost, Ordering::Relaxed) + lost;
            tracing::error!(lost, total, "events neither stored nor spooled: lost");
        }
        self.last_ok.store(lost == 0, Ordering::Relaxed);
    }

    /// Replays leftovers, then this chain's backlog, while the store takes them.
    async fn catch_up(&self, state: &mut State) {
        let Some(spool) = &self.spool else {
            state.backlog = false;
            return;
        };
        if Instant::now() < state.next_try {
            return;
        }
        state.next_try = Instant::now() + RETRY;
        while let Some(chain) = state.leftovers.first().cloned() {
            let mut head = Head {
                seq: 0,
                hash: chain::GENESIS.to_owned(),
            };
            match self.replay(spool, &chain, &mut head).await {
                Ok(replayed) => {
                    tracing::info!(chain, replayed, "spooled events of an earlier run stored");
                    spool.release(&chain, i64::MAX);
                    state.leftovers.remove(0);
                }
                Err(err) => {
                    tracing::debug!(%err, "event store still unreachable");
                    return;
                }
            }
        }
        if state.backlog {
            let mut head = state.head.clone();
            let result = self.replay(spool, &self.chain_id.clone(), &mut head).await;
            state.head = head;
            match result {
                Ok(replayed) => {
                    tracing::info!(replayed, "event store back: spooled events stored");
                    state.backlog = false;
                    self.store_down.store(false, Ordering::Relaxed);
                }
                Err(err) => tracing::debug!(%err, "event store still unreachable"),
            }
        }
    }

    /// Commits every spooled event of `chain` after its head; the store's head wins over
    /// `head` when it is further (a commit that timed out may have landed after all).
    async fn replay(&self, spool: &Spool, chain: &str, head: &mut Head) -> Result<u64, String> {
        let heads = tokio::time::timeout(COMMIT_TIMEOUT, self.store.audit_chains())
            .await
            .map_err(|_| "no answer".to_owned())?
            .map_err(|e| e.to_string())?;
        if let Some(stored) = heads.iter().find(|h| h.chain_id == chain) {
            if stored.last_seq > head.seq {
                head.seq = stored.last_seq;
                head.hash = stored.last_hash.clone();
            }
        }
        let started = started_at(chain);
        let mut cursor = Cursor::default();
        let mut replayed = 0;
        loop {
            let events = spool
                .read(chain, &mut cursor, head.seq, REPLAY_BATCH)
                .map_err(|e| e.to_string())?;
            if events.is_empty() {
                return Ok(replayed);
            }
            self.commit(chain, started, head, &events).await?;
            replayed += events.len() as u64;
            if chain == self.chain_id {
                spool.release(chain, head.seq);
            }
        }
    }
}

/// A chain id starts with its start time (`c<ms>-…`); the head row records it.
fn started_at(chain_id: &str) -> i64 {
    chain_id
        .strip_prefix('c')
        .and_then(|rest| rest.split('-').next())
        .and_then(|ms| ms.parse().ok())
        .unwrap_or_else(super::now_ms)
}

impl EventSink for StoreSink {
    fn write<'a>(&'a self, batch: &'a [EventRecord]) -> SinkFuture<'a> {
        Box::pin(async move {
            let mut state = self.state.lock().await;
            if !state.backlog && state.leftovers.is_empty() {
                self.write_live(&mut state, batch).await;
                return;
            }
            // The backlog is worked on in `tick`, after the batch's waiters are answered.
            self.count_unspooled(&state, batch);
        })
    }

    fn last_write_ok(&self) -> bool {
        self.last_ok.load(Ordering::Relaxed)
    }

    fn tick(&self) -> SinkFuture<'_> {
        Box::pin(async move {
            let mut state = self.state.lock().await;
            if state.backlog || !state.leftovers.is_empty() {
                self.catch_up(&mut state).await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::config::StorageConfig;

    fn numbered(seq: i64) -> EventRecord {
        EventRecord {
            request_id: format!("wrq_{seq}"),
            kind: "request",
            endpoint: "chat.completions",
            outcome: "allowed",
            chain_seq: Some(seq),
            ..EventRecord::default()
        }
    }

    /// An event lost between recording and the store (no spool) leaves a gap that
    /// `audit verify` names, instead of a chain that silently closes over it.
    #[tokio::test]
    async fn a_lost_event_is_a_gap_audit_verify_reports() {
        let store = Store::open(&StorageConfig::SqliteMemory).await.unwrap();
        let sink = StoreSink::new(store.clone(), Duration::from_secs(60));
        sink.write(&[numbered(1), numbered(2)]).await;
        sink.write(&[numbered(4)]).await; // 3 was lost on the way
        let report = crate::events::verify::verify(&store).await.unwrap();
        assert!(!report.ok());
        let summary = report.summary();
        assert!(
            summary.contains("expected seq 3 but found 4: 1 event(s) before it are missing"),
            "{summary}"
        );
    }

    /// With a spool, a number missing from the queue is fetched from the spool: the
    /// chain ends up whole and in order.
    #[tokio::test]
    async fn a_number_missing_from_the_queue_is_replayed_from_the_spool() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StorageConfig::SqliteMemory).await.unwrap();
        let spool = Arc::new(Spool::open(dir.path(), 1 << 30, chain::new_chain_id()).unwrap());
        let sink = StoreSink::spooled(
            store.clone(),
            Duration::from_secs(60),
            spool.clone(),
            Arc::default(),
            Arc::default(),
        );
        let mut events: Vec<EventRecord> = (1..=5).map(numbered).collect();
        for e in &mut events {
            spool.append(e.chain_seq.unwrap(), e).unwrap();
            e.spooled = true;
        }
        sink.write(&events[..2]).await;
        sink.write(&events[3..]).await; // 3 never reached the queue
        sink.tick().await;
        let report = crate::events::verify::verify(&store).await.unwrap();
        assert!(report.ok(), "{}", report.summary());
        assert_eq!(report.events(), 5);
    }
}
