//! The queue between the hot path and the sinks, and the batching writer behind it.
//!
//! Recording an event gives it the next number of this writer's audit chain and, when a
//! spool is configured, appends it to the spool before anything else (see
//! `events::spool`); the store sink (`events::store_sink`) commits from the queue and
//! falls back to replaying the spool while the store is unreachable.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::spool::Spool;
use super::EventRecord;

const QUEUE_CAPACITY: usize = 65_536;
const MAX_BATCH: usize = 512;
/// How long the writer waits for more events after the first of a batch: a few ms of
/// delay on a background write buys batches of many events under load.
const LINGER: Duration = Duration::from_millis(5);
/// How long an idle writer waits before letting sinks work on a backlog.
const IDLE_TICK: Duration = Duration::from_millis(500);

pub type SinkFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Somewhere events go. A sink handles its own failures: it must not stop the others.
pub trait EventSink: Send + Sync {
    fn write<'a>(&'a self, batch: &'a [EventRecord]) -> SinkFuture<'a>;

    /// Whether the last `write` kept the batch (a durable sink that gave up says no, so
    /// answers waiting on that batch are not told it is on record).
    fn last_write_ok(&self) -> bool {
        true
    }

    /// Called when no event arrived for a while (and once at start), so a sink with a
    /// backlog can work on it without new events.
    fn tick(&self) -> SinkFuture<'_> {
        Box::pin(async {})
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
    /// The local journal every event goes to first (`[events] spool_dir`).
    pub spool: Option<Arc<Spool>>,
    /// Events that will never reach the store, shared with the store sink.
    pub dropped: Arc<AtomicU64>,
    /// Set by the store sink while the store is unreachable: a spooled, synced event is
    /// then on record without waiting for the writer.
    pub store_down: Arc<AtomicBool>,
}

impl Default for EventOptions {
    fn default() -> Self {
        EventOptions {
            durable_timeout: Duration::from_secs(2),
            excerpts: None,
            spool: None,
            dropped: Arc::new(AtomicU64::new(0)),
            store_down: Arc::new(AtomicBool::new(false)),
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
            ..EventOptions::default()
        })
    }
}

#[derive(Clone)]
pub struct EventLog {
    tx: mpsc::Sender<Message>,
    /// The last chain sequence number given; held while spooling and queueing so the
    /// spool and the queue see events in sequence order.
    seq: Arc<Mutex<i64>>,
    options: EventOptions,
}

/// What became of an event handed to the writer.
struct Queued {
    /// In the queue (false: the queue was full or the writer is gone).
    sent: bool,
    /// The spool segment holding it, to `fsync`.
    spooled: Option<Arc<std::fs::File>>,
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
            seq: Arc::new(Mutex::new(0)),
            options,
        }
    }

    pub fn options(&self) -> &EventOptions {
        &self.options
    }

    /// Numbers the event, spools it and queues it, in that order and under one lock so
    /// the spool, the queue and the chain agree on the order.
    fn enqueue(&self, mut event: EventRecord, done: Option<oneshot::Sender<bool>>) -> Queued {
        let mut last = match self.seq.lock() {
            Ok(last) => last,
            Err(poisoned) => poisoned.into_inner(),
        };
        // The number is used even if the event is then lost, so the loss shows as a gap.
        *last += 1;
        event.chain_seq = Some(*last);
        let spooled = self.options.spool.as_ref().and_then(|spool| {
            spool
                .append(*last, &event)
                .map_err(|err| {
                    // Full or failing: say so now and then, not once per event.
                    static FAILED: AtomicU64 = AtomicU64::new(0);
                    if (FAILED.fetch_add(1, Ordering::Relaxed) + 1).is_power_of_two() {
                        tracing::warn!(%err, "event not spooled");
                    }
                })
                .ok()
        });
        event.spooled = spooled.is_some();
        let message = match done {
            Some(done) => Message::Durable(event, done),
            None => Message::Event(event),
        };
        let sent = self.tx.try_send(message).is_ok();
        drop(last);
        if !sent && spooled.is_none() {
            let lost = self.options.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if lost.is_power_of_two() {
                tracing::warn!(
                    lost,
                    "event queue full or closed and not spooled: events dropped"
                );
            }
        }
        Queued { sent, spooled }
    }

    /// Records an event and waits (at most `durable_timeout`) until it is durable: in the
    /// spool and `fsync`ed, and — while the store answers — committed there too, so what
    /// a client was told is on record. Group commit keeps this cheap: every answer
    /// waiting at the same moment shares one transaction. `false` when neither happened.
    pub async fn record_durable(&self, event: EventRecord) -> bool {
        let (done, wait) = oneshot::channel();
        let deadline = self.options.durable_timeout;
        let queued = self.enqueue(event, Some(done));
        let synced = match queued.spooled {
            // Off the async threads: an fsync can take milliseconds.
            Some(file) => matches!(
                tokio::task::spawn_blocking(move || file.sync_data()).await,
                Ok(Ok(()))
            ),
            None => false,
        };
        if synced && self.options.store_down.load(Ordering::Relaxed) {
            return true;
        }
        let committed =
            queued.sent && matches!(tokio::time::timeout(deadline, wait).await, Ok(Ok(true)));
        if !(committed || synced) {
            tracing::warn!(
                timeout_ms = deadline.as_millis() as u64,
                "a blocked or flagged request's event is neither committed nor spooled (store failing or too slow); answering anyway"
            );
        }
        committed || synced
    }

    /// Records an event without waiting for the store (it is in the spool, when one is
    /// configured, when this returns). A full queue drops an unspooled event and counts it.
    pub fn record(&self, event: EventRecord) {
        self.enqueue(event, None);
    }

    /// Waits until everything queued so far has reached the sinks.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Message::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }

    /// Events that will never reach the store (see `EventOptions::dropped`).
    pub fn dropped(&self) -> u64 {
        self.options.dropped.load(Ordering::Relaxed)
    }
}

async fn run_writer(mut rx: mpsc::Receiver<Message>, sinks: Vec<Box<dyn EventSink>>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut waiting = Vec::new();
    tick(&sinks).await;
    let mut last_tick = tokio::time::Instant::now();
    loop {
        let first = match tokio::time::timeout(IDLE_TICK, rx.recv()).await {
            Ok(Some(first)) => first,
            Ok(None) => break,
            Err(_) => {
                tick(&sinks).await;
                last_tick = tokio::time::Instant::now();
                continue;
            }
        };
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
        // Under steady load the idle tick never fires: work on a backlog after the
        // answers waiting on this batch were released, not before.
        if last_tick.elapsed() >= IDLE_TICK {
            tick(&sinks).await;
            last_tick = tokio::time::Instant::now();
        }
    }
}

async fn tick(sinks: &[Box<dyn EventSink>]) {
    for sink in sinks {
        sink.tick().await;
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
