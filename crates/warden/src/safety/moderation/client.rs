//! The call to `POST /moderations`: behind a small trait so the policy, cache and
//! breaker are tested without a network, and the real one reuses the gateway's pooled
//! upstream client and keys.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;

use super::categories::Scores;
use crate::keys::VirtualKey;
use crate::proxy::upstream::Upstream;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a moderation call gave no usable answer (a low-cardinality label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Timeout,
    Unreachable,
    RateLimited,
    Status,
    BadAnswer,
    CircuitOpen,
    NoKey,
}

impl Failure {
    pub fn label(self) -> &'static str {
        match self {
            Failure::Timeout => "moderation_timeout",
            Failure::Unreachable => "moderation_unreachable",
            Failure::RateLimited => "moderation_rate_limited",
            Failure::Status => "moderation_error_status",
            Failure::BadAnswer => "moderation_bad_answer",
            Failure::CircuitOpen => "moderation_circuit_open",
            Failure::NoKey => "moderation_no_upstream_key",
        }
    }
}

pub trait Backend: Send + Sync {
    /// Sends one request body; answers one `Scores` per result, in order.
    fn moderate<'a>(
        &'a self,
        key: Option<&'a VirtualKey>,
        body: Bytes,
    ) -> BoxFuture<'a, Result<Vec<Scores>, Failure>>;
}

/// Largest moderation answer read (a result is ~1.5 KB; 2048 inputs fit easily).
const MAX_ANSWER_BYTES: usize = 8 * 1024 * 1024;

pub struct UpstreamBackend {
    pub upstream: Arc<Upstream>,
}

impl Backend for UpstreamBackend {
    fn moderate<'a>(
        &'a self,
        key: Option<&'a VirtualKey>,
        body: Bytes,
    ) -> BoxFuture<'a, Result<Vec<Scores>, Failure>> {
        Box::pin(async move {
            let (status, answer) = self
                .upstream
                .call_internal("/v1/moderations", key, body, MAX_ANSWER_BYTES)
                .await
                .map_err(|err| match err {
                    crate::error::WardenError::NoUpstreamKey => Failure::NoKey,
                    _ => Failure::Unreachable,
                })?;
            if status.as_u16() == 429 {
                return Err(Failure::RateLimited);
            }
            if !status.is_success() {
                return Err(Failure::Status);
            }
            parse_results(&answer)
        })
    }
}

pub fn parse_results(answer: &[u8]) -> Result<Vec<Scores>, Failure> {
    let value: Value = serde_json::from_slice(answer).map_err(|_| Failure::BadAnswer)?;
    value
        .get("results")
        .and_then(Value::as_array)
        .ok_or(Failure::BadAnswer)?
        .iter()
        .map(|r| Scores::from_result(r).ok_or(Failure::BadAnswer))
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_results_and_refuses_junk() {
        let ok = br#"{"id":"m","model":"x","results":[{"flagged":false,"categories":{},"category_scores":{}},{"flagged":true,"categories":{"hate":true},"category_scores":{"hate":0.9}}]}"#;
        let results = parse_results(ok).unwrap();
        assert_eq!(results.len(), 2);
        assert_eq!(results[1].flagged.names(), vec!["hate"]);
        assert_eq!(parse_results(b"nope"), Err(Failure::BadAnswer));
        assert_eq!(
            parse_results(br#"{"results":[1]}"#),
            Err(Failure::BadAnswer)
        );
    }
}
