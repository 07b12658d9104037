//! SSE framing and the incremental event-stream body that honours `chunk_delay_ms`, `cut_after`
//! and notices a client that went away.

use crate::faults::Fault;
use crate::record::Recorder;
use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;

/// The data-only stream terminator used by chat and legacy completions.
pub(crate) const DONE: &[u8] = b"data: [DONE]\n\n";

/// How long a cut stream pauses before dropping the connection, so the chunks it did send
/// leave hyper's write buffer first.
const FLUSH_BEFORE_CUT: Duration = Duration::from_millis(20);

/// `data: {json}\n\n`.
pub(crate) fn data(value: &impl Serialize) -> Bytes {
    frame(None, value)
}

/// `event: NAME\ndata: {json}\n\n`.
pub(crate) fn event(name: &str, value: &impl Serialize) -> Bytes {
    frame(Some(name), value)
}

fn frame(name: Option<&str>, value: &impl Serialize) -> Bytes {
    let mut buf = Vec::with_capacity(256);
    if let Some(name) = name {
        buf.extend_from_slice(b"event: ");
        buf.extend_from_slice(name.as_bytes());
        buf.push(b'\n');
    }
    buf.extend_from_slice(b"data: ");
    if serde_json::to_writer(&mut buf, value).is_err() {
        buf.extend_from_slice(b"{}");
    }
    buf.extend_from_slice(b"\n\n");
    Bytes::from(buf)
}

/// Counts the stream as cancelled if it is dropped before it was finished or deliberately cut.
struct CancelGuard {
    recorder: Arc<Recorder>,
    finished: bool,
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if !self.finished {
            self.recorder.stream_cancelled();
        }
    }
}

/// The state the body stream walks through, one event per poll.
struct Emitter {
    events: std::vec::IntoIter<Bytes>,
    sent: usize,
    cut_after: Option<usize>,
    chunk_delay: Option<Duration>,
    guard: CancelGuard,
}

/// A `text/event-stream` response that sends `events` one at a time, as `fault` directs.
pub(crate) fn response(events: Vec<Bytes>, fault: Fault, recorder: Arc<Recorder>) -> Response {
    let emitter = Emitter {
        events: events.into_iter(),
        sent: 0,
        cut_after: fault.cut_after,
        chunk_delay: fault
            .chunk_delay_ms
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis),
        guard: CancelGuard {
            recorder,
            finished: false,
        },
    };
    let stream = futures_util::stream::unfold(Some(emitter), |state| async move {
        let mut emitter = state?;
        if emitter.events.len() == 0 {
            emitter.guard.finished = true;
            return None;
        }
        if emitter.cut_after == Some(emitter.sent) {
            // A deliberate cut is not a client going away.
            emitter.guard.finished = true;
            tokio::time::sleep(FLUSH_BEFORE_CUT).await;
            let cut = std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "stand-in fault: cut_after",
            );
            return Some((Err(cut), None));
        }
        if emitter.sent > 0 {
            if let Some(delay) = emitter.chunk_delay {
                tokio::time::sleep(delay).await;
            }
        }
        let chunk = emitter.events.next()?;
        emitter.sent += 1;
        if emitter.events.len() == 0 {
            emitter.guard.finished = true;
        }
        Some((Ok::<Bytes, std::io::Error>(chunk), Some(emitter)))
    });
    let mut response = Response::new(Body::from_stream(stream));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn frames_data_and_events() {
        assert_eq!(
            data(&json!({"a": 1})),
            Bytes::from_static(b"data: {\"a\":1}\n\n")
        );
        assert_eq!(
            event("response.created", &json!({"b": 2})),
            Bytes::from_static(b"event: response.created\ndata: {\"b\":2}\n\n")
        );
    }
}
