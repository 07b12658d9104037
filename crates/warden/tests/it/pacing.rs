//! Upstream pacing through the real binary: Warden reads the stand-in's `x-ratelimit-*`
//! headers, holds requests until the window resets when the organization is at its share,
//! sheds the lowest tier first, and exposes the headroom in `/metrics`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use crate::common::*;

const GOLD_KEY: &str = "wk-test-gold-0123456789abcdef";
const FREE_KEY: &str = "wk-test-free-0123456789abcdef";

fn start() -> Warden {
    Warden::start_with(Options {
        extra_toml: r#"
[[keys]]
name = "gold"
secret_env = "T_GOLD_KEY"
end_user = "required"
tier = "trusted"

[[keys]]
name = "free"
secret_env = "T_FREE_KEY"
end_user = "required"
tier = "anonymous"
"#
        .into(),
        extra_env: vec![
            ("T_GOLD_KEY".into(), GOLD_KEY.into()),
            ("T_FREE_KEY".into(), FREE_KEY.into()),
        ],
        upstream_toml: "pacing_max_wait_ms = 2000\nretry_backoff_ms = 10\n".into(),
        ..Default::default()
    })
}

async fn chat(w: &Warden, key: &str) -> reqwest::Response {
    client()
        .post(w.url("/v1/chat/completions"))
        .bearer_auth(key)
        .header("x-warden-user", "pat")
        .json(&chat_body())
        .send()
        .await
        .unwrap()
}

fn chat_calls(w: &Warden) -> usize {
    w.standin
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/chat/completions"))
        .count()
}

async fn metrics(w: &Warden) -> String {
    metrics_text(w).await
}

fn gauge(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{series} ")))
        .unwrap_or_else(|| panic!("{series} missing:\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn at_the_share_a_request_waits_for_the_reset_instead_of_meeting_a_429() {
    let w = start();
    // One answer says: 95 of 100 requests used, window resets in 800 ms.
    w.standin
        .queue_fault(
            "limit_requests=100,remaining_requests=5,reset_requests_ms=800",
            1,
        )
        .unwrap();
    assert_eq!(chat(&w, GOLD_KEY).await.status(), 200);
    let text = metrics(&w).await;
    assert_eq!(
        gauge(
            &text,
            "warden_upstream_ratelimit_remaining{budget=\"requests\"}"
        ),
        5.0
    );
    assert_eq!(
        gauge(&text, "warden_upstream_headroom_ratio{budget=\"requests\"}"),
        0.0
    );

    let started = Instant::now();
    let held = chat(&w, GOLD_KEY).await;
    let took = started.elapsed();
    assert_eq!(held.status(), 200);
    assert!(took >= Duration::from_millis(600), "held only {took:?}");
    assert!(
        took < Duration::from_millis(2000),
        "held too long: {took:?}"
    );
    assert_eq!(chat_calls(&w), 2);
    assert_eq!(
        gauge(&metrics(&w).await, "warden_upstream_paced_waited_total"),
        1.0
    );
}

#[tokio::test]
async fn a_reset_beyond_the_wait_is_a_429_with_retry_after_and_nothing_sent() {
    let w = start();
    w.standin
        .queue_fault(
            "limit_requests=100,remaining_requests=2,reset_requests_ms=20000",
            1,
        )
        .unwrap();
    assert_eq!(chat(&w, GOLD_KEY).await.status(), 200);
    let started = Instant::now();
    let shed = chat(&w, GOLD_KEY).await;
    assert!(started.elapsed() < Duration::from_millis(500), "not held");
    let headers = shed.headers().clone();
    let error = expect_error(shed, 429).await;
    assert_eq!(error["code"], "upstream_rate_limit_reserved");
    assert_eq!(error["type"], "requests");
    assert!(error["message"].as_str().unwrap().contains("90 %"));
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((15..=20).contains(&retry_after), "{retry_after}");
    assert_eq!(chat_calls(&w), 1, "the shed request never reached upstream");
    assert_eq!(
        gauge(&metrics(&w).await, "warden_upstream_paced_shed_total"),
        1.0
    );
}

#[tokio::test]
async fn the_lowest_tier_is_shed_first() {
    let w = start();
    // Every answer says 75 of 100 used (reset far away): lowest tier (anonymous) stops at
    // 72 %, the default tier at 81 %, the top tier at 90 %.
    w.standin
        .queue_fault(
            "limit_requests=100,remaining_requests=25,reset_requests_ms=30000",
            100,
        )
        .unwrap();
    assert_eq!(chat(&w, GOLD_KEY).await.status(), 200);
    let free = chat(&w, FREE_KEY).await;
    let error = expect_error(free, 429).await;
    assert!(error["message"].as_str().unwrap().contains("lowest tier"));
    let app = post(&w, "/v1/chat/completions", Some("pat"), &chat_body()).await;
    assert_eq!(app.status(), 200, "the default tier still has headroom");
    assert_eq!(chat(&w, GOLD_KEY).await.status(), 200);
    assert_eq!(chat_calls(&w), 3);
}

#[tokio::test]
async fn pacing_can_be_turned_off() {
    let w = Warden::start_with(Options {
        upstream_toml: "pacing = false\n".into(),
        ..Default::default()
    });
    w.standin
        .queue_fault(
            "limit_requests=100,remaining_requests=0,reset_requests_ms=20000",
            1,
        )
        .unwrap();
    for _ in 0..2 {
        let ok = post(&w, "/v1/chat/completions", Some("pat"), &chat_body()).await;
        assert_eq!(ok.status(), 200);
    }
}
