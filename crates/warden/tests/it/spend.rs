//! Spend caps through the real binary: a response's `usage` is priced, summed per key, end
//! user and organization, refused with 429 `budget_exceeded` once a budget is spent, kept
//! across restarts, and shared by replicas on one store.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use crate::common::*;

/// One token costs a whole dollar, so every stand-in answer (≥ 10 tokens) spends ≥ $10.
const PRICEY: &str = r#"
[spend.prices."gpt-4o-mini"]
input = 1000000
cached_input = 1000000
output = 1000000
"#;

fn start(budgets: &str, storage_url: Option<String>) -> Warden {
    Warden::start_with(Options {
        extra_toml: format!("{PRICEY}\n[spend]\nflush_ms = 100\n{budgets}"),
        storage_url,
        ..Default::default()
    })
}

async fn chat_as(w: &Warden, key: &str, user: &str, stream: bool) -> reqwest::Response {
    let mut body = chat_body();
    if stream {
        body["stream"] = true.into();
    }
    client()
        .post(w.url("/v1/chat/completions"))
        .bearer_auth(key)
        .header("x-warden-user", user)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// Sends until refused; returns how many got through (the answer of the refusal aside).
async fn spend_until_refused(w: &Warden, key: &str, user: &str) -> (usize, reqwest::Response) {
    for sent in 0..20 {
        let response = chat_as(w, key, user, false).await;
        if response.status() == 429 {
            return (sent, response);
        }
        assert_eq!(response.status(), 200);
        response.bytes().await.unwrap();
        // The answer is counted when its body ends; give the observer a moment.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never refused");
}

#[tokio::test]
async fn a_spent_user_budget_refuses_that_user_only_and_says_when_it_resets() {
    let w = start("[spend.per_user]\ndaily_usd = 5\n", None);
    let (through, refused) = spend_until_refused(&w, APP_KEY, "alice").await;
    assert_eq!(through, 1, "the first answer spends more than $5");
    let headers = refused.headers().clone();
    let error = expect_error(refused, 429).await;
    assert_eq!(error["code"], "budget_exceeded");
    assert_eq!(error["type"], "insufficient_quota");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("daily spend budget of this end user"),
        "{message}"
    );
    assert!(message.contains("of $5.00"), "{message}");
    assert!(message.contains("T00:00:00Z"), "names the reset: {message}");
    assert_eq!(headers["x-should-retry"], "false");
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=86_400).contains(&retry_after), "{retry_after}");
    // Only one call reached upstream: the refusal was Warden's own.
    assert_eq!(w.standin.requests().len(), 1);

    let bob = chat_as(&w, APP_KEY, "bob", false).await;
    assert_eq!(bob.status(), 200, "another user's budget is untouched");
}

#[tokio::test]
async fn streamed_answers_are_priced_from_their_usage_chunk() {
    // The key's own monthly budget; the client does not ask for usage (Warden does).
    let w = start("[spend.keys.app]\nmonthly_usd = 5\n", None);
    let first = chat_as(&w, APP_KEY, "carol", true).await;
    assert_eq!(first.status(), 200);
    let text = first.text().await.unwrap();
    assert!(
        !text.contains("\"usage\":{"),
        "usage chunk stripped: {text}"
    );
    // The stream is priced as it ends, just after the client read its last byte: poll.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let refused = loop {
        let answer = chat_as(&w, APP_KEY, "dave", true).await;
        if answer.status() == 429 || std::time::Instant::now() > deadline {
            break answer;
        }
        answer.bytes().await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let error = expect_error(refused, 429).await;
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("monthly spend budget of key 'app'"),
        "{message}"
    );
    // Other keys have no budget.
    let other = client()
        .post(w.url("/v1/chat/completions"))
        .bearer_auth(OPTIONAL_KEY)
        .json(&chat_body())
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 200);
}

#[tokio::test]
async fn the_organization_budget_covers_every_key() {
    let w = start("[spend.organization]\ndaily_usd = 15\n", None);
    let (through, refused) = spend_until_refused(&w, APP_KEY, "erin").await;
    assert_eq!(through, 2, "$10+ twice passes $15");
    let error = expect_error(refused, 429).await;
    assert!(error["message"]
        .as_str()
        .unwrap()
        .contains("daily spend budget of the organization"));
    let other = client()
        .post(w.url("/v1/chat/completions"))
        .bearer_auth(OPTIONAL_KEY)
        .json(&chat_body())
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 429);
}

#[tokio::test]
async fn spend_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("spend.db").display());
    let mut first = start("[spend.per_user]\ndaily_usd = 5\n", Some(url.clone()));
    let ok = chat_as(&first, APP_KEY, "frank", false).await;
    assert_eq!(ok.status(), 200);
    ok.bytes().await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(first.stop().success());

    let second = start("[spend.per_user]\ndaily_usd = 5\n", Some(url));
    let refused = chat_as(&second, APP_KEY, "frank", false).await;
    let error = expect_error(refused, 429).await;
    assert_eq!(error["code"], "budget_exceeded");
    assert_eq!(second.standin.requests().len(), 0);
}

#[tokio::test]
async fn replicas_on_one_postgres_share_spend_within_a_flush() {
    // A fresh user per run: the test database outlives test runs.
    let user = format!("pg-user-{:x}", fastrand::u64(..));
    let budget = "[spend.per_user]\ndaily_usd = 5\n";
    let one = start(budget, Some(postgres_url()));
    let two = start(budget, Some(postgres_url()));
    let ok = chat_as(&one, APP_KEY, &user, false).await;
    assert_eq!(ok.status(), 200);
    ok.bytes().await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let response = chat_as(&two, APP_KEY, &user, false).await;
        if response.status() == 429 {
            let error = expect_error(response, 429).await;
            assert_eq!(error["code"], "budget_exceeded");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "replica two never saw replica one's spend"
        );
        // Requests that slip through on two also count; stop them piling up.
        response.bytes().await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
