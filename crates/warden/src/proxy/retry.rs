//! When an upstream answer is worth another attempt, and how long to wait first:
//! the rules the official SDKs follow (`x-should-retry`, 408/409/429/5xx,
//! `retry-after-ms` then `retry-after`, jittered exponential backoff), except that
//! `insufficient_quota` is never retried: waiting does not add credit.

use std::time::Duration;

use http::{HeaderMap, StatusCode};

use crate::config::retries::RetryConfig;

/// The longest backoff Warden picks itself.
const MAX_BACKOFF: Duration = Duration::from_secs(8);
/// A server-named wait above this is ignored in favour of backoff (as the SDKs do).
const MAX_SERVER_WAIT: Duration = Duration::from_secs(60);

/// What one answer means for the retry loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Hand it to the client.
    Final,
    /// Worth another attempt; `upstream_down` feeds the circuit breaker.
    Retry { upstream_down: bool },
}

/// Statuses whose body must be read before deciding (it names `insufficient_quota`).
pub fn needs_body(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS
}

pub fn classify(status: StatusCode, headers: &HeaderMap, body: Option<&[u8]>) -> Verdict {
    let upstream_down = status.is_server_error();
    if status == StatusCode::TOO_MANY_REQUESTS && body.is_some_and(is_insufficient_quota) {
        return Verdict::Final;
    }
    match headers.get("x-should-retry").map(|v| v.as_bytes()) {
        Some(b"true") => return Verdict::Retry { upstream_down },
        Some(b"false") => return Verdict::Final,
        _ => {}
    }
    let retryable = matches!(status.as_u16(), 408 | 409 | 429) || status.is_server_error();
    if retryable {
        Verdict::Retry { upstream_down }
    } else {
        Verdict::Final
    }
}

/// OpenAI's 429 for an account out of credit: `"code": "insufficient_quota"` (or type).
fn is_insufficient_quota(body: &[u8]) -> bool {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return false;
    };
    let error = &value["error"];
    error["code"] == "insufficient_quota" || error["type"] == "insufficient_quota"
}

/// The wait before retry number `retry` (1-based): what upstream asked for, if sane,
/// otherwise `backoff · 2^(retry-1)` with up to 25 % jitter taken off, capped at 8 s.
pub fn wait_before(retry: u32, headers: Option<&HeaderMap>, config: &RetryConfig) -> Duration {
    if let Some(wait) = headers.and_then(server_wait) {
        return wait;
    }
    let exp = config
        .backoff
        .saturating_mul(1u32 << (retry.saturating_sub(1)).min(16))
        .min(MAX_BACKOFF);
    exp.mul_f64(1.0 - 0.25 * fastrand::f64())
}

/// `retry-after-ms` (milliseconds), else `retry-after` (seconds); HTTP dates are ignored.
fn server_wait(headers: &HeaderMap) -> Option<Duration> {
    let number = |name: &str| -> Option<f64> {
        headers
            .get(name)?
            .to_str()
            .ok()?
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
    };
    // Upstream's headers: a number past `Duration`'s range is no wait worth honouring.
    let wait = number("retry-after-ms")
        .and_then(|ms| Duration::try_from_secs_f64(ms / 1000.0).ok())
        .or_else(|| number("retry-after").and_then(|s| Duration::try_from_secs_f64(s).ok()))?;
    (wait <= MAX_SERVER_WAIT).then_some(wait)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn retries_the_sdk_statuses_but_never_insufficient_quota() {
        let none = HeaderMap::new();
        let rate = br#"{"error":{"code":"rate_limit_exceeded","type":"requests"}}"#;
        let quota = br#"{"error":{"code":"insufficient_quota","type":"insufficient_quota"}}"#;
        assert_eq!(
            classify(StatusCode::TOO_MANY_REQUESTS, &none, Some(rate)),
            Verdict::Retry {
                upstream_down: false
            }
        );
        assert_eq!(
            classify(StatusCode::TOO_MANY_REQUESTS, &none, Some(quota)),
            Verdict::Final
        );
        // Even when upstream says "retry", out of credit stays final.
        let yes = headers(&[("x-should-retry", "true")]);
        assert_eq!(
            classify(StatusCode::TOO_MANY_REQUESTS, &yes, Some(quota)),
            Verdict::Final
        );
        assert_eq!(
            classify(StatusCode::INTERNAL_SERVER_ERROR, &none, None),
            Verdict::Retry {
                upstream_down: true
            }
        );
        let no = headers(&[("x-should-retry", "false")]);
        assert_eq!(
            classify(StatusCode::SERVICE_UNAVAILABLE, &no, None),
            Verdict::Final
        );
        assert_eq!(
            classify(StatusCode::BAD_REQUEST, &none, None),
            Verdict::Final
        );
        assert_eq!(
            classify(StatusCode::BAD_REQUEST, &yes, None),
            Verdict::Retry {
                upstream_down: false
            }
        );
        assert_eq!(classify(StatusCode::OK, &none, None), Verdict::Final);
    }

    #[test]
    fn waits_what_upstream_asks_then_backs_off() {
        let config = RetryConfig::default();
        let both = headers(&[("retry-after-ms", "250"), ("retry-after", "3")]);
        assert_eq!(
            wait_before(1, Some(&both), &config),
            Duration::from_millis(250)
        );
        let secs = headers(&[("retry-after", "2")]);
        assert_eq!(wait_before(1, Some(&secs), &config), Duration::from_secs(2));
        let absurd = headers(&[("retry-after", "3600")]);
        let wait = wait_before(1, Some(&absurd), &config);
        assert!(wait <= config.backoff && wait >= config.backoff.mul_f64(0.75));
        let third = wait_before(3, None, &config);
        assert!(third <= config.backoff * 4 && third >= (config.backoff * 4).mul_f64(0.75));
        assert!(wait_before(20, None, &config) <= MAX_BACKOFF);
    }
}

#[cfg(test)]
mod overflow_tests {
    use super::*;
    use http::HeaderValue;

    /// An upstream that sends an absurd wait must not panic the request.
    #[test]
    fn an_absurd_retry_after_is_ignored_not_a_panic() {
        for (name, value) in [("retry-after", "1e300"), ("retry-after-ms", "1e308")] {
            let mut headers = HeaderMap::new();
            headers.insert(name, HeaderValue::from_static(value));
            assert_eq!(server_wait(&headers), None, "{name}: {value}");
        }
    }
}
