//! Faults on cue: parse `x-standin-fault` specs and keep the queue of faults for the next N calls.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// The request header that carries a fault spec.
pub(crate) const HEADER: &str = "x-standin-fault";

/// Most entries the queue holds; a test never needs more.
const QUEUE_CAP: usize = 1024;

/// What to do wrong on one call. Specs look like `status=429` or
/// `delay_ms=100,chunk_delay_ms=5,cut_after=3` (separated by `,`, `;`, `&` or spaces).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Fault {
    /// Answer with this error status instead of the real answer.
    pub(crate) status: Option<u16>,
    /// Wait this long before answering (streams: before the first byte).
    pub(crate) delay_ms: Option<u64>,
    /// Streams: send this many chunks, then drop the connection.
    pub(crate) cut_after: Option<usize>,
    /// Streams: wait this long between chunks.
    pub(crate) chunk_delay_ms: Option<u64>,
    /// Streams: cut the reply text into pieces of this many characters (not words).
    pub(crate) chunk_chars: Option<usize>,
    /// With `status=429`: answer `insufficient_quota` (billing) instead of a rate limit.
    pub(crate) insufficient_quota: bool,
    /// Headers put on the answer, replacing the defaults (see [`Fault::decorate`]).
    pub(crate) headers: HeaderFault,
}

/// Response headers a fault sets: retry hints and OpenAI's `x-ratelimit-*` state, so
/// callers can be tested against a nearly exhausted account.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct HeaderFault {
    pub(crate) retry_after_ms: Option<u64>,
    pub(crate) retry_after: Option<u64>,
    pub(crate) should_retry: Option<bool>,
    pub(crate) limit_requests: Option<u64>,
    pub(crate) remaining_requests: Option<u64>,
    pub(crate) reset_requests_ms: Option<u64>,
    pub(crate) limit_tokens: Option<u64>,
    pub(crate) remaining_tokens: Option<u64>,
    pub(crate) reset_tokens_ms: Option<u64>,
}

impl HeaderFault {
    fn overridden_by(self, over: Self) -> Self {
        Self {
            retry_after_ms: over.retry_after_ms.or(self.retry_after_ms),
            retry_after: over.retry_after.or(self.retry_after),
            should_retry: over.should_retry.or(self.should_retry),
            limit_requests: over.limit_requests.or(self.limit_requests),
            remaining_requests: over.remaining_requests.or(self.remaining_requests),
            reset_requests_ms: over.reset_requests_ms.or(self.reset_requests_ms),
            limit_tokens: over.limit_tokens.or(self.limit_tokens),
            remaining_tokens: over.remaining_tokens.or(self.remaining_tokens),
            reset_tokens_ms: over.reset_tokens_ms.or(self.reset_tokens_ms),
        }
    }
}

impl Fault {
    /// Parses a spec; an empty spec is no fault.
    pub(crate) fn parse(spec: &str) -> Result<Self, String> {
        let mut fault = Self::default();
        let items = spec
            .split(|c: char| c == ',' || c == ';' || c == '&' || c.is_whitespace())
            .filter(|item| !item.is_empty());
        for item in items {
            let Some((key, value)) = item.split_once('=') else {
                return Err(format!("fault `{item}` is not key=value"));
            };
            let number = |what: &str| -> Result<u64, String> {
                value
                    .trim()
                    .parse::<u64>()
                    .map_err(|_| format!("fault `{what}` wants a whole number, got `{value}`"))
            };
            match key.trim() {
                "status" => {
                    let status = number("status")?;
                    if !(400..=599).contains(&status) {
                        return Err(format!("fault status must be 400..=599, got {status}"));
                    }
                    fault.status = u16::try_from(status).ok();
                }
                "delay_ms" => fault.delay_ms = Some(number("delay_ms")?),
                "cut_after" => {
                    fault.cut_after = usize::try_from(number("cut_after")?).ok();
                }
                "chunk_delay_ms" => fault.chunk_delay_ms = Some(number("chunk_delay_ms")?),
                "chunk_chars" => {
                    let n = number("chunk_chars")?;
                    if n == 0 {
                        return Err("fault `chunk_chars` must be at least 1".into());
                    }
                    fault.chunk_chars = usize::try_from(n).ok();
                }
                "code" if value.trim() == "insufficient_quota" => fault.insufficient_quota = true,
                "code" => {
                    return Err(format!(
                        "fault `code` knows only insufficient_quota, got `{value}`"
                    ))
                }
                "retry_after_ms" => fault.headers.retry_after_ms = Some(number(key)?),
                "retry_after" => fault.headers.retry_after = Some(number(key)?),
                "should_retry" => {
                    fault.headers.should_retry = match value.trim() {
                        "true" => Some(true),
                        "false" => Some(false),
                        _ => return Err(format!("fault `should_retry` wants true or false, got `{value}`")),
                    }
                }
                "limit_requests" => fault.headers.limit_requests = Some(number(key)?),
                "remaining_requests" => fault.headers.remaining_requests = Some(number(key)?),
                "reset_requests_ms" => fault.headers.reset_requests_ms = Some(number(key)?),
                "limit_tokens" => fault.headers.limit_tokens = Some(number(key)?),
                "remaining_tokens" => fault.headers.remaining_tokens = Some(number(key)?),
                "reset_tokens_ms" => fault.headers.reset_tokens_ms = Some(number(key)?),
                other => {
                    return Err(format!(
                    "unknown fault `{other}` (known: status, delay_ms, cut_after, chunk_delay_ms, chunk_chars, code, \
                     retry_after_ms, retry_after, should_retry, limit_requests, remaining_requests, \
                     reset_requests_ms, limit_tokens, remaining_tokens, reset_tokens_ms)"
                ))
                }
            }
        }
        Ok(fault)
    }

