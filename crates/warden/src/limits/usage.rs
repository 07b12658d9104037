//! Reads the upstream's `usage` from the relayed response (JSON or SSE) without copying
//! frames, and settles the request's token estimate with it when the response ends.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use http::response::Parts;

use super::Ticket;
use crate::pipeline::RequestContext;
use crate::proxy::observe::{ObserverFactory, RelayEnd, ResponseObserver};

/// `usage` sits at the end of a body or stream; this much of the tail is kept (as
/// shared frames, not copies).
const TAIL_BYTES: usize = 64 * 1024;

pub struct UsageObservers;

impl ObserverFactory for UsageObservers {
    fn observe(&self, ctx: &RequestContext, head: &Parts) -> Option<Box<dyn ResponseObserver>> {
        let ticket = ctx.limit_ticket.clone()?;
        Some(Box::new(UsageObserver {
            ticket,
            success: head.status.is_success(),
            tail: Tail::default(),
        }))
    }
}

/// The last [`TAIL_BYTES`] of a response, as shared frames (no copies until read).
#[derive(Default)]
pub struct Tail {
    frames: VecDeque<Bytes>,
    len: usize,
}

impl Tail {
    pub fn push(&mut self, data: &Bytes) {
        self.frames.push_back(data.clone());
        self.len += data.len();
        while self.len - self.frames.front().map_or(0, Bytes::len) >= TAIL_BYTES {
            if let Some(old) = self.frames.pop_front() {
                self.len -= old.len();
            }
        }
    }

    /// The kept bytes, joined.
    pub fn text(&self) -> Vec<u8> {
        let mut text = Vec::with_capacity(self.len);
        for frame in &self.frames {
            text.extend_from_slice(frame);
        }
        text
    }
}

struct UsageObserver {
    ticket: Arc<Ticket>,
    success: bool,
    tail: Tail,
}

impl ResponseObserver for UsageObserver {
    fn frame(&mut self, data: &Bytes) {
        self.tail.push(data);
    }

    fn end(&mut self, how: RelayEnd) {
        if !self.success {
            // OpenAI does not charge refused requests: give the estimate back.
            self.ticket.settle(Some(0));
            return;
        }
        let total = total_tokens(&self.tail.text());
        if how != RelayEnd::Complete && total.is_none() {
            tracing::debug!("response ended without usage; keeping the prompt estimate");
        }
        self.ticket.settle(total);
    }
}

/// The last `usage` object in a body or stream tail: `total_tokens`, or the sum of
/// prompt/completion (chat, completions, embeddings) or input/output (responses).
pub fn total_tokens(tail: &[u8]) -> Option<u64> {
    last_usage(tail).map(|usage| {
        let n = |k: &str| usage.get(k).and_then(serde_json::Value::as_u64);
        n("total_tokens").unwrap_or_else(|| {
            n("prompt_tokens").or(n("input_tokens")).unwrap_or(0)
                + n("completion_tokens").or(n("output_tokens")).unwrap_or(0)
        })
    })
}

/// Billed tokens of one response, split the way prices are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// All prompt tokens, cached ones included.
    pub input: u64,
    pub cached_input: u64,
    pub output: u64,
}

/// The last `usage` in a tail, split into input (with its cached part) and output, for
/// both the chat/completions/embeddings and the responses shapes.
pub fn usage_of(tail: &[u8]) -> Option<Usage> {
    let usage = last_usage(tail)?;
    let n = |v: &serde_json::Value, k: &str| v.get(k).and_then(serde_json::Value::as_u64);
    let cached = ["prompt_tokens_details", "input_tokens_details"]
        .iter()
        .find_map(|d| usage.get(*d).and_then(|d| n(d, "cached_tokens")))
        .unwrap_or(0);
    let input = n(&usage, "prompt_tokens")
        .or(n(&usage, "input_tokens"))
        .unwrap_or(0);
    Some(Usage {
        input,
        cached_input: cached.min(input),
        output: n(&usage, "completion_tokens")
            .or(n(&usage, "output_tokens"))
            .unwrap_or(0),
    })
}

fn last_usage(tail: &[u8]) -> Option<serde_json::Value> {
    let needle = b"\"usage\":";
    let mut end = tail.len();
    while let Some(at) = tail[..end].windows(needle.len()).rposition(|w| w == needle) {
        let rest = &tail[at + needle.len()..];
        let mut values =
            serde_json::Deserializer::from_slice(rest).into_iter::<serde_json::Value>();
        if let Some(Ok(usage @ serde_json::Value::Object(_))) = values.next() {
            return Some(usage);
        }
        end = at;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_usage_in_bodies_and_streams() {
        let chat = br#"{"id":"x","choices":[{"message":{"content":"\"usage\": 5"}}],"usage":{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12}}"#;
        assert_eq!(total_tokens(chat), Some(12));
        let stream = b"data: {\"choices\":[],\"usage\":null}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":1,\"total_tokens\":5}}\n\ndata: [DONE]\n\n";
        assert_eq!(total_tokens(stream), Some(5));
        let responses = br#"{"usage":{"input_tokens":7,"output_tokens":2},"user":null}"#;
        assert_eq!(total_tokens(responses), Some(9));
        assert_eq!(total_tokens(b"data: {\"usage\":null}\n\n"), None);
        assert_eq!(total_tokens(b"no usage here"), None);
    }

    #[test]
    fn splits_cached_input_from_input_and_output() {
        let chat = br#"{"usage":{"prompt_tokens":100,"completion_tokens":20,"total_tokens":120,"prompt_tokens_details":{"cached_tokens":64}}}"#;
        assert_eq!(
            usage_of(chat),
            Some(Usage {
                input: 100,
                cached_input: 64,
                output: 20
            })
        );
        let responses = br#"{"usage":{"input_tokens":7,"input_tokens_details":{"cached_tokens":0},"output_tokens":2,"total_tokens":9}}"#;
        assert_eq!(
            usage_of(responses),
            Some(Usage {
                input: 7,
                cached_input: 0,
                output: 2
            })
        );
        assert_eq!(usage_of(b"data: {\"usage\":null}"), None);
    }
}
