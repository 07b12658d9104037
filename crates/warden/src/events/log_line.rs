//! One structured log line per event, at info, target `warden::events`: the message is
//! the event's kind, so each request leaves exactly one `request` line. The end user
//! appears only as their `safety_identifier`, never by the raw id the app sent; secrets
//! in any field are masked by the log writer (`logs::writer`).

use super::writer::{EventSink, SinkFuture};
use super::EventRecord;

pub struct LogSink;

impl EventSink for LogSink {
    fn write<'a>(&'a self, batch: &'a [EventRecord]) -> SinkFuture<'a> {
        Box::pin(async move {
            for e in batch {
                // Time spent in Warden itself: the whole latency minus the wait for
                // upstream's answer head.
                let warden_us = (e.kind == "request")
                    .then(|| e.latency_us - e.upstream_us.unwrap_or(0).min(e.latency_us));
                tracing::info!(
                    target: "warden::events",
                    request_id = %e.request_id,
                    kind = e.kind,
                    key = e.key_name.as_deref(),
                    safety_identifier = e.safety_identifier.as_deref(),
                    client_ip = e.client_ip.as_deref(),
                    country = e.country.as_deref(),
                    endpoint = e.endpoint,
                    model = e.model.as_deref(),
                    stream = e.stream,
                    status = e.status,
                    outcome = e.outcome,
                    reason = e.reason.as_deref(),
                    latency_us = e.latency_us,
                    upstream_us = e.upstream_us,
                    warden_us,
                    detail = e.detail.as_deref(),
                    "{}",
                    e.kind
                );
            }
        })
    }
}
