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
            tail: VecDeque::new(),
            tail_len: 0,
        }))
    }
}

struct UsageObserver {
    ticket: Arc<Ticket>,
    success: bool,
    tail: VecDeque<Bytes>,
    tail_len: usize,
}

impl ResponseObserver for UsageObserver {
    fn frame(&mut self, data: &Bytes) {
        self.tail.push_back(data.clone());
        self.tail_len += data.len();
        while self.tail_len - self.tail.front().map_or(0, Bytes::len) >= TAIL_BYTES {
            if let Some(old) = self.tail.pop_front() {
                self.tail_len -= old.len();
            }
        }
    }

    fn end(&mut self, how: RelayEnd) {
        if !self.success {
            // OpenAI does not charge refused requests: give the estimate back.
            self.ticket.settle(Some(0));
            return;
        }
        let mut text = Vec::with_capacity(self.tail_len);
        for frame in &self.tail {
            text.extend_from_slice(frame);
        }
        let total = total_tokens(&text);
        if how != RelayEnd::Complete && total.is_none() {
            tracing::debug!("response ended without usage; keeping the prompt estimate");
        }
        self.ticket.settle(total);
    }
}

/// The last `usage` object in a body or stream tail: `total_tokens`, or the sum of
/// prompt/completion (chat, completions, embeddings) or input/output (responses).
pub fn total_tokens(tail: &[u8]) -> Option<u64> {
    let needle = b"\"usage\":";
    let mut end = tail.len();
    while let Some(at) = tail[..end].windows(needle.len()).rposition(|w| w == needle) {
        let rest = &tail[at + needle.len()..];
        let mut values =
            serde_json::Deserializer::from_slice(rest).into_iter::<serde_json::Value>();
        if let Some(Ok(serde_json::Value::Object(usage))) = values.next() {
            let n = |k: &str| usage.get(k).and_then(serde_json::Value::as_u64);
            if let Some(total) = n("total_tokens") {
                return Some(total);
            }
            let sum = n("prompt_tokens").or(n("input_tokens")).unwrap_or(0)
                + n("completion_tokens").or(n("output_tokens")).unwrap_or(0);
            return Some(sum);
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
}
