//! Config hot reload on the real binary: SIGHUP, the file changing, and the admin API.
//! A valid file is swapped in whole; an invalid one changes nothing and lists every
//! problem; requests in flight finish on the config they started with.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use futures_util::StreamExt;
use serde_json::{json, Value};

const NEW_KEY: &str = "wk-test-new-0123456789abcdef";

/// A gateway that knows `T_NEW_KEY` (no key uses it yet); watching the file only when
/// asked, so each test sees the trigger it is about.
fn start(watch: bool, extra_toml: &str) -> Warden {
    Warden::start_with(Options {
        server_toml: format!(
            "max_body_bytes = 65536\nrequest_body_timeout_secs = 2\nwatch_config = {watch}\n"
        ),
        extra_toml: extra_toml.into(),
        extra_env: vec![("T_NEW_KEY".into(), NEW_KEY.into())],
        ..Default::default()
    })
}

fn config_text(w: &Warden) -> String {
    std::fs::read_to_string(&w.config_path).unwrap()
}

/// Replaces the file the way editors and ConfigMaps do: a new file renamed over it.
fn replace_config(w: &Warden, text: &str) {
    let next = w.config_path.with_extension("toml.new");
    std::fs::write(&next, text).unwrap();
    std::fs::rename(&next, &w.config_path).unwrap();
}

fn with_new_key(text: &str) -> String {
    format!(
        "{text}\n[[keys]]\nname = \"new\"\nsecret_env = \"T_NEW_KEY\"\nend_user = \"optional\"\n"
    )
}