    /// This fault with every field that `over` sets taken from `over`.
    pub(crate) fn overridden_by(self, over: Self) -> Self {
        Self {
            status: over.status.or(self.status),
            delay_ms: over.delay_ms.or(self.delay_ms),
            cut_after: over.cut_after.or(self.cut_after),
            chunk_delay_ms: over.chunk_delay_ms.or(self.chunk_delay_ms),
            chunk_chars: over.chunk_chars.or(self.chunk_chars),
            insufficient_quota: over.insufficient_quota || self.insufficient_quota,
            headers: self.headers.overridden_by(over.headers),
        }
    }

    /// Puts the fault's headers on an answer, replacing what the answer already had.
    pub(crate) fn decorate(&self, headers: &mut http::HeaderMap) {
        let h = &self.headers;
        let millis = |ms: u64| format!("{ms}ms");
        let values: [(&'static str, Option<String>); 9] = [
            ("retry-after-ms", h.retry_after_ms.map(|v| v.to_string())),
            ("retry-after", h.retry_after.map(|v| v.to_string())),
            ("x-should-retry", h.should_retry.map(|v| v.to_string())),
            (
                "x-ratelimit-limit-requests",
                h.limit_requests.map(|v| v.to_string()),
            ),
            (
                "x-ratelimit-remaining-requests",
                h.remaining_requests.map(|v| v.to_string()),
            ),
            (
                "x-ratelimit-reset-requests",
                h.reset_requests_ms.map(millis),
            ),
            (
                "x-ratelimit-limit-tokens",
                h.limit_tokens.map(|v| v.to_string()),
            ),
            (
                "x-ratelimit-remaining-tokens",
                h.remaining_tokens.map(|v| v.to_string()),
            ),
            ("x-ratelimit-reset-tokens", h.reset_tokens_ms.map(millis)),
        ];
        for (name, value) in values {
            if let Some(value) = value.and_then(|v| http::HeaderValue::from_str(&v).ok()) {
                headers.insert(http::HeaderName::from_static(name), value);
            }
        }
    }
}

/// A queued fault and how many more calls it applies to.
#[derive(Debug)]
struct Queued {
    fault: Fault,
    remaining: u32,
    /// Only calls whose path starts with this are affected; `None` means every `/v1` call.
    path_prefix: Option<String>,
}

/// Faults queued through the control API, applied to the next matching `/v1` calls in order.
#[derive(Debug, Default)]
pub(crate) struct FaultQueue {
    entries: Mutex<VecDeque<Queued>>,
    /// Mirrors `entries.len()` so the common empty case takes no lock.
    len: AtomicUsize,
}

impl FaultQueue {
    /// Queues `fault` for the next `count` calls (whose path starts with `path_prefix`, if given).
    pub(crate) fn push(
        &self,
        fault: Fault,
        count: u32,
        path_prefix: Option<String>,
    ) -> Result<(), String> {
        if count == 0 {
            return Ok(());
        }
        let mut entries = self.entries.lock().map_err(|_| "fault queue poisoned")?;
        if entries.len() >= QUEUE_CAP {
            return Err(format!("fault queue is full ({QUEUE_CAP} entries)"));
        }
        entries.push_back(Queued {
            fault,
            remaining: count,
            path_prefix,
        });
        self.len.store(entries.len(), Ordering::Release);
        Ok(())
    }

