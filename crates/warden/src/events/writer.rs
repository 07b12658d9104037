//! The queue between the hot path and the sinks, and the batching writer behind it.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::{chain, EventRecord};
use crate::store::audit::ChainPosition;
use crate::store::Store;

const QUEUE_CAPACITY: usize = 65_536;
const MAX_BATCH: usize = 512;
/// How long the writer waits for more events after the first of a batch: a few ms of
/// delay on a background write buys batches of many events under load.
const LINGER: Duration = Duration::from_millis(5);

pub type SinkFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Somewhere events go. A sink handles its own failures: it must not stop the others.
pub trait EventSink: Send + Sync {
    fn write<'a>(&'a self, batch: &'a [EventRecord]) -> SinkFuture<'a>;

    /// Whether the last `write` kept the batch (a durable sink that gave up says no, so
    /// answers waiting on that batch are not told it is on record).
    fn last_write_ok(&self) -> bool {
        true
    }
}

#[allow(
    clippy::large_enum_variant,
    reason = "boxing the event would cost an allocation per request; flushes are rare"
)]
enum Message {
    Event(EventRecord),
    /// An event whose answer waits until its batch reached every sink.
    Durable(EventRecord, oneshot::Sender<bool>),
    Flush(oneshot::Sender<bool>),
}

/// How events are kept (the validated `[events]` section).
#[derive(Clone)]
pub struct EventOptions {
    /// Longest a blocked or flagged answer waits for its event to be committed.
    pub durable_timeout: Duration,
    /// Redacted excerpts of flagged fields, when the operator opted in.
    pub excerpts: Option<Arc<super::content::Excerpts>>,
}

impl Default for EventOptions {
    fn default() -> Self {
        EventOptions {
            durable_timeout: Duration::from_secs(2),
            excerpts: None,
        }
    }
}

impl EventOptions {
    pub fn from_config(config: &crate::config::events::EventsConfig) -> anyhow::Result<Self> {
        let excerpts = if config.keep_flagged_excerpts {
            Some(
                super::content::Excerpts::new(config.excerpt_chars)
                    .map_err(|why| anyhow::anyhow!("events: excerpt redaction rules: {why}"))?,
            )
        } else {
            None
        };
        Ok(EventOptions {
            durable_timeout: config.durable_timeout,
            excerpts,
        })
    }
}

#[derive(Clone)]
pub struct EventLog {
    tx: mpsc::Sender<Message>,
    dropped: Arc<AtomicU64>,
    options: EventOptions,
}

impl EventLog {
    /// Starts the writer task; it runs until every `EventLog` clone is dropped.
    pub fn start(sinks: Vec<Box<dyn EventSink>>) -> EventLog {
        EventLog::start_with(sinks, EventOptions::default())
    }

    pub fn start_with(sinks: Vec<Box<dyn EventSink>>, options: EventOptions) -> EventLog {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        tokio::spawn(run_writer(rx, sinks));
        EventLog {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
            options,
        }
    }

    pub fn options(&self) -> &EventOptions {
        &self.options
    }

    /// Queues an event and waits (at most `durable_timeout`) until its batch has been
    /// written to every sink — the store commit included. Group commit keeps this cheap:
    /// every answer waiting at the same moment shares one transaction. `false` when the
    /// wait timed out, a sink gave up on the batch, or the writer is gone (after a timeout the
    /// event may still be written later).
    pub async fn record_durable(&self, event: EventRecord) -> bool {
        let (done, wait) = oneshot::channel();
        let deadline = self.options.durable_timeout;
        let queued = tokio::time::timeout(deadline, self.tx.send(Message::Durable(event, done)));
        let committed = async {
            matches!(queued.await, Ok(Ok(())))
                && matches!(tokio::time::timeout(deadline, wait).await, Ok(Ok(true)))
        }
        .await;
        if !committed {
            tracing::warn!(
                timeout_ms = deadline.as_millis() as u64,
                "a blocked or flagged request's event was not committed (store failing or too slow); answering anyway"
            );
        }
        committed
    }

    /// Queues an event without waiting. A full queue drops it and counts the loss.
    pub fn record(&self, event: EventRecord) {
        if self.tx.try_send(Message::Event(event)).is_err() {
            let lost = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if lost.is_power_of_two() {
                tracing::warn!(lost, "event queue full or closed: events dropped");
            }
        }
    }

    /// Waits until everything queued so far has reached the sinks.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Message::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

async fn run_writer(mut rx: mpsc::Receiver<Message>, sinks: Vec<Box<dyn EventSink>>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut waiting = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut urgent = take(first, &mut batch, &mut waiting);
        // Background events wait a little for company; an answer waiting on its event
        // ends the wait at once (whatever queued meanwhile shares its commit).
        if !urgent && rx.len() < MAX_BATCH {
            let deadline = tokio::time::Instant::now() + LINGER;
            while !urgent && batch.len() < MAX_BATCH {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(message)) => urgent = take(message, &mut batch, &mut waiting),
                    Ok(None) | Err(_) => break,
                }
            }
        }
        // Group commit: take whatever else is already queued, up to a batch.
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(message) => {
                    take(message, &mut batch, &mut waiting);
                }
                Err(_) => break,
            }
        }
        let mut kept = true;
        if !batch.is_empty() {
            for sink in &sinks {
                sink.write(&batch).await;
                kept &= sink.last_write_ok();
            }
            batch.clear();
        }
        for done in waiting.drain(..) {
            let _ = done.send(kept);
        }
    }
}

