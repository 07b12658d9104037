//! OpenAI's `usage` object, read from the end of a response: the JSON body of any endpoint
//! or the last usage-bearing event of a stream (chat's usage chunk, responses'
//! `response.completed`). Kept as shared frames, so watching costs no copies.

use std::collections::VecDeque;

use bytes::Bytes;
use serde_json::Value;

/// `usage` sits at the end of a body or stream; this much of the tail is kept.
const TAIL_BYTES: usize = 64 * 1024;

/// Billed tokens of one response, split the way prices are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// All prompt tokens, cached ones included.
    pub input: u64,
    pub cached_input: u64,
    pub output: u64,
    /// `total_tokens` where the response gives it, else input + output.
    pub total: u64,
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

    /// The last `usage` object in the kept bytes.
    pub fn usage(&self) -> Option<Usage> {
        let mut text = Vec::with_capacity(self.len);
        for frame in &self.frames {
            text.extend_from_slice(frame);
        }
        last_in(&text)
    }
}

/// The last `usage` object in a body or stream tail, for both the chat / completions /
/// embeddings shape (`prompt_tokens`, `completion_tokens`) and the responses one
/// (`input_tokens`, `output_tokens`). `usage: null` (every chunk but the last) is skipped.
pub fn last_in(tail: &[u8]) -> Option<Usage> {
    let usage = last_object(tail)?;
    let n = |v: &Value, k: &str| v.get(k).and_then(Value::as_u64);
    let cached = ["prompt_tokens_details", "input_tokens_details"]
        .iter()
        .find_map(|d| usage.get(*d).and_then(|d| n(d, "cached_tokens")))
        .unwrap_or(0);
    let input = n(&usage, "prompt_tokens")
        .or(n(&usage, "input_tokens"))
        .unwrap_or(0);
    let output = n(&usage, "completion_tokens")
        .or(n(&usage, "output_tokens"))
        .unwrap_or(0);
    Some(Usage {
        input,
        cached_input: cached.min(input),
        output,
        total: n(&usage, "total_tokens").unwrap_or(input + output),
    })
}

fn last_object(tail: &[u8]) -> Option<Value> {
    let needle = b"\"usage\":";
    let mut end = tail.len();
    while let Some(at) = tail[..end].windows(needle.len()).rposition(|w| w == needle) {
        let rest = &tail[at + needle.len()..];
        let mut values = serde_json::Deserializer::from_slice(rest).into_iter::<Value>();
        if let Some(Ok(usage @ Value::Object(_))) = values.next() {
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
        let total = |t: &[u8]| last_in(t).map(|u| u.total);
        let chat = br#"{"id":"x","choices":[{"message":{"content":"\"usage\": 5"}}],"usage":{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12}}"#;
        assert_eq!(total(chat), Some(12));
        let stream = b"data: {\"choices\":[],\"usage\":null}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":1,\"total_tokens\":5}}\n\ndata: [DONE]\n\n";
        assert_eq!(total(stream), Some(5));
        let responses = br#"{"usage":{"input_tokens":7,"output_tokens":2},"user":null}"#;
        assert_eq!(total(responses), Some(9));
        let event = br#"data: {"type":"response.completed","response":{"usage":{"input_tokens":3,"output_tokens":42}}}"#;
        assert_eq!(last_in(event).map(|u| u.output), Some(42));
        assert_eq!(total(b"data: {\"usage\":null}\n\n"), None);
        assert_eq!(total(b"no usage here"), None);
    }

    #[test]
    fn splits_cached_input_from_input_and_output() {
        let chat = br#"{"usage":{"prompt_tokens":100,"completion_tokens":20,"total_tokens":120,"prompt_tokens_details":{"cached_tokens":64}}}"#;
        assert_eq!(
            last_in(chat),
            Some(Usage {
                input: 100,
                cached_input: 64,
                output: 20,
                total: 120
            })
        );
        let responses = br#"{"usage":{"input_tokens":7,"input_tokens_details":{"cached_tokens":0},"output_tokens":2,"total_tokens":9}}"#;
        assert_eq!(
            last_in(responses),
            Some(Usage {
                input: 7,
                cached_input: 0,
                output: 2,
                total: 9
            })
        );
    }

    #[test]
    fn the_tail_keeps_the_end_of_a_long_response() {
        let mut tail = Tail::default();
        let filler = Bytes::from(vec![b' '; 10_000]);
        for _ in 0..20 {
            tail.push(&filler);
        }
        tail.push(&Bytes::from_static(
            br#"{"usage":{"prompt_tokens":1,"completion_tokens":2}}"#,
        ));
        assert!(tail.len <= TAIL_BYTES + 10_000);
        assert_eq!(tail.usage().map(|u| u.total), Some(3));
    }
}