    /// Takes one use of the first queued fault that applies to `path`.
    pub(crate) fn take(&self, path: &str) -> Option<Fault> {
        if self.len.load(Ordering::Acquire) == 0 {
            return None;
        }
        let mut entries = self.entries.lock().ok()?;
        let index = entries.iter().position(|queued| {
            queued
                .path_prefix
                .as_deref()
                .is_none_or(|prefix| path.starts_with(prefix))
        })?;
        let queued = entries.get_mut(index)?;
        let fault = queued.fault;
        queued.remaining -= 1;
        if queued.remaining == 0 {
            entries.remove(index);
        }
        self.len.store(entries.len(), Ordering::Release);
        Some(fault)
    }

    /// Forgets every queued fault.
    pub(crate) fn clear(&self) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.clear();
            self.len.store(0, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_single_faults() {
        assert_eq!(Fault::parse("status=429").unwrap().status, Some(429));
        assert_eq!(Fault::parse("delay_ms=250").unwrap().delay_ms, Some(250));
        assert_eq!(Fault::parse("cut_after=3").unwrap().cut_after, Some(3));
        assert_eq!(
            Fault::parse("chunk_delay_ms=7").unwrap().chunk_delay_ms,
            Some(7)
        );
        assert_eq!(Fault::parse("").unwrap(), Fault::default());
    }

    #[test]
    fn parses_combined_faults() {
        let fault = Fault::parse(" delay_ms=5, cut_after=2;chunk_delay_ms=1 & status=503").unwrap();
        assert_eq!(
            fault,
            Fault {
                status: Some(503),
                delay_ms: Some(5),
                cut_after: Some(2),
                chunk_delay_ms: Some(1),
                ..Fault::default()
            }
        );
    }

    #[test]
    fn parses_header_faults() {
        let fault = Fault::parse(
            "status=429,code=insufficient_quota,retry_after_ms=300,should_retry=false",
        )
        .unwrap();
        assert!(fault.insufficient_quota);
        assert_eq!(fault.headers.retry_after_ms, Some(300));
        assert_eq!(fault.headers.should_retry, Some(false));
        let fault =
            Fault::parse("remaining_requests=3,limit_requests=100,reset_requests_ms=900").unwrap();
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "x-ratelimit-remaining-requests",
            http::HeaderValue::from_static("9999"),
        );
        fault.decorate(&mut headers);
        assert_eq!(headers["x-ratelimit-remaining-requests"], "3");
        assert_eq!(headers["x-ratelimit-reset-requests"], "900ms");
        assert!(Fault::parse("code=other").is_err());
        assert!(Fault::parse("should_retry=maybe").is_err());
    }

    #[test]
    fn rejects_bad_faults() {
        assert!(Fault::parse("status=200").is_err());
        assert!(Fault::parse("status=abc").is_err());
        assert!(Fault::parse("explode=1").is_err());
        assert!(Fault::parse("cut_after").is_err());
        assert!(Fault::parse("delay_ms=-1").is_err());
    }

    #[test]
    fn header_overrides_queue() {
        let queued = Fault::parse("status=500,delay_ms=3").unwrap();
        let header = Fault::parse("status=429").unwrap();
        let merged = queued.overridden_by(header);
        assert_eq!(merged.status, Some(429));
        assert_eq!(merged.delay_ms, Some(3));
    }

    #[test]
    fn queue_counts_down_and_filters_by_path() {
        let queue = FaultQueue::default();
        let five_hundred = Fault::parse("status=500").unwrap();
        let four_twenty_nine = Fault::parse("status=429").unwrap();
        queue
            .push(five_hundred, 2, Some("/v1/safety/cases".to_owned()))
            .unwrap();
        queue.push(four_twenty_nine, 1, None).unwrap();
        assert_eq!(queue.take("/v1/safety/cases/C-1"), Some(five_hundred));
        assert_eq!(queue.take("/v1/chat/completions"), Some(four_twenty_nine));
        assert_eq!(queue.take("/v1/chat/completions"), None);
        assert_eq!(queue.take("/v1/safety/cases/C-1"), Some(five_hundred));
        assert_eq!(queue.take("/v1/safety/cases/C-1"), None);
        queue.push(five_hundred, 0, None).unwrap();
        assert_eq!(queue.take("/v1/models"), None);
    }

    #[test]
    fn clear_forgets_everything() {
        let queue = FaultQueue::default();
        queue
            .push(Fault::parse("status=500").unwrap(), 5, None)
            .unwrap();
        queue.clear();
        assert_eq!(queue.take("/v1/models"), None);
    }
}
