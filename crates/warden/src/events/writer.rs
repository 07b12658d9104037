//! The queue between the hot path and the sinks, and the batching writer behind it.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::EventRecord;
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
}

// Boxing the event would cost an allocation per request; flushes are rare.
#[allow(clippy::large_enum_variant)]
enum Message {
    Event(EventRecord),
    Flush(oneshot::Sender<()>),
}

#[derive(Clone)]
pub struct EventLog {
    tx: mpsc::Sender<Message>,
    dropped: Arc<AtomicU64>,
}

impl EventLog {
    /// Starts the writer task; it runs until every `EventLog` clone is dropped.
    pub fn start(sinks: Vec<Box<dyn EventSink>>) -> EventLog {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        tokio::spawn(run_writer(rx, sinks));
        EventLog {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
        }
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
        if matches!(first, Message::Event(_)) && rx.len() < MAX_BATCH {
            tokio::time::sleep(LINGER).await;
        }
        let mut next = Some(first);
        // Group commit: take whatever else is already queued, up to a batch.
        while let Some(message) = next.take() {
            match message {
                Message::Event(e) => batch.push(e),
                Message::Flush(done) => waiting.push(done),
            }
            if batch.len() >= MAX_BATCH {
                break;
            }
            next = rx.try_recv().ok();
        }
        if !batch.is_empty() {
            for sink in &sinks {
                sink.write(&batch).await;
            }
            batch.clear();
        }
        for done in waiting.drain(..) {
            let _ = done.send(());
        }
    }
}

/// One structured log line per event.
pub struct LogSink;

impl EventSink for LogSink {
    fn write<'a>(&'a self, batch: &'a [EventRecord]) -> SinkFuture<'a> {
        Box::pin(async move {
            for e in batch {
                tracing::info!(
                    target: "warden::events",
                    request_id = %e.request_id,
                    kind = e.kind,
                    key = e.key_name.as_deref(),
                    end_user = e.end_user.as_deref(),
                    client_ip = e.client_ip.as_deref(),
                    endpoint = e.endpoint,
                    model = e.model.as_deref(),
                    stream = e.stream,
                    status = e.status,
                    outcome = e.outcome,
                    reason = e.reason.as_deref(),
                    latency_us = e.latency_us,
                    upstream_us = e.upstream_us,
                    detail = e.detail.as_deref(),
                    "request"
                );
            }
        })
    }
}

/// Batches into the durable store; a failed batch is retried a few times, then reported.
pub struct StoreSink(pub Store);

impl EventSink for StoreSink {
    fn write<'a>(&'a self, batch: &'a [EventRecord]) -> SinkFuture<'a> {
        Box::pin(async move {
            let mut delay = Duration::from_millis(50);
            for attempt in 1..=4 {
                match self.0.append_events(batch).await {
                    Ok(()) => return,
                    Err(err) if attempt < 4 => {
                        tracing::warn!(%err, attempt, "event batch not stored; retrying");
                        tokio::time::sleep(delay).await;
                        delay *= 2;
                    }
                    Err(err) => {
                        tracing::error!(%err, lost = batch.len(), "event batch could not be stored");
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::Mutex;

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
}
