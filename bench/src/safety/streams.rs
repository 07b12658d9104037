//! Streamed chat through three targets — the stand-in directly, Warden relaying the stream
//! (output moderation off) and Warden moderating it window by window (the default) — timing
//! each request to its first content delta and to `[DONE]`, and recording how the answer's
//! text arrived (delta sizes, and bursts of deltas released together).

use anyhow::Context as _;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use http_body_util::BodyExt as _;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

use super::prose::prose;
use crate::pool::Pool;
use crate::workload::Target;

/// Deltas arriving closer together than this were released together (the stand-in paces its
/// chunks `chunk_delay_ms` apart, 20 ms by default, so a smaller gap is Warden's doing).
const BURST_GAP: Duration = Duration::from_millis(5);
const REPLY_HEADER: HeaderName = HeaderName::from_static("x-standin-reply");
const FAULT_HEADER: HeaderName = HeaderName::from_static("x-standin-fault");

/// How the stand-in shapes each streamed answer.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub chunks: usize,
    pub chunk_chars: usize,
    pub chunk_delay_ms: u64,
}

/// One of the compared targets.
#[derive(Debug, Clone)]
pub struct StreamTarget {
    pub name: &'static str,
    pub target: Arc<Target>,
    pub pool: Arc<Pool>,
}

/// One streamed request as the client saw it.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// Send → first non-empty `delta.content`.
    pub first_token: Duration,
    /// Send → `data: [DONE]`.
    pub last_token: Duration,
    /// Characters of each content delta, in arrival order.
    pub deltas: Vec<usize>,
    /// Characters released together (deltas less than [`BURST_GAP`] apart).
    pub bursts: Vec<usize>,
}

/// Everything measured for one target.
#[derive(Debug, Clone)]
pub struct TargetRun {
    pub name: &'static str,
    pub samples: Vec<Sample>,
    pub errors: Vec<String>,
}

