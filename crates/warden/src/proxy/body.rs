//! The response body Warden sends: either its own small answer, or the upstream body
//! relayed frame by frame with no copy. A stream that breaks upstream ends with an error
//! event the SDKs raise, instead of a silent truncation.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::observe::{RelayEnd, ResponseObserver};
use super::recorder::{Outcome, Recorder};
use super::upstream::UpstreamBody;
use crate::endpoint::Endpoint;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub enum ProxyBody {
    Full(Option<Bytes>),
    Relay(Box<RelayBody>),
    /// Frames released by a task that transforms the upstream body (output moderation).
    Channel(tokio::sync::mpsc::Receiver<Bytes>),
    /// Another body with the usage-only stream chunk removed (`proxy::strip_usage`).
    Stripped(Box<crate::proxy::strip_usage::StripBody>),
}

impl ProxyBody {
    pub fn full(bytes: Bytes) -> Self {
        ProxyBody::Full(Some(bytes))
    }
}

pub struct RelayBody {
    inner: UpstreamBody,
    /// Finished when the stream ends; dropped unfinished means the client left.
    recorder: Option<Recorder>,
    /// For event streams: how to tell the client the upstream stream broke.
    sse: Option<Endpoint>,
    tail: Option<Bytes>,
    observers: Vec<Box<dyn ResponseObserver>>,
}

impl RelayBody {
    pub fn new(
        inner: UpstreamBody,
        recorder: Recorder,
        sse: Option<Endpoint>,
        observers: Vec<Box<dyn ResponseObserver>>,
    ) -> Self {
        Self {
            inner,
            recorder: Some(recorder),
            sse,
            tail: None,
            observers,
        }
    }

    fn finish(&mut self, outcome: Outcome, reason: Option<&str>) {
        if let Some(recorder) = self.recorder.take() {
            let how = match outcome {
                Outcome::Allowed => RelayEnd::Complete,
                Outcome::Cancelled => RelayEnd::ClientLeft,
                Outcome::Blocked | Outcome::Failed => RelayEnd::UpstreamBroke,
            };
            for observer in &mut self.observers {
                observer.end(how);
            }
            recorder.finish(outcome, reason);
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ProxyBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Relay(relay) => relay.poll_relay(cx),
            ProxyBody::Channel(rx) => rx.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b)))),
            ProxyBody::Stripped(body) => body.poll(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Full(bytes) => bytes.is_none(),
            ProxyBody::Relay(relay) => relay.tail.is_none() && relay.recorder.is_none(),
            ProxyBody::Channel(rx) => rx.is_closed() && rx.is_empty(),
            ProxyBody::Stripped(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            ProxyBody::Full(None) => SizeHint::with_exact(0),
            ProxyBody::Relay(relay) => relay.inner.size_hint(),
            ProxyBody::Channel(_) => SizeHint::default(),
            ProxyBody::Stripped(body) => body.size_hint(),
        }
    }
}

impl RelayBody {
    fn poll_relay(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(tail) = self.tail.take() {
            return Poll::Ready(Some(Ok(Frame::data(tail))));
        }
        if self.recorder.is_none() {
            // Finished: the error tail was sent, or the sized body is complete.
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    for observer in &mut self.observers {
                        observer.frame(data);
                    }
                }
                // hyper stops polling once a sized body is complete, so the end is
                // noticed here rather than by waiting for a final `None`.
                if self.inner.is_end_stream() {
                    self.finish(Outcome::Allowed, None);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                self.finish(Outcome::Allowed, None);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(err))) => {
                tracing::warn!(error = %err, "upstream body broke mid-response");
                self.finish(Outcome::Failed, Some("upstream_stream_broken"));
                match self.sse {
                    Some(endpoint) => {
                        Poll::Ready(Some(Ok(Frame::data(stream_error_event(endpoint)))))
                    }
                    // A plain body cannot carry an error: abort so the client sees a
                    // truncated response, never a short one that looks complete.
                    None => Poll::Ready(Some(Err(err))),
                }
            }
        }
    }
}

const STREAM_BROKEN: &str = "The upstream stream ended unexpectedly. Please retry.";

/// The SSE event OpenAI's SDKs turn into an `APIError` for each stream flavour.
fn stream_error_event(endpoint: Endpoint) -> Bytes {
    crate::openai::sse::error_event(endpoint, "upstream_stream_broken", STREAM_BROKEN, 0)
}

impl Drop for RelayBody {
    fn drop(&mut self) {
        // Unfinished at drop: the client went away mid-response.
        self.finish(Outcome::Cancelled, Some("client_disconnected"));
    }
}
