//! Virtual-key lifecycle through the CLI and the running gateway: scopes, expiry, and
//! rotation with an overlap during which both secrets work.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::{json, Value};

fn create(w: &Warden, args: &[&str]) -> String {
    let config = w.config_path.to_str().unwrap().to_owned();
    let mut all = vec!["keys"];
    all.extend_from_slice(args);
    all.extend(["--json", "--config", &config]);
    let out = w.cli(&all);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Value>(&out.stdout).unwrap()["secret"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn call(w: &Warden, secret: &str, path: &str, body: &Value) -> (u16, Value) {
    let response = client()
        .post(w.url(path))
        .bearer_auth(secret)
        .header("x-warden-user", "u1")
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn until_status(w: &Warden, secret: &str, want: u16, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let (got, _) = call(w, secret, "/v1/chat/completions", &chat_body()).await;
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "wanted {want}, still {got}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn unique(name: &str) -> String {
    format!("{name}-{:08x}", fastrand::u32(..))
}

#[tokio::test]
async fn a_scoped_key_reaches_only_its_models_and_endpoints() {
    let w = Warden::start();
    let name = unique("scoped");
    let secret = create(
        &w,
        &[
            "create",
            "--name",
            &name,
            "--models",
            "gpt-4o*",
            "--endpoints",
            "chat.completions,embeddings",
        ],
    );
    until_status(&w, &secret, 200, Duration::from_secs(5)).await;
    let other_model = json!({"model": "o3", "messages": [{"role": "user", "content": "hi"}]});
    let (status, body) = call(&w, &secret, "/v1/chat/completions", &other_model).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "model_not_allowed");
    let (status, body) = call(
        &w,
        &secret,
        "/v1/completions",
        &json!({"model": "gpt-4o-mini", "prompt": "hi"}),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "endpoint_not_allowed");

    let config = w.config_path.to_str().unwrap().to_owned();
    let bad = w.cli(&[
        "keys",
        "create",
        "--name",
        &unique("x"),
        "--endpoints",
        "chat",
        "--config",
        &config,
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown endpoint 'chat'"));
}

#[tokio::test]
async fn an_expired_key_stops_working_by_itself() {
    let w = Warden::start();
    // 2.5 seconds.
    let secret = create(
        &w,
        &[
            "create",
            "--name",
            &unique("short"),
            "--expires-in-hours",
            "0.0007",
        ],
    );
    until_status(&w, &secret, 200, Duration::from_secs(5)).await;
    until_status(&w, &secret, 401, Duration::from_secs(8)).await;
}

#[tokio::test]
async fn rotation_keeps_both_secrets_working_for_the_overlap_then_only_the_new_one() {
    let w = Warden::start();
    let name = unique("rotating");
    let old = create(&w, &["create", "--name", &name]);
    until_status(&w, &old, 200, Duration::from_secs(5)).await;
    // 3.6 seconds of overlap.
    let new = create(&w, &["rotate", &name, "--overlap-hours", "0.001"]);
    assert_ne!(old, new);
    until_status(&w, &new, 200, Duration::from_secs(5)).await;
    // Clients that have not switched yet keep working during the overlap...
    assert_eq!(
        call(&w, &old, "/v1/chat/completions", &chat_body()).await.0,
        200
    );
    // ...and are refused once it ends; the new secret goes on.
    until_status(&w, &old, 401, Duration::from_secs(10)).await;
    assert_eq!(
        call(&w, &new, "/v1/chat/completions", &chat_body()).await.0,
        200
    );
}

#[tokio::test]
async fn a_revoked_key_still_in_use_raises_an_alert() {
    use std::sync::{Arc, Mutex};
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: String| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push(body);
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let w = Warden::start_with(Options {
        extra_toml: format!(
            "[alerts]\n[[alerts.webhooks]]\nurl = \"http://{addr}/hook\"\nformat = \"json\"\n"
        ),
        ..Default::default()
    });
    let name = unique("leaky");
    let secret = create(&w, &["create", "--name", &name]);
    until_status(&w, &secret, 200, Duration::from_secs(5)).await;
    let config = w.config_path.to_str().unwrap().to_owned();
    assert!(w
        .cli(&["keys", "revoke", &name, "--config", &config])
        .status
        .success());
    until_status(&w, &secret, 401, Duration::from_secs(5)).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let alerts = seen.lock().unwrap().clone();
        if let Some(alert) = alerts.iter().find(|a| a.contains("revoked_key_used")) {
            assert!(alert.contains(&name), "{alert}");
            break;
        }
        assert!(Instant::now() < deadline, "no alert; got {alerts:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
