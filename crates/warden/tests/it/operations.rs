//! The binary as an operator uses it: CLI commands, storage backends, events, shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::*;
use std::process::Command;
use std::time::Duration;

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

async fn with_key(w: &Warden, key: &str) -> u16 {
    client()
        .post(w.url("/v1/chat/completions"))
        .bearer_auth(key)
        .header("x-warden-user", "alice")
        .json(&chat_body())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn key_lifecycle(w: &Warden) {
    let name = format!(
        "cli-{:x}",
        std::process::id()
            ^ (std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos())
    );
    let created = w.cli(&["keys", "create", "--name", &name, "--json"]);
    assert!(created.status.success(), "{}", stderr(&created));
    let created: serde_json::Value = serde_json::from_str(stdout(&created).trim()).unwrap();
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("wk-"));

    // The running gateway picks the new key up within a second or two.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while with_key(w, &secret).await != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "new key never accepted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let listed = w.cli(&["keys", "list"]);
    let listing = stdout(&listed);
    assert!(listing.contains(&name));
    assert!(!listing.contains(&secret), "a listing never shows secrets");

    let duplicate = w.cli(&["keys", "create", "--name", &name]);
    assert!(!duplicate.status.success());
    assert!(stderr(&duplicate).contains("already exists"));

    let revoked = w.cli(&["keys", "revoke", &name]);
    assert!(revoked.status.success(), "{}", stderr(&revoked));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while with_key(w, &secret).await != 401 {
        assert!(
            std::time::Instant::now() < deadline,
            "revoked key still accepted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let again = w.cli(&["keys", "revoke", &name]);
    assert!(!again.status.success());
}

#[tokio::test]
async fn keys_created_and_revoked_at_run_time_take_effect() {
    let w = Warden::start();
    key_lifecycle(&w).await;
}

#[tokio::test]
async fn postgres_storage_serves_and_shares_keys() {
    let w = Warden::start_with(Options {
        storage_url: Some(postgres_url()),
        ..Options::default()
    });
    assert_eq!(
        post(&w, "/v1/chat/completions", Some("alice"), &chat_body())
            .await
            .status(),
        200
    );
    key_lifecycle(&w).await;
    let ready: serde_json::Value = admin_get_open(&w, "/readyz").await;
    assert_eq!(ready["store"], "postgres");
}

#[tokio::test]
async fn every_request_leaves_an_event_and_the_upstream_key_leaks_nowhere() {
    let mut w = Warden::start();
    assert_eq!(
        post(&w, "/v1/chat/completions", Some("alice"), &chat_body())
            .await
            .status(),
        200
    );
    assert_eq!(
        post(&w, "/v1/chat/completions", None, &chat_body())
            .await
            .status(),
        400
    );
    assert_eq!(with_key(&w, "wk-wrong").await, 401);
    let faulted = chat_with_fault(&w, "status=500").await;
    let faulted_text = faulted.text().await.unwrap();
    assert!(!faulted_text.contains(UPSTREAM_KEY));
    assert!(w.stop().success(), "clean shutdown on SIGTERM");

    let log = w.stderr();
    let events: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "warden::events")
        .collect();
    assert_eq!(events.len(), 4, "one event per request:\n{log}");
    assert!(events
        .iter()
        .any(|e| e["outcome"] == "blocked" && e["reason"] == "missing_end_user"));
    assert!(events.iter().any(|e| e["status"] == 401));
    // The end user is logged by their safety identifier, never by the app's raw id.
    assert!(
        events.iter().any(|e| e["outcome"] == "allowed"
            && e["safety_identifier"]
                .as_str()
                .is_some_and(|s| s.starts_with("wsi1_"))),
        "{events:?}"
    );
    assert!(
        !log.contains("alice"),
        "the raw end-user id is in the log:\n{log}"
    );

    let db = std::fs::read(w.dir.path().join("warden.db")).unwrap_or_default();
    let wal = std::fs::read(w.dir.path().join("warden.db-wal")).unwrap_or_default();
    let needle = UPSTREAM_KEY.as_bytes();
    for (name, bytes) in [("log", log.as_bytes()), ("db", &db[..]), ("wal", &wal[..])] {
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "upstream key found in {name}"
        );
    }
    let store_text = String::from_utf8_lossy(&db).into_owned() + &String::from_utf8_lossy(&wal);
    assert!(
        store_text.contains("missing_end_user"),
        "events reached the store"
    );
}

