//! Per-key safety profiles end to end: the same input is blocked on one key and only
//! flagged (forwarded and recorded) on another whose profile says so; a profile's
//! filters block a leaked key that the default filters redact. The stand-in scores
//! `SCORE:<category>=<n>` at n (flagged from 0.5).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::time::Duration;

use crate::common::*;
use serde_json::json;

const LENIENT_KEY: &str = "wk-test-lenient-0123456789abcdef";
const LOCKED_KEY: &str = "wk-test-locked-0123456789abcdef";

const PROFILES: &str = r#"
[[keys]]
name = "lenient"
secret_env = "T_LENIENT_KEY"
end_user = "optional"
safety_profile = "lenient"

[[keys]]
name = "locked"
secret_env = "T_LOCKED_KEY"
end_user = "optional"
safety_profile = "locked"

[safety.profiles.lenient.moderation.categories.violence]
threshold = 0.5
action = "flag"
[safety.profiles.lenient.moderation.categories.hate]
threshold = 0.7

[safety.profiles.locked.filters]
secrets = "block"
"#;

fn gateway() -> Warden {
    Warden::start_with(Options {
        moderation: true,
        extra_toml: PROFILES.into(),
        extra_env: vec![
            ("T_LENIENT_KEY".into(), LENIENT_KEY.into()),
            ("T_LOCKED_KEY".into(), LOCKED_KEY.into()),
        ],
        ..Default::default()
    })
}

async fn chat(w: &Warden, key: &str, text: &str) -> reqwest::Response {
    client()
        .post(w.url("/v1/chat/completions"))
        .bearer_auth(key)
        .header("x-warden-user", "u1")
        .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}))
        .send()
        .await
        .unwrap()
}

fn chat_bodies(w: &Warden) -> Vec<String> {
    w.standin
        .requests()
        .into_iter()
        .filter(|r| r.path == "/v1/chat/completions")
        .map(|r| r.body_text)
        .collect()
}

async fn events(w: &Warden, key: &str) -> String {
    client()
        .get(format!(
            "{}/admin/v1/events?kind=request&key={key}&limit=20",
            w.admin
        ))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn one_score_blocks_on_one_key_and_is_only_flagged_on_another() {
    let w = gateway();
    let text = "They will SCORE:violence=0.6 pay for it";
    let error = expect_error(chat(&w, APP_KEY, text).await, 400).await;
    assert_eq!(error["code"], "content_filter");
    assert!(error["message"].as_str().unwrap().contains("violence"));
    assert!(chat_bodies(&w).is_empty());

    let response = chat(&w, LENIENT_KEY, text).await;
    assert_eq!(response.status(), 200);
    assert_eq!(chat_bodies(&w).len(), 1, "forwarded on the lenient key");
    let mut seen = String::new();
    for _ in 0..50 {
        seen = events(&w, "lenient").await;
        if seen.contains("violence") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen.contains(r#"\"action\":\"flag\""#), "{seen}");
    assert!(seen.contains(r#"\"categories\":[\"violence\"]"#), "{seen}");

    // A raised threshold: 0.6 is under the profile's 0.7 for hate, over OpenAI's line.
    let text = "SCORE:hate=0.6 is what they said";
    expect_error(chat(&w, APP_KEY, text).await, 400).await;
    assert_eq!(chat(&w, LENIENT_KEY, text).await.status(), 200);
}

#[tokio::test]
async fn a_profile_blocks_a_leaked_key_that_the_default_redacts() {
    let w = gateway();
    let leaked = format!("sk-proj-{}", "Qw3Er4Ty5Ui6Op7As8Df9".repeat(2));
    let text = format!("why does {leaked} fail?");
    let response = chat(&w, APP_KEY, &text).await;
    assert_eq!(response.status(), 200);
    let bodies = chat_bodies(&w);
    assert!(
        bodies[0].contains("[REDACTED:openai-api-key]"),
        "{}",
        bodies[0]
    );
    assert!(!bodies[0].contains(&leaked));

    let error = expect_error(chat(&w, LOCKED_KEY, &text).await, 400).await;
    assert_eq!(error["code"], "content_filter");
    assert!(
        error["message"].as_str().unwrap().contains("secrets"),
        "{error}"
    );
    assert_eq!(
        chat_bodies(&w).len(),
        1,
        "the locked key's request was not forwarded"
    );
}

#[test]
fn check_config_names_an_unknown_profile_by_its_key_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.toml");
    std::fs::write(
        &path,
        "[[keys]]\nname = \"a\"\nsecret_env = \"A\"\nsafety_profile = \"nope\"\n[safety.profiles.real.filters]\nsecrets = \"block\"\n",
    )
    .unwrap();
    let output = Command::new(warden_bin())
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(text.contains("keys[0].safety_profile"), "{text}");
    assert!(text.contains("real"), "{text}");
}