/// Adds a message to the batch; `true` when someone is waiting for it.
fn take(
    message: Message,
    batch: &mut Vec<EventRecord>,
    waiting: &mut Vec<oneshot::Sender<bool>>,
) -> bool {
    match message {
        Message::Event(e) => {
            batch.push(e);
            false
        }
        Message::Durable(e, done) => {
            batch.push(e);
            waiting.push(done);
            true
        }
        Message::Flush(done) => {
            waiting.push(done);
            true
        }
    }
}

/// Batches into the durable store, hash-chained (see `events::chain`); a failed batch is
/// retried a few times, then reported. The chain head moves only when a batch is
/// committed, so a lost batch leaves no gap in the chain.
pub struct StoreSink {
    store: Store,
    chain: Mutex<Head>,
    excerpt_retention: Duration,
    last_ok: AtomicBool,
}

#[derive(Clone)]
struct Head {
    id: String,
    started_at: i64,
    seq: i64,
    hash: String,
}

impl StoreSink {
    /// A sink that starts a new chain for this process.
    pub fn new(store: Store, excerpt_retention: Duration) -> StoreSink {
        StoreSink {
            store,
            chain: Mutex::new(Head {
                id: chain::new_chain_id(),
                started_at: super::now_ms(),
                seq: 0,
                hash: chain::GENESIS.to_owned(),
            }),
            excerpt_retention,
            last_ok: AtomicBool::new(true),
        }
    }

    pub fn chain_id(&self) -> String {
        self.head().id
    }

    fn head(&self) -> Head {
        match self.chain.lock() {
            Ok(head) => head.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

impl EventSink for StoreSink {
    fn write<'a>(&'a self, batch: &'a [EventRecord]) -> SinkFuture<'a> {
        Box::pin(async move {
            let head = self.head();
            let mut positions = Vec::with_capacity(batch.len());
            let mut prev = head.hash.clone();
            for (i, event) in batch.iter().enumerate() {
                let seq = head.seq + 1 + i as i64;
                let hash = chain::Link::of(&head.id, seq, event).hash(&prev);
                positions.push(ChainPosition {
                    seq,
                    prev_hash: std::mem::replace(&mut prev, hash.clone()),
                    hash,
                });
            }
            let expires = super::now_ms().saturating_add(self.excerpt_retention.as_millis() as i64);
            let mut delay = Duration::from_millis(50);
            for attempt in 1..=4 {
                let stored = self
                    .store
                    .append_chained(&head.id, head.started_at, batch, &positions, expires)
                    .await;
                match stored {
                    Ok(()) => {
                        if let (Ok(mut current), Some(last)) = (self.chain.lock(), positions.last())
                        {
                            current.seq = last.seq;
                            current.hash = last.hash.clone();
                        }
                        self.last_ok.store(true, Ordering::Relaxed);
                        return;
                    }
                    Err(err) if attempt < 4 => {
                        tracing::warn!(%err, attempt, "event batch not stored; retrying");
                        tokio::time::sleep(delay).await;
                        delay *= 2;
                    }
                    Err(err) => {
                        tracing::error!(%err, lost = batch.len(), "event batch could not be stored");
                        self.last_ok.store(false, Ordering::Relaxed);
                    }
                }
            }
        })
    }

    fn last_write_ok(&self) -> bool {
        self.last_ok.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    struct Collect(Arc<Mutex<Vec<String>>>);

    impl EventSink for Collect {
        fn write<'a>(&'a self, batch: &'a [EventRecord]) -> SinkFuture<'a> {
            let ids: Vec<String> = batch.iter().map(|e| e.request_id.clone()).collect();
            self.0.lock().unwrap().extend(ids);
            Box::pin(async {})
        }
    }

    fn event(id: &str) -> EventRecord {
        EventRecord {
            request_id: id.into(),
            at_ms: 0,
            kind: "request",
            key_name: None,
            end_user: None,
            safety_identifier: None,
            client_ip: None,
            endpoint: "models",
            model: None,
            stream: false,
            status: 200,
            outcome: "allowed",
            reason: None,
            latency_us: 0,
            upstream_us: None,
            detail: None,
            ..EventRecord::default()
        }
    }

    #[tokio::test]
    async fn flush_waits_for_everything_queued() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = EventLog::start(vec![Box::new(Collect(seen.clone()))]);
        for i in 0..1000 {
            log.record(event(&i.to_string()));
        }
        log.flush().await;
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1000);
        assert_eq!(seen[999], "999");
        assert_eq!(log.dropped(), 0);
    }

    #[tokio::test]
    async fn a_durable_event_returns_once_its_batch_is_written() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = EventLog::start(vec![Box::new(Collect(seen.clone()))]);
        log.record(event("background"));
        assert!(log.record_durable(event("answered")).await);
        assert_eq!(*seen.lock().unwrap(), ["background", "answered"]);
    }

    struct Failing;

    impl EventSink for Failing {
        fn write<'a>(&'a self, _: &'a [EventRecord]) -> SinkFuture<'a> {
            Box::pin(async {})
        }

        fn last_write_ok(&self) -> bool {
            false
        }
    }

    #[tokio::test]
    async fn a_durable_event_is_not_reported_kept_when_a_sink_gave_up() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = EventLog::start(vec![Box::new(Collect(seen.clone())), Box::new(Failing)]);
        assert!(!log.record_durable(event("lost")).await);
    }
}
