//! What a client is told when a limit refuses it: OpenAI's 429 wording and the
//! `retry-after` / `x-ratelimit-*` headers the official SDKs back off on.

use std::time::Duration;

use http::{HeaderName, HeaderValue};

/// Which budget ran out: OpenAI's error `type` for 429s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    Requests,
    Tokens,
}

impl Budget {
    pub fn as_str(self) -> &'static str {
        match self {
            Budget::Requests => "requests",
            Budget::Tokens => "tokens",
        }
    }
}

/// One budget's state for the `x-ratelimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetState {
    pub limit: u64,
    pub remaining: u64,
    /// Until the budget is full again.
    pub reset: Duration,
}

/// A 429 from one of Warden's own limits.
#[derive(Debug, Clone)]
pub struct RateLimitRefusal {
    pub budget: Budget,
    pub message: String,
    /// `None`: the request can never fit (larger than the whole budget); no retry.
    pub retry_after: Option<Duration>,
    pub requests: Option<BudgetState>,
    pub tokens: Option<BudgetState>,
}

impl crate::error::Refusal for RateLimitRefusal {
    fn status(&self) -> http::StatusCode {
        http::StatusCode::TOO_MANY_REQUESTS
    }
    fn code(&self) -> &'static str {
        "rate_limit_exceeded"
    }
    /// OpenAI's 429s name the budget that ran out.
    fn error_type(&self) -> &'static str {
        self.budget.as_str()
    }
    fn message(&self) -> String {
        self.message.clone()
    }
    fn headers(&self) -> Vec<(HeaderName, HeaderValue)> {
        RateLimitRefusal::headers(self)
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl RateLimitRefusal {
    /// `retry-after`, `retry-after-ms`, `x-ratelimit-*`, and `x-should-retry: false`
    /// when waiting cannot help.
    pub fn headers(&self) -> Vec<(HeaderName, HeaderValue)> {
        let mut out = Vec::with_capacity(8);
        let mut push = |name: &'static str, value: String| {
            if let Ok(value) = HeaderValue::from_str(&value) {
                out.push((HeaderName::from_static(name), value));
            }
        };
        match self.retry_after {
            Some(wait) => {
                let ms = ceil_ms(wait);
                push("retry-after", ms.div_ceil(1000).max(1).to_string());
                push("retry-after-ms", ms.max(1).to_string());
            }
            None => push("x-should-retry", "false".into()),
        }
        for (budget, state) in [("requests", self.requests), ("tokens", self.tokens)] {
            let Some(state) = state else { continue };
            let (limit, remaining, reset) = match budget {
                "requests" => (
                    "x-ratelimit-limit-requests",
                    "x-ratelimit-remaining-requests",
                    "x-ratelimit-reset-requests",
                ),
                _ => (
                    "x-ratelimit-limit-tokens",
                    "x-ratelimit-remaining-tokens",
                    "x-ratelimit-reset-tokens",
                ),
            };
            push(limit, state.limit.to_string());
            push(remaining, state.remaining.to_string());
            push(reset, go_duration(state.reset));
        }
        out
    }
}

use crate::error::wait::ceil_ms;
pub use crate::error::wait::{go_duration, retry_headers, wait_text};

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn go_durations_match_openai_examples() {
        assert_eq!(go_duration(Duration::from_millis(6)), "6ms");
        assert_eq!(go_duration(Duration::from_secs(1)), "1s");
        assert_eq!(go_duration(Duration::from_secs(360)), "6m0s");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(Duration::from_millis(3_723_250)), "1h2m3.25s");
        assert_eq!(go_duration(Duration::from_micros(1)), "1ms", "rounded up");
        assert_eq!(go_duration(Duration::ZERO), "0s");
        assert_eq!(go_duration(Duration::from_secs(86_400)), "24h0m0s");
    }

    #[test]
    fn headers_for_a_refusal() {
        let refusal = RateLimitRefusal {
            budget: Budget::Requests,
            message: "m".into(),
            retry_after: Some(Duration::from_millis(5_500)),
            requests: Some(BudgetState {
                limit: 10,
                remaining: 0,
                reset: Duration::from_secs(60),
            }),
            tokens: None,
        };
        let headers: std::collections::HashMap<_, _> = refusal
            .headers()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned()))
            .collect();
        assert_eq!(headers["retry-after"], "6");
        assert_eq!(headers["retry-after-ms"], "5500");
        assert_eq!(headers["x-ratelimit-limit-requests"], "10");
        assert_eq!(headers["x-ratelimit-remaining-requests"], "0");
        assert_eq!(headers["x-ratelimit-reset-requests"], "1m0s");
        assert!(!headers.contains_key("x-ratelimit-limit-tokens"));
        assert!(!headers.contains_key("x-should-retry"));
    }

    #[test]
    fn never_fitting_requests_say_do_not_retry() {
        let refusal = RateLimitRefusal {
            budget: Budget::Tokens,
            message: "m".into(),
            retry_after: None,
            requests: None,
            tokens: None,
        };
        let headers = refusal.headers();
        assert!(headers
            .iter()
            .any(|(k, v)| k == "x-should-retry" && v == "false"));
        assert!(!headers.iter().any(|(k, _)| k == "retry-after"));
    }
}
