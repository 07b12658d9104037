//! Reads a relayed response's output tokens (the last `usage` in its tail) for the
//! distillation detector's long-output signal. Passive: sees frames, changes nothing.

use std::collections::VecDeque;

use bytes::Bytes;
use http::response::Parts;

use super::Abuse;
use crate::endpoint::Endpoint;
use crate::pipeline::RequestContext;
use crate::proxy::observe::{ObserverFactory, RelayEnd, ResponseObserver};

/// `usage` is at the end of a body or stream; this much tail is kept (shared frames).
const TAIL_BYTES: usize = 16 * 1024;

pub struct OutputObservers(pub Abuse);

impl ObserverFactory for OutputObservers {
    fn observe(&self, ctx: &RequestContext, head: &Parts) -> Option<Box<dyn ResponseObserver>> {
        let generates = matches!(
            ctx.endpoint,
            Endpoint::ChatCompletions | Endpoint::Responses | Endpoint::Completions
        );
        if !generates || !head.status.is_success() || self.0.tx.is_none() {
            return None;
        }
        Some(Box::new(OutputObserver {
            abuse: self.0.clone(),
            key: ctx.key_name()?.to_owned(),
            user: ctx.end_user.as_ref().map(|u| u.id.clone()),
            tail: VecDeque::new(),
            tail_len: 0,
        }))
    }
}

struct OutputObserver {
    abuse: Abuse,
    key: String,
    user: Option<String>,
    tail: VecDeque<Bytes>,
    tail_len: usize,
}

impl ResponseObserver for OutputObserver {
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
        if how != RelayEnd::Complete {
            return;
        }
        let mut text = Vec::with_capacity(self.tail_len);
        for frame in &self.tail {
            text.extend_from_slice(frame);
        }
        if let Some(tokens) = output_tokens(&text) {
            self.abuse
                .observe_output(std::mem::take(&mut self.key), self.user.take(), tokens);
        }
    }
}

/// `completion_tokens` (chat, completions) or `output_tokens` (responses) of the last
/// `usage` object in the tail.
pub fn output_tokens(tail: &[u8]) -> Option<u64> {
    let needle = b"\"usage\":";
    let at = tail.windows(needle.len()).rposition(|w| w == needle)?;
    let mut values = serde_json::Deserializer::from_slice(&tail[at + needle.len()..])
        .into_iter::<serde_json::Value>();
    let usage = values.next()?.ok()?;
    usage
        .get("completion_tokens")
        .or_else(|| usage.get("output_tokens"))
        .and_then(serde_json::Value::as_u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_output_tokens_of_either_shape() {
        let chat = br#"{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":1200,"total_tokens":1205}}"#;
        assert_eq!(output_tokens(chat), Some(1200));
        let responses = br#"data: {"type":"response.completed","response":{"usage":{"input_tokens":3,"output_tokens":42}}}"#;
        assert_eq!(output_tokens(responses), Some(42));
        assert_eq!(output_tokens(b"{}"), None);
    }
}
