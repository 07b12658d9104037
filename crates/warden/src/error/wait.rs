//! How long to wait, in the words and headers clients read: Go-style durations (OpenAI's
//! reset headers), `retry-after` / `retry-after-ms`, and RFC 3339 times in messages.

use std::time::Duration;

use http::{HeaderName, HeaderValue};

pub fn ceil_ms(d: Duration) -> u64 {
    let ms = d.as_nanos().div_ceil(1_000_000);
    u64::try_from(ms).unwrap_or(u64::MAX)
}

/// A duration the way Go prints it (OpenAI's reset headers): `6ms`, `1s`, `1.5s`,
/// `6m0s`, `1h2m3s`; rounded up to the millisecond.
pub fn go_duration(d: Duration) -> String {
    let ms = ceil_ms(d);
    if ms == 0 {
        return "0s".into();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (h, rest) = (ms / 3_600_000, ms % 3_600_000);
    let (m, rest) = (rest / 60_000, rest % 60_000);
    let (s, frac) = (rest / 1000, rest % 1000);
    let seconds = if frac == 0 {
        format!("{s}s")
    } else {
        let frac = format!("{frac:03}");
        format!("{s}.{}s", frac.trim_end_matches('0'))
    };
    match (h, m) {
        (0, 0) => seconds,
        (0, m) => format!("{m}m{seconds}"),
        (h, m) => format!("{h}h{m}m{seconds}"),
    }
}

/// Human wording of a wait, for messages: "6s", "1m30s".
/// `retry-after` (whole seconds, at least 1) and `retry-after-ms` for a wait.
pub fn retry_headers(wait: Duration) -> Vec<(HeaderName, HeaderValue)> {
    let ms = ceil_ms(wait);
    [
        ("retry-after", ms.div_ceil(1000).max(1)),
        ("retry-after-ms", ms.max(1)),
    ]
    .into_iter()
    .filter_map(|(name, value)| {
        HeaderValue::from_str(&value.to_string())
            .ok()
            .map(|v| (HeaderName::from_static(name), v))
    })
    .collect()
}

pub fn wait_text(d: Duration) -> String {
    go_duration(d)
}

/// A unix time in milliseconds as RFC 3339 (to the second), for messages and listings.
pub fn format_ms(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.replace_millisecond(0)
                .ok()?
                .format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

/// The longest period the operator plane takes in hours (suspensions, key expiry, rotation
/// overlaps): ten years. Beyond it a number is a typo, and beyond about 2.5e12 hours it
/// would not even fit a `Duration` or a millisecond timestamp.
pub const MAX_HOURS: f64 = 24.0 * 365.0 * 10.0;

/// `hours` as a duration when it is a finite number in `(0, MAX_HOURS]` (or `[0, …]` when
/// `zero_ok`); `None` otherwise, for the caller to refuse with its own words.
pub fn checked_hours(hours: f64, zero_ok: bool) -> Option<Duration> {
    let in_range =
        hours.is_finite() && hours <= MAX_HOURS && (hours > 0.0 || (zero_ok && hours == 0.0));
    in_range.then(|| Duration::from_secs_f64(hours * 3600.0))
}

#[cfg(test)]
mod hours_tests {
    use super::*;

    #[test]
    fn hours_out_of_range_are_refused_not_overflowed() {
        assert_eq!(checked_hours(2.0, false), Some(Duration::from_secs(7200)));
        assert_eq!(checked_hours(0.0, true), Some(Duration::ZERO));
        for bad in [0.0, -1.0, 1e300, f64::NAN, f64::INFINITY, MAX_HOURS + 1.0] {
            assert_eq!(checked_hours(bad, false), None, "{bad}");
        }
    }
}
