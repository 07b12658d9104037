//! The limiter end to end in process: actors, all-or-nothing, concurrency, refusals.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::net::{IpAddr, Ipv4Addr};

use super::*;
use crate::config::limits::{validate_cluster, validate_limits};
use crate::config::Problems;

const UNLIMITED: Rates = Rates {
    requests_per_minute: None,
    requests_per_day: None,
    tokens_per_minute: None,
    tokens_per_day: None,
    concurrency: None,
};

fn limiter(toml: &str) -> Limiter {
    let mut problems = Problems::default();
    let table: toml::Value = toml::from_str(toml).unwrap();
    let limits = validate_limits(table.get("limits"), &[], &mut problems);
    let cluster = validate_cluster(None, &mut problems);
    assert!(problems.is_empty(), "{problems}");
    Limiter::new(&limits, &cluster).unwrap()
}

fn admission<'a>(user: &'a str, rates: Rates, tokens: u64) -> Admission<'a> {
    Admission {
        key: "app",
        key_rates: UNLIMITED,
        user: Some((user, "t", rates)),
        ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        prompt_tokens: tokens,
    }
}

const OPEN: &str = r#"
[limits.organization]
requests_per_minute = "unlimited"
requests_per_day = "unlimited"
tokens_per_minute = "unlimited"
tokens_per_day = "unlimited"
concurrency = "unlimited"
[limits.per_ip]
requests_per_minute = "unlimited"
requests_per_day = "unlimited"
tokens_per_minute = "unlimited"
tokens_per_day = "unlimited"
concurrency = "unlimited"
"#;

fn refusal(err: WardenError) -> RateLimitRefusal {
    match err {
        WardenError::Refused(r) => r
            .as_any()
            .downcast_ref::<RateLimitRefusal>()
            .cloned()
            .unwrap(),
        other => panic!("expected a rate limit, got {other:?}"),
    }
}

#[test]
fn per_user_requests_per_minute_with_headers() {
    let l = limiter(OPEN);
    let rates = Rates {
        requests_per_minute: Some(3),
        ..UNLIMITED
    };
    for _ in 0..3 {
        l.admit_local(&admission("alice", rates, 0)).unwrap();
    }
    let r = refusal(l.admit_local(&admission("alice", rates, 0)).err().unwrap());
    assert_eq!(r.budget, Budget::Requests);
    assert!(r.message.contains("tier 't'"), "{}", r.message);
    let wait = r.retry_after.unwrap();
    assert!(
        wait > Duration::from_secs(19) && wait <= Duration::from_secs(20),
        "{wait:?}"
    );
    let requests = r.requests.unwrap();
    assert_eq!((requests.limit, requests.remaining), (3, 0));
    // Another user is untouched.
    l.admit_local(&admission("bob", rates, 0)).unwrap();
}

#[test]
fn token_budget_refuses_and_settles_with_usage() {
    let l = limiter(OPEN);
    let rates = Rates {
        tokens_per_minute: Some(1000),
        ..UNLIMITED
    };
    let ticket = l.admit_local(&admission("u", rates, 400)).unwrap();
    // Upstream says the request used 900 tokens in all.
    ticket.settle(Some(900));
    let r = refusal(l.admit_local(&admission("u", rates, 200)).err().unwrap());
    assert_eq!(r.budget, Budget::Tokens);
    assert_eq!(r.tokens.unwrap().remaining, 100);
    // Larger than the whole budget: never fits, no retry.
    let r = refusal(l.admit_local(&admission("v", rates, 1001)).err().unwrap());
    assert!(r.retry_after.is_none());
    assert!(r.message.contains("Request too large"), "{}", r.message);
}

#[test]
fn concurrency_slots_are_held_by_the_ticket() {
    let l = limiter(OPEN);
    let rates = Rates {
        concurrency: Some(2),
        ..UNLIMITED
    };
    let a = l.admit_local(&admission("u", rates, 0)).unwrap();
    let _b = l.admit_local(&admission("u", rates, 0)).unwrap();
    let r = refusal(l.admit_local(&admission("u", rates, 0)).err().unwrap());
    assert!(r.message.contains("concurrent"), "{}", r.message);
    drop(a);
    let _c = l.admit_local(&admission("u", rates, 0)).unwrap();
}

#[test]
fn a_refused_request_uses_no_other_budget() {
    let l = limiter(OPEN);
    let tight = Rates {
        requests_per_minute: Some(1),
        ..UNLIMITED
    };
    let mut a = admission("u", tight, 0);
    a.key_rates = Rates {
        requests_per_minute: Some(5),
        ..UNLIMITED
    };
    l.admit_local(&a).unwrap();
    for _ in 0..10 {
        assert!(l.admit_local(&a).is_err());
    }
    // The key spent 1 of 5; four other users still get through.
    for user in ["a", "b", "c", "d"] {
        let mut other = admission(user, tight, 0);
        other.key_rates = a.key_rates;
        l.admit_local(&other).unwrap();
    }
}

#[test]
fn organization_limit_applies_to_everyone() {
    let l = limiter(
        r#"
[limits.organization]
requests_per_minute = 2
"#,
    );
    l.admit_local(&admission("a", UNLIMITED, 0)).unwrap();
    l.admit_local(&admission("b", UNLIMITED, 0)).unwrap();
    let r = refusal(l.admit_local(&admission("c", UNLIMITED, 0)).err().unwrap());
    assert!(r.message.contains("organization"), "{}", r.message);
}