#[tokio::test]
async fn health_and_readiness_are_on_the_admin_listener_only() {
    let w = Warden::start();
    let health = client()
        .get(format!("{}/healthz", w.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let ready: serde_json::Value = admin_get_open(&w, "/readyz").await;
    assert_eq!(ready["status"], "ready");
    let public = client().get(w.url("/healthz")).send().await.unwrap();
    assert_eq!(public.status(), 404);
}

#[tokio::test]
async fn metrics_count_requests_by_key_endpoint_and_outcome() {
    let w = Warden::start();
    assert_eq!(
        post(&w, "/v1/chat/completions", Some("alice"), &chat_body())
            .await
            .status(),
        200
    );
    assert_eq!(
        post(&w, "/v1/chat/completions", None, &chat_body())
            .await
            .status(),
        400
    );
    let url = format!("{}/metrics", w.admin);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let text = loop {
        let text = client()
            .get(&url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if text.contains("reason=\"missing_end_user\"") || std::time::Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        text.contains("warden_requests_total{key=\"app\",endpoint=\"chat.completions\",outcome=\"allowed\",status=\"200\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("warden_refusals_total{reason=\"missing_end_user\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("warden_overhead_seconds_count{endpoint=\"chat.completions\"} 2"),
        "{text}"
    );
    // Per stage: both requests were authenticated; only the allowed one got an identifier.
    assert!(
        text.contains("warden_stage_seconds_count{stage=\"authenticate\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("warden_stage_seconds_count{stage=\"safety_identifier\"} 1"),
        "{text}"
    );
    assert!(!text.contains("alice"));
    let public = client().get(w.url("/metrics")).send().await.unwrap();
    assert_eq!(
        public.status(),
        404,
        "metrics are never on the public listener"
    );
}

#[test]
fn check_config_lists_every_problem_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[server]\nlisten = \"nowhere\"\nmax_body_bytes = -1\n[upstream]\nbase_url = \"ftp://x\"\n[[keys]]\nname = \"a\"\nsecret_env = \"A\"\nend_usr = \"required\"\n[colour]\n",
    )
    .unwrap();
    let output = Command::new(warden_bin())
        .args(["check-config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let text = stderr(&output);
    for path in [
        "server.listen",
        "server.max_body_bytes",
        "upstream.base_url",
        "keys[0].end_usr",
        "colour",
    ] {
        assert!(text.contains(path), "{path} missing from:\n{text}");
    }

    let good = dir.path().join("good.toml");
    std::fs::write(&good, "[[keys]]\nname = \"chat-app\"\nsecret_env = \"WARDEN_KEY_CHAT_APP\"\nend_user = \"required\"\n").unwrap();
    let output = Command::new(warden_bin())
        .args(["check-config"])
        .arg(&good)
        .env_remove("WARDEN_KEY_CHAT_APP")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stderr(&output).contains("warning: keys[0].secret_env"));
}

/// Every config shipped in `examples/` passes `check-config`: a newcomer who copies one
/// starts from a file Warden accepts.
#[test]
fn every_example_config_passes_check_config() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    files.sort();
    let names: Vec<_> = files
        .iter()
        .map(|path| path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for wanted in ["minimal.toml", "production.toml", "standin.toml"] {
        assert!(
            names.iter().any(|name| name == wanted),
            "examples/{wanted} missing: {names:?}"
        );
    }
    for file in &files {
        let output = Command::new(warden_bin())
            .arg("check-config")
            .arg(file)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{} rejected:\n{}",
            file.display(),
            stderr(&output)
        );
        assert!(String::from_utf8_lossy(&output.stdout).contains(": OK"));
    }
}

#[test]
fn serve_refuses_to_start_with_missing_secrets_and_says_which() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("w.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n[storage]\nurl = \"sqlite://{}/w.db\"\n[upstream]\napi_key_env = \"NOT_SET_ANYWHERE_1\"\n[[keys]]\nname = \"a\"\nsecret_env = \"NOT_SET_ANYWHERE_2\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let output = Command::new(warden_bin())
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let text = stderr(&output);
    assert!(
        text.contains("upstream.api_key_env") && text.contains("keys[0].secret_env"),
        "{text}"
    );
}

#[test]
fn demo_shows_a_pass_and_a_refusal() {
    let output = Command::new(warden_bin())
        .args([
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--exit",
        ])
        .output()
        .unwrap();
    let text = stdout(&output);
    assert!(output.status.success(), "{text}\n{}", stderr(&output));
    assert!(text.contains("-> 200:"), "{text}");
    assert!(
        text.contains("-> 400:") && text.contains("missing_end_user"),
        "{text}"
    );
    assert!(text.contains("curl "));
    assert!(
        text.contains("-> 400:") && text.contains("jailbreak"),
        "{text}"
    );
    assert_eq!(
        text.matches("\"code\":\"content_filter\"").count(),
        2,
        "{text}"
    );
    assert!(
        text.contains("1 chat call(s)"),
        "only the allowed request reached the model: {text}"
    );
}
