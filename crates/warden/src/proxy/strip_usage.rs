//! Removes the usage-only chunk from a chat completions stream when Warden asked for
//! `stream_options.include_usage` and the client did not. Frames without it pass
//! through as the same `Bytes` (no copy); only an event split across frames is held.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};

use super::body::{BoxError, ProxyBody};

/// An event larger than this without an end is passed on as it is, not held.
const MAX_HELD: usize = 1 << 20;

#[derive(Default)]
pub struct UsageChunkStripper {
    held: BytesMut,
    done: bool,
}

impl UsageChunkStripper {
    /// The bytes to send for one upstream frame; empty when all of it is held or removed.
    pub fn frame(&mut self, data: Bytes) -> Bytes {
        if self.done {
            return self.flush_then(data);
        }
        let buf = if self.held.is_empty() {
            data
        } else {
            self.held.extend_from_slice(&data);
            self.held.split().freeze()
        };
        // Complete events end at the last blank line; the rest waits for its end.
        let end = match find_last(&buf, b"\n\n") {
            Some(i) => i + 2,
            None if buf.len() > MAX_HELD => buf.len(),
            None => {
                self.held.extend_from_slice(&buf);
                return Bytes::new();
            }
        };
        if end < buf.len() {
            self.held.extend_from_slice(&buf[end..]);
        }
        let complete = buf.slice(..end);
        match usage_event(&complete) {
            None => complete,
            Some((start, stop)) => {
                self.done = true;
                let mut out = BytesMut::with_capacity(complete.len() - (stop - start));
                out.extend_from_slice(&complete[..start]);
                out.extend_from_slice(&complete[stop..]);
                out.freeze()
            }
        }
    }

    /// Whatever is still held when the stream ends.
    pub fn end(&mut self) -> Bytes {
        self.held.split().freeze()
    }

    fn flush_then(&mut self, data: Bytes) -> Bytes {
        if self.held.is_empty() {
            return data;
        }
        self.held.extend_from_slice(&data);
        self.held.split().freeze()
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn find_last(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).rposition(|w| w == needle)
}

/// The byte range of a `data:` event whose chunk has `"choices":[]` and a `usage`
/// object: the extra chunk `include_usage` adds. Only such events are parsed.
fn usage_event(events: &[u8]) -> Option<(usize, usize)> {
    let mut from = 0;
    while let Some(hit) = find(&events[from..], b"\"usage\"") {
        let at = from + hit;
        let start = find_last(&events[..at], b"\n\n").map_or(0, |i| i + 2);
        let stop = find(&events[at..], b"\n\n").map_or(events.len(), |i| at + i + 2);
        if is_usage_chunk(&events[start..stop]) {
            return Some((start, stop));
        }
        from = stop;
        if from >= events.len() {
            break;
        }
    }
    None
}

fn is_usage_chunk(event: &[u8]) -> bool {
    let Some(value) = crate::openai::sse::data_json(event) else {
        return false;
    };
    value
        .get("choices")
        .and_then(|c| c.as_array())
        .is_some_and(|c| c.is_empty())
        && value.get("usage").is_some_and(|u| u.is_object())
}

/// The response with the usage-only chunk taken out when `strip` is set; the length
/// changes, so a `content-length` goes.
pub fn wrap(response: http::Response<ProxyBody>, strip: bool) -> http::Response<ProxyBody> {
    if !strip {
        return response;
    }
    let (mut head, body) = response.into_parts();
    head.headers.remove(http::header::CONTENT_LENGTH);
    http::Response::from_parts(head, ProxyBody::Stripped(Box::new(StripBody::new(body))))
}

/// A response body with the usage-only chunk taken out.
pub struct StripBody {
    inner: ProxyBody,
    stripper: UsageChunkStripper,
    finished: bool,
}

impl StripBody {
    pub fn new(inner: ProxyBody) -> Self {
        Self {
            inner,
            stripper: UsageChunkStripper::default(),
            finished: false,
        }
    }

    pub fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            if self.finished {
                return Poll::Ready(None);
            }
            match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        let out = self.stripper.frame(data);
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                    }
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                Poll::Ready(Some(Err(err))) => return Poll::Ready(Some(Err(err))),
                Poll::Ready(None) => {
                    self.finished = true;
                    let rest = self.stripper.end();
                    return Poll::Ready((!rest.is_empty()).then(|| Ok(Frame::data(rest))));
                }
            }
        }
    }

    pub fn is_end_stream(&self) -> bool {
        self.finished
    }

    pub fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const CHUNK: &str = "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi \\\"usage\\\":{\"}}],\"usage\":null}\n\n";
    const USAGE: &str = "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2,\"total_tokens\":7}}\n\n";
    const DONE: &str = "data: [DONE]\n\n";

    fn run(frames: &[&[u8]]) -> String {
        let mut s = UsageChunkStripper::default();
        let mut out = Vec::new();
        for f in frames {
            out.extend_from_slice(&s.frame(Bytes::copy_from_slice(f)));
        }
        out.extend_from_slice(&s.end());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn removes_the_usage_chunk_and_keeps_the_rest() {
        let stream = format!("{CHUNK}{CHUNK}{USAGE}{DONE}");
        assert_eq!(run(&[stream.as_bytes()]), format!("{CHUNK}{CHUNK}{DONE}"));
    }

    #[test]
    fn works_whatever_the_frame_boundaries() {
        let stream = format!("{CHUNK}{USAGE}{DONE}");
        let bytes = stream.as_bytes();
        for cut in 1..bytes.len() {
            for cut2 in [cut, (cut + 7).min(bytes.len())] {
                let got = run(&[&bytes[..cut], &bytes[cut..cut2], &bytes[cut2..]]);
                assert_eq!(got, format!("{CHUNK}{DONE}"), "cuts at {cut}/{cut2}");
            }
        }
    }

    #[test]
    fn whole_events_pass_without_a_copy() {
        let mut s = UsageChunkStripper::default();
        let frame = Bytes::from(format!("{CHUNK}{CHUNK}"));
        let out = s.frame(frame.clone());
        assert_eq!(out.as_ptr(), frame.as_ptr(), "same buffer, no copy");
        assert_eq!(out.len(), frame.len());
    }

    #[test]
    fn a_stream_without_a_usage_chunk_is_unchanged() {
        let stream = format!("{CHUNK}{CHUNK}{DONE}");
        assert_eq!(run(&[stream.as_bytes()]), stream);
        // A broken stream's partial tail is still delivered.
        assert_eq!(
            run(&[b"data: {\"a\":1}\n\ndata: {\"b\""]),
            "data: {\"a\":1}\n\ndata: {\"b\""
        );
    }
}
