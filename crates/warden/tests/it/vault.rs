//! Upstream keys sealed in the store: rotation under load fails no request, and a wrong
//! master key stops Warden before it uses any key.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use crate::common::*;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;

const NEW_UPSTREAM_KEY: &str = "sk-standin-rotated-NEW-0123456789";

fn master() -> String {
    STANDARD.encode([42u8; 32])
}

fn bearers_seen(w: &Warden) -> Vec<String> {
    w.standin
        .requests()
        .iter()
        .filter(|r| r.path == "/v1/chat/completions")
        .filter_map(|r| r.headers.get("authorization").cloned())
        .collect()
}

#[tokio::test]
async fn rotating_the_upstream_key_under_load_fails_no_request() {
    let w = Warden::start_with(Options {
        // Room for the load: only the switch is under test.
        extra_toml: "[limits]\nenabled = false\n".into(),
        extra_env: vec![
            ("WARDEN_MASTER_KEY".into(), master()),
            ("T_NEW_UPSTREAM".into(), NEW_UPSTREAM_KEY.into()),
        ],
        ..Default::default()
    });
    // OpenAI accepts both keys until the old one is revoked there.
    w.standin.accept_also(NEW_UPSTREAM_KEY);
    let load = ChatLoad::start(&w, 4);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let config = w.config_path.to_str().unwrap().to_owned();
    let cli = w.clone_cli_env();
    let rotated = tokio::task::spawn_blocking(move || {
        cli(&[
            "keys",
            "rotate-upstream",
            "rotated",
            "--from-env",
            "T_NEW_UPSTREAM",
            "--config",
            &config,
        ])
    })
    .await
    .unwrap();
    assert!(
        rotated.status.success(),
        "{}",
        String::from_utf8_lossy(&rotated.stderr)
    );
    // Gateways pick the new key up within a second; keep the load on a little longer.
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    let statuses = load.stop().await;
    let failed = statuses.iter().filter(|s| **s != 200).count();
    let mut other: Vec<u16> = statuses.iter().copied().filter(|s| *s != 200).collect();
    other.dedup();
    assert!(statuses.len() > 20, "too little load: {}", statuses.len());
    assert_eq!(
        failed,
        0,
        "{failed} of {} requests failed during the switch ({other:?})",
        statuses.len()
    );

    let seen = bearers_seen(&w);
    let old = format!("Bearer {UPSTREAM_KEY}");
    let new = format!("Bearer {NEW_UPSTREAM_KEY}");
    let first_new = seen
        .iter()
        .position(|b| *b == new)
        .expect("the new key was used");
    assert!(
        seen[..first_new].iter().all(|b| *b == old),
        "the old key before"
    );
    assert!(
        seen[seen.len() - 5..].iter().all(|b| *b == new),
        "only the new key at the end"
    );
    // The store holds the key sealed, never in clear text.
    let db = std::fs::read(w.dir.path().join("warden.db")).unwrap();
    let wal = std::fs::read(w.dir.path().join("warden.db-wal")).unwrap_or_default();
    for bytes in [db, wal] {
        assert!(!bytes
            .windows(NEW_UPSTREAM_KEY.len())
            .any(|win| win == NEW_UPSTREAM_KEY.as_bytes()));
    }
}

#[tokio::test]
async fn a_wrong_master_key_stops_warden_with_a_clear_message() {
    let w = Warden::start_with(Options {
        extra_env: vec![("WARDEN_MASTER_KEY".into(), master())],
        ..Default::default()
    });
    assert_eq!(
        post(&w, "/v1/chat/completions", Some("u"), &chat_body())
            .await
            .status(),
        200
    );
    // The same store under another master key: refused before serving.
    let mut env = w.env.clone();
    env.insert("WARDEN_MASTER_KEY".into(), STANDARD.encode([7u8; 32]));
    let out = std::process::Command::new(warden_bin())
        .args(["serve", "--config", w.config_path.to_str().unwrap()])
        .envs(&env)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("does not open this store's vault"),
        "{stderr}"
    );
    assert!(stderr.contains("WARDEN_MASTER_KEY"), "{stderr}");
}

#[tokio::test]
async fn the_admin_api_adds_and_activates_an_upstream_key() {
    let w = Warden::start_with(Options {
        extra_env: vec![("WARDEN_MASTER_KEY".into(), master())],
        ..Default::default()
    });
    w.standin.accept_also(NEW_UPSTREAM_KEY);
    let admin = |path: &str| format!("{}{path}", w.admin);
    let added: serde_json::Value = client()
        .post(admin("/admin/v1/upstream-keys"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({"name": "api-added", "key": NEW_UPSTREAM_KEY, "project": "proj_rotated"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(added["data"][0]["state"], "standby", "{added}");
    assert!(
        !added.to_string().contains(NEW_UPSTREAM_KEY),
        "the secret never comes back"
    );
    assert_eq!(
        post(&w, "/v1/chat/completions", Some("u"), &chat_body())
            .await
            .status(),
        200
    );
    assert_eq!(
        bearers_seen(&w).last().unwrap(),
        &format!("Bearer {UPSTREAM_KEY}")
    );
    let activated = client()
        .post(admin("/admin/v1/upstream-keys/api-added/activate"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(activated.status(), 200);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        assert_eq!(
            post(&w, "/v1/chat/completions", Some("u"), &chat_body())
                .await
                .status(),
            200
        );
        let last = w
            .standin
            .requests()
            .into_iter()
            .rev()
            .find(|r| r.path == "/v1/chat/completions")
            .unwrap();
        if last.headers.get("authorization") == Some(&format!("Bearer {NEW_UPSTREAM_KEY}")) {
            assert_eq!(
                last.headers.get("openai-project").map(String::as_str),
                Some("proj_rotated")
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the activated key was never used"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let missing = client()
        .post(admin("/admin/v1/upstream-keys/nope/activate"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}