fn sighup(w: &Warden) {
    let status = Command::new("kill")
        .args(["-HUP", &w.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

async fn chat(w: &Warden, key: &str) -> reqwest::Response {
    client()
        .post(w.url("/v1/chat/completions"))
        .bearer_auth(key)
        .header("x-warden-user", "u1")
        .json(&chat_body())
        .send()
        .await
        .unwrap()
}

async fn admin(w: &Warden, method: reqwest::Method, path: &str) -> (u16, Value) {
    let response = client()
        .request(method, format!("{}{path}", w.admin))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn reload_via_api(w: &Warden) -> (u16, Value) {
    admin(w, reqwest::Method::POST, "/admin/v1/config/reload").await
}

async fn metrics(w: &Warden) -> String {
    metrics_text(w).await
}

/// Polls until `key` gets `want` (another process applies the change).
async fn until_status(w: &Warden, key: &str, want: u16, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let got = chat(w, key).await.status().as_u16();
        if got == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "wanted {want}, still {got} after {within:?}\n{}",
            w.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn sighup_applies_a_new_key_and_a_new_limit() {
    let w = start(false, "");
    expect_error(chat(&w, NEW_KEY).await, 401).await;
    let edited = format!(
        "{}\n[limits.per_key]\nrequests_per_minute = 3\n",
        with_new_key(&config_text(&w))
    );
    std::fs::write(&w.config_path, &edited).unwrap();
    sighup(&w);
    until_status(&w, NEW_KEY, 200, Duration::from_secs(5)).await;

    // The `optional` key has not been used: three requests a minute, then 429.
    for _ in 0..3 {
        assert_eq!(chat(&w, OPTIONAL_KEY).await.status(), 200);
    }
    let error = expect_error(chat(&w, OPTIONAL_KEY).await, 429).await;
    assert_eq!(error["code"], "rate_limit_exceeded", "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("Limit 3"),
        "{error}"
    );

    let (status, config) = admin(&w, reqwest::Method::GET, "/admin/v1/config").await;
    assert_eq!(status, 200);
    assert_eq!(config["generation"], 2, "{config}");
    assert_eq!(config["last_reload"]["trigger"], "signal", "{config}");
    assert_eq!(config["last_reload"]["restart_required"], json!([]));
    let digest = ring::digest::digest(&ring::digest::SHA256, edited.as_bytes());
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(config["sha256"], hex.as_str());
    let text = metrics(&w).await;
    assert!(text.contains("warden_config_generation 2"), "{text}");
    let mut recorded = Vec::new();
    for _ in 0..50 {
        let (_, events) = admin(&w, reqwest::Method::GET, "/admin/v1/events?kind=admin").await;
        recorded = events["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["reason"].as_str())
            .filter(|r| r.starts_with("config reload (signal): applied generation 2"))
            .map(str::to_owned)
            .collect();
        if !recorded.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        recorded.first().is_some_and(|r| r.contains(&hex[..16])),
        "the signal's reload is an admin event naming the file: {recorded:?}"
    );
    assert!(text.contains("warden_config_reloads_total{result=\"applied\"} 1"));
    assert!(w.stderr().contains("config reloaded"));
}

#[tokio::test]
async fn an_invalid_file_is_rejected_with_every_problem_and_the_old_config_keeps_serving() {
    let w = start(false, "");
    let good = config_text(&w);
    let bad = format!(
        "{}\n[geo]\nunknown = \"sometimes\"\n",
        with_new_key(&good).replace("max_body_bytes = 65536", "max_body_bytes = 0")
    );
    std::fs::write(&w.config_path, &bad).unwrap();

    let (status, body) = reload_via_api(&w).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "invalid_config");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(body["error"].get("param").is_some());
    assert_eq!(body["reloaded"], false);
    assert_eq!(body["generation"], 1);
    let paths: Vec<&str> = body["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["server.max_body_bytes", "geo.unknown"], "{body}");

    // Nothing of the rejected file applies: the old key works, the new one does not.
    assert_eq!(chat(&w, APP_KEY).await.status(), 200);
    expect_error(chat(&w, NEW_KEY).await, 401).await;
    // A signal with the same file is rejected too, and logged with the problems.
    sighup(&w);
    eventually(
        "the rejected reload is logged",
        Duration::from_secs(5),
        || w.stderr().matches("config reload rejected").count() >= 2,
    )
    .await;
    assert!(w.stderr().contains("server.max_body_bytes"));
    assert_eq!(chat(&w, APP_KEY).await.status(), 200);
    let text = metrics(&w).await;
    assert!(
        text.contains("warden_config_reloads_total{result=\"rejected\"} 2"),
        "{text}"
    );
    assert!(text.contains("warden_config_generation 1"));

    // Once fixed, the same call applies it; the admin calls were recorded.
    std::fs::write(&w.config_path, with_new_key(&good)).unwrap();
    let (status, body) = reload_via_api(&w).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["reloaded"], true);
    assert_eq!(body["generation"], 2);
    assert_eq!(chat(&w, NEW_KEY).await.status(), 200);
    let mut audited = 0;
    for _ in 0..50 {
        let (_, events) = admin(
            &w,
            reqwest::Method::GET,
            "/admin/v1/events?kind=admin&limit=50",
        )
        .await;
        audited = events["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["reason"] == "POST /admin/v1/config/reload")
            .count();
        if audited == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(audited, 2, "both reload calls are admin events");
}

#[tokio::test]
async fn a_changed_file_is_picked_up_without_a_signal() {
    let w = start(true, "");
    expect_error(chat(&w, NEW_KEY).await, 401).await;
    replace_config(&w, &with_new_key(&config_text(&w)));
    let took = until_status(&w, NEW_KEY, 200, Duration::from_secs(2)).await;
    eprintln!("file change applied after {took:?}");
    let (_, config) = admin(&w, reqwest::Method::GET, "/admin/v1/config").await;
    assert_eq!(config["last_reload"]["trigger"], "file_change", "{config}");
    assert_eq!(config["generation"], 2);

    // A file that stops parsing is rejected once and not retried every poll.
    replace_config(&w, "[server\n");
    eventually(
        "the broken file is rejected",
        Duration::from_secs(3),
        || w.stderr().contains("config reload rejected"),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(w.stderr().matches("config reload rejected").count(), 1);
    assert_eq!(chat(&w, NEW_KEY).await.status(), 200);
}

#[tokio::test]
async fn a_stream_in_flight_finishes_on_its_config_while_a_removed_key_is_refused() {
    let w = start(false, "");
    let original = config_text(&w);
    let response = client()
        .post(w.url("/v1/chat/completions"))
        .bearer_auth(OPTIONAL_KEY)
        .header("x-standin-fault", "chunk_delay_ms=200")
        .json(&json!({"model": "gpt-4o-mini", "stream": true,
            "messages": [{"role": "user", "content": "tell me a long story about the sea please"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut chunks = response.bytes_stream();
    let mut text = String::from_utf8_lossy(&chunks.next().await.unwrap().unwrap()).into_owned();

    // Reload without the `optional` key while the stream is still coming.
    let without = original.replace(
        "[[keys]]\nname = \"optional\"\nsecret_env = \"T_OPTIONAL_KEY\"\nend_user = \"optional\"\n",
        "",
    );
    assert_ne!(without, original);
    std::fs::write(&w.config_path, &without).unwrap();
    let (status, body) = reload_via_api(&w).await;
    assert_eq!(status, 200, "{body}");
    expect_error(chat(&w, OPTIONAL_KEY).await, 401).await;
    assert_eq!(chat(&w, APP_KEY).await.status(), 200);

    let mut after_reload = 0;
    while let Some(chunk) = chunks.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        after_reload += 1;
    }
    assert!(
        after_reload >= 2,
        "the stream was still running at the reload"
    );
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    assert!(text.contains("\"finish_reason\":\"stop\""), "{text}");
}

#[tokio::test]
async fn reloading_under_steady_traffic_fails_no_request() {
    // Limits off: the point is reloads, not the per-IP budget of one test client.
    let w = start(false, "[limits]\nenabled = false\n");
    let a = config_text(&w);
    let b = with_new_key(&a).replace(
        "max_body_bytes = 65536",
        "max_body_bytes = 65537\ntrusted_proxies = [\"10.0.0.0/8\"]",
    );
    let w = Arc::new(w);
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (w, done, sent, failed) = (w.clone(), done.clone(), sent.clone(), failed.clone());
        clients.push(tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                let status = chat(&w, APP_KEY).await.status();
                sent.fetch_add(1, Ordering::Relaxed);
                if status != 200 {
                    failed.fetch_add(1, Ordering::Relaxed);
                    eprintln!("failed with {status}");
                }
            }
        }));
    }
    let mut took = Vec::new();
    for i in 0..20 {
        std::fs::write(&w.config_path, if i % 2 == 0 { &b } else { &a }).unwrap();
        if i % 4 == 3 {
            sighup(&w);
            tokio::time::sleep(Duration::from_millis(100)).await;
        } else {
            let (status, body) = reload_via_api(&w).await;
            assert_eq!(status, 200, "{body}");
            took.push(body["took_ms"].as_f64().unwrap());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The last signal's reload may still be running.
    let deadline = Instant::now() + Duration::from_secs(5);
    while admin(&w, reqwest::Method::GET, "/admin/v1/config").await.1["generation"] != 21 {
        assert!(Instant::now() < deadline, "the last reload never landed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    done.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    took.sort_by(f64::total_cmp);
    eprintln!(
        "{} requests during 20 reloads; reload took {:.1} ms median, {:.1} ms max",
        sent.load(Ordering::Relaxed),
        took[took.len() / 2],
        took[took.len() - 1]
    );
    assert!(sent.load(Ordering::Relaxed) >= 100, "traffic kept flowing");
    assert_eq!(failed.load(Ordering::Relaxed), 0);
    let (_, config) = admin(&w, reqwest::Method::GET, "/admin/v1/config").await;
    assert_eq!(config["reloads"]["applied"], 20, "{config}");
    assert_eq!(config["generation"], 21);
}

#[tokio::test]
async fn settings_that_need_a_restart_are_reported_and_the_rest_is_applied() {
    let w = start(false, "");
    let edited = with_new_key(&config_text(&w))
        .replace("level = \"info\"", "level = \"debug\"")
        .replace("timeout_secs = 30", "timeout_secs = 31\nmax_retries = 0");
    std::fs::write(&w.config_path, edited).unwrap();
    let (status, body) = reload_via_api(&w).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["reloaded"], true);
    assert_eq!(
        body["restart_required"],
        json!([
            "upstream.timeout_secs",
            "upstream (retries and breaker)",
            "log"
        ])
    );
    assert_eq!(chat(&w, NEW_KEY).await.status(), 200);
    assert!(w
        .stderr()
        .contains("these changed settings take effect only after a restart"));
    // Still listed on the next reload: the process still runs the old values.
    let (_, again) = reload_via_api(&w).await;
    assert_eq!(again["restart_required"], body["restart_required"]);
    assert_eq!(again["generation"], 3);
}