/// `streams` requests per target in rounds of `parallel` concurrent ones; the targets take
/// turns round by round in mirrored order (A B C, C B A, …) so drift weighs on all of them.
/// One unrecorded request per target first (connections, Warden's caches for the prompt).
pub async fn run(
    targets: &[StreamTarget],
    shape: Shape,
    streams: usize,
    parallel: usize,
) -> anyhow::Result<Vec<TargetRun>> {
    let body = stream_body();
    let mut runs: Vec<TargetRun> = targets
        .iter()
        .map(|t| TargetRun {
            name: t.name,
            samples: Vec::with_capacity(streams),
            errors: Vec::new(),
        })
        .collect();
    let mut next = 0u64;
    for target in targets {
        one(target, &body, shape, next)
            .await
            .with_context(|| format!("warm-up stream through {}", target.name))?;
        next += 1;
    }
    let rounds = streams.div_ceil(parallel.max(1));
    for round in 0..rounds {
        let batch = parallel.min(streams - round * parallel);
        let mut order: Vec<usize> = (0..targets.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for index in order {
            let (Some(target), Some(run)) = (targets.get(index), runs.get_mut(index)) else {
                continue;
            };
            let mut set = JoinSet::new();
            for _ in 0..batch {
                let (target, body) = (target.clone(), body.clone());
                set.spawn(async move { one(&target, &body, shape, next).await });
                next += 1;
            }
            while let Some(joined) = set.join_next().await {
                match joined {
                    Ok(Ok(sample)) => run.samples.push(sample),
                    Ok(Err(error)) => run.errors.push(format!("{error:#}")),
                    Err(error) => run.errors.push(format!("task: {error}")),
                }
            }
        }
    }
    Ok(runs)
}

/// A short support question; the same for every request, so Warden's input moderation is
/// answered from its cache after the warm-up and only output moderation differs.
fn stream_body() -> Bytes {
    Bytes::from(
        json!({
            "model": "gpt-4o-mini",
            "max_tokens": 1024,
            "stream": true,
            // Warden asks upstream for the usage chunk anyway (for its limits); asking on
            // every target gives all three the same paced chunks, so none ends a pause earlier.
            "stream_options": {"include_usage": true},
            "messages": [
                {"role": "system", "content": "Support assistant of an outdoor gear shop: help with orders, shipping, returns and product care."},
                {"role": "user", "content": "How do I look after my new leather hiking boots?"}
            ]
        })
        .to_string(),
    )
}

/// One streamed request numbered `n`; its answer is prose seeded by `n`, so no window of it
/// is in Warden's moderation cache.
async fn one(target: &StreamTarget, body: &Bytes, shape: Shape, n: u64) -> anyhow::Result<Sample> {
    let mut request = target.target.request(n, body);
    let headers = request.headers_mut();
    let answer = prose(1_000_000 + n, shape.chunks * shape.chunk_chars);
    headers.insert(REPLY_HEADER, HeaderValue::from_str(&answer)?);
    headers.insert(
        FAULT_HEADER,
        HeaderValue::from_str(&format!(
            "chunk_chars={},chunk_delay_ms={}",
            shape.chunk_chars, shape.chunk_delay_ms
        ))?,
    );
    let mut lease = target.pool.checkout().await?;
    let sent = Instant::now();
    let response = lease.sender().send_request(request).await?;
    let status = response.status();
    let mut incoming = response.into_body();
    let mut reader = SseReader::default();
    while let Some(frame) = incoming.frame().await {
        if let Ok(data) = frame.context("reading the stream")?.into_data() {
            reader.feed(&data, Instant::now());
        }
    }
    lease.release();
    anyhow::ensure!(status == StatusCode::OK, "status {status}");
    reader.sample(sent, answer.len())
}

/// Incremental `data:` event parser: when content arrived and when the stream ended.
#[derive(Debug, Default)]
struct SseReader {
    pending: Vec<u8>,
    /// (arrival, characters) of each non-empty content delta.
    deltas: Vec<(Instant, usize)>,
    done: Option<Instant>,
}

impl SseReader {
    fn feed(&mut self, data: &[u8], now: Instant) {
        self.pending.extend_from_slice(data);
        while let Some(end) = find(&self.pending, b"\n\n") {
            let event: Vec<u8> = self.pending.drain(..end + 2).collect();
            let text = String::from_utf8_lossy(&event);
            for line in text.lines() {
                let Some(payload) = line.strip_prefix("data: ") else {
                    continue;
                };
                if payload.trim() == "[DONE]" {
                    self.done = Some(now);
                    continue;
                }
                let Ok(chunk) = serde_json::from_str::<Value>(payload) else {
                    continue;
                };
                let chars: usize = chunk["choices"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c["delta"]["content"].as_str())
                    .map(|s| s.chars().count())
                    .sum();
                if chars > 0 {
                    self.deltas.push((now, chars));
                }
            }
        }
    }

    /// The sample, if the stream ended with `[DONE]` and carried the whole answer.
    fn sample(self, sent: Instant, expected_chars: usize) -> anyhow::Result<Sample> {
        let done = self.done.context("the stream ended without data: [DONE]")?;
        let (first, _) = *self
            .deltas
            .first()
            .context("the stream carried no content")?;
        let received: usize = self.deltas.iter().map(|(_, c)| c).sum();
        anyhow::ensure!(
            received == expected_chars,
            "received {received} characters of content, expected {expected_chars}"
        );
        let mut bursts: Vec<usize> = Vec::new();
        let mut last: Option<Instant> = None;
        for &(at, chars) in &self.deltas {
            match (last, bursts.last_mut()) {
                (Some(prev), Some(burst)) if at.duration_since(prev) < BURST_GAP => *burst += chars,
                _ => bursts.push(chars),
            }
            last = Some(at);
        }
        Ok(Sample {
            first_token: first.duration_since(sent),
            last_token: done.duration_since(sent),
            deltas: self.deltas.iter().map(|(_, c)| *c).collect(),
            bursts,
        })
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn delta(text: &str) -> String {
        format!(
            "data: {}\n\n",
            json!({"choices": [{"delta": {"content": text}}]})
        )
    }

    #[test]
    fn deltas_split_across_reads_are_timed_and_grouped_into_bursts() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut reader = SseReader::default();
        let role =
            "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n";
        reader.feed(role.as_bytes(), at(1));
        let first = delta("abcd");
        let (head, tail) = first.split_at(10);
        reader.feed(head.as_bytes(), at(2));
        reader.feed(tail.as_bytes(), at(10));
        // Two deltas in one read, then one 30 ms later: bursts of 4, 5 and 3 characters.
        reader.feed(
            format!("{}{}", delta("ef"), delta("ghi")).as_bytes(),
            at(40),
        );
        reader.feed(delta("jkl").as_bytes(), at(70));
        reader.feed(b"data: [DONE]\n\n", at(71));
        let sample = reader.sample(t0, 12).unwrap();
        assert_eq!(sample.first_token, Duration::from_millis(10));
        assert_eq!(sample.last_token, Duration::from_millis(71));
        assert_eq!(sample.deltas, vec![4, 2, 3, 3]);
        assert_eq!(sample.bursts, vec![4, 5, 3]);
    }

    #[test]
    fn a_stream_without_done_or_with_missing_text_is_an_error() {
        let t0 = Instant::now();
        let mut reader = SseReader::default();
        reader.feed(delta("abc").as_bytes(), t0);
        assert!(reader.sample(t0, 3).is_err());

        let mut reader = SseReader::default();
        reader.feed(format!("{}data: [DONE]\n\n", delta("abc")).as_bytes(), t0);
        assert!(reader.sample(t0, 4).is_err());
    }
}
