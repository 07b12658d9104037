//! The operator plane under bad input (issue 12, section 4): numbers out of range are
//! refused instead of panicking the handler or overflowing an expiry, and every error the
//! admin listener sends, axum's own included, is in OpenAI's envelope.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::*;
use serde_json::{json, Value};

async fn admin(
    w: &Warden,
    method: reqwest::Method,
    path: &str,
    body: Option<String>,
) -> (u16, String, Value) {
    let mut request = client()
        .request(method, format!("{}{path}", w.admin))
        .bearer_auth(ADMIN_TOKEN);
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    (status, content_type, body)
}

fn assert_envelope(what: &str, status: u16, content_type: &str, body: &Value, want: u16) {
    assert_eq!(status, want, "{what}: {body}");
    assert!(
        content_type.starts_with("application/json"),
        "{what}: {content_type}"
    );
    for key in ["message", "type", "param", "code"] {
        assert!(
            body["error"].get(key).is_some(),
            "{what}: no {key} in {body}"
        );
    }
}

#[tokio::test]
async fn numbers_out_of_range_are_refused_not_panicked_or_overflowed() {
    let w = Warden::start();
    for hours in ["1e300", "-1", "0", "1e6"] {
        let (status, ct, body) = admin(
            &w,
            reqwest::Method::POST,
            "/admin/v1/users/app/alice/suspend",
            Some(format!(r#"{{"hours":{hours}}}"#)),
        )
        .await;
        assert_envelope(&format!("suspend {hours}"), status, &ct, &body, 400);
        assert_eq!(body["error"]["code"], "invalid_hours");
    }
    let (status, ct, body) = admin(
        &w,
        reqwest::Method::POST,
        "/admin/v1/keys",
        Some(json!({"name": "far", "expires_in_hours": 1e300}).to_string()),
    )
    .await;
    assert_envelope("key expiry", status, &ct, &body, 400);
    // The listener still answers: nothing panicked.
    let (status, _, _) = admin(
        &w,
        reqwest::Method::POST,
        "/admin/v1/users/app/alice/suspend",
        Some(r#"{"hours":2}"#.into()),
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn every_admin_error_is_in_the_openai_envelope() {
    let w = Warden::start();
    let cases: Vec<(&str, reqwest::Method, &str, Option<String>, u16)> = vec![
        (
            "unknown path",
            reqwest::Method::GET,
            "/admin/v1/nothing",
            None,
            404,
        ),
        (
            "wrong method",
            reqwest::Method::DELETE,
            "/admin/v1/keys",
            None,
            405,
        ),
        (
            "malformed JSON",
            reqwest::Method::POST,
            "/admin/v1/users/app/alice/ban",
            Some("{not json".into()),
            400,
        ),
        (
            "wrong field type",
            reqwest::Method::POST,
            "/admin/v1/users/app/alice/suspend",
            Some(r#"{"hours":"two"}"#.into()),
            422,
        ),
    ];
    for (what, method, path, body, want) in cases {
        let (status, ct, body) = admin(&w, method, path, body).await;
        assert_envelope(what, status, &ct, &body, want);
    }
    // The webhook receiver faces the internet: a 5 MB body is a clean 413, answered from
    // the declared length before any of it is read.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(w.admin.trim_start_matches("http://"))
        .await
        .unwrap();
    stream
        .write_all(
            b"POST /hooks/openai HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 5242880\r\n\r\n",
        )
        .await
        .unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]).into_owned();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer
        .to_ascii_lowercase()
        .contains("content-type: application/json"));
    let body: Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_envelope("5 MB webhook", 413, "application/json", &body, 413);
}

/// A credential sent as the end-user id or the model is refused, so it is never stored
/// and served back by the admin API (the logs already masked it).
#[tokio::test]
async fn credentials_in_identifiers_are_refused_not_stored() {
    let w = Warden::start();
    let key = format!("sk-proj-{}", "A1b2C3d4E5f6G7h8I9j0".repeat(3));
    let as_user = client()
        .post(w.url("/v1/chat/completions"))
        .bearer_auth(APP_KEY)
        .header("x-warden-user", &key)
        .json(&chat_body())
        .send()
        .await
        .unwrap();
    let error = expect_error(as_user, 400).await;
    assert_eq!(error["code"], "invalid_end_user");
    assert!(!error.to_string().contains(&key));
    let as_model = post(
        &w,
        "/v1/chat/completions",
        Some("alice"),
        &json!({"model": key, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    let error = expect_error(as_model, 400).await;
    assert_eq!(error["code"], "secret_in_field");
    assert_eq!(error["param"], "model");
    assert!(w.standin.requests().is_empty());
    // Nothing the admin API serves holds the key.
    for path in ["/admin/v1/events?limit=50", "/admin/v1/users"] {
        let (status, _, body) = admin(&w, reqwest::Method::GET, path, None).await;
        assert_eq!(status, 200, "{path}");
        assert!(!body.to_string().contains(&key), "{path}: {body}");
    }
}

/// Guessing the admin token: past ten failures a minute the address gets 429 without the
/// token being checked, and the failures are counted, not one audit event each.
#[tokio::test]
async fn admin_token_guessing_is_slowed_and_counted_not_logged_per_guess() {
    let w = Warden::start();
    let mut statuses = Vec::new();
    for i in 0..200 {
        let response = client()
            .get(format!("{}/admin/v1/summary", w.admin))
            .bearer_auth(format!("guess-{i}"))
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
    }
    assert!(statuses[..10].iter().all(|s| *s == 401), "{statuses:?}");
    assert!(statuses[10..].iter().all(|s| *s == 429), "{statuses:?}");
    // Even the right token waits out the window from this address.
    let (status, _, body) = admin(&w, reqwest::Method::GET, "/admin/v1/summary", None).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "too_many_auth_failures");
    // The event log holds one event for the first guess, not 200 (the rest are counted
    // into one when the minute closes).
    let mut w = w;
    w.stop();
    let url = format!("sqlite://{}", w.dir.path().join("warden.db").display());
    let db = crate::audit_support::Db::open(&url).await;
    let refused = db
        .strings("SELECT reason FROM events WHERE kind = 'admin' AND reason LIKE 'admin_token%'")
        .await;
    // The first guess on its own; the other 199 and the right token's refusal, counted.
    assert_eq!(
        refused,
        vec![
            "admin_token: 1 refused".to_owned(),
            "admin_token: 200 refused".to_owned()
        ],
        "{refused:?}"
    );
}

/// `[openai_notices] listen` moves the webhook receiver to a listener of its own: it
/// answers there, and the admin listener (which must stay private) no longer has it.
#[tokio::test]
async fn the_webhook_receiver_can_have_its_own_listener() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let w = Warden::start_with(Options {
        extra_toml: format!("[openai_notices]\nlisten = \"127.0.0.1:{port}\"\n"),
        ..Default::default()
    });
    let hooks = format!("http://127.0.0.1:{port}");
    let unsigned = |base: String| {
        client()
            .post(format!("{base}/hooks/openai"))
            .header("content-type", "application/json")
            .body("{}")
            .send()
    };
    // On its own listener: there, and refusing an unsigned delivery in the envelope.
    let response = unsigned(hooks.clone()).await.unwrap();
    assert_ne!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert!(body["error"]["code"].is_string(), "{body}");
    // The admin API is not reachable there.
    let admin_there = client()
        .get(format!("{hooks}/admin/v1/summary"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(admin_there.status(), 404);
    // And the admin listener no longer serves the receiver.
    assert_eq!(unsigned(w.admin.clone()).await.unwrap().status(), 404);
}

/// With no upstream key at all, requests say so (not "moderation unavailable, retry") and
/// `/readyz` is not ready, naming the reason.
#[tokio::test]
async fn no_upstream_key_is_named_and_not_ready() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("warden.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
             [storage]\nurl = \"sqlite://{}\"\n\
             [identity]\nsafety_identifier_secret_env = \"T_SAFETY_SECRET\"\n\
             [[keys]]\nname = \"app\"\nsecret_env = \"T_APP_KEY\"\nend_user = \"optional\"\n",
            dir.path().join("w.db").display()
        ),
    )
    .unwrap();
    let env: std::collections::HashMap<String, String> =
        [("T_APP_KEY", APP_KEY), ("T_SAFETY_SECRET", SAFETY_SECRET)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
    let (mut child, base, admin_url) = spawn_serve(&config, &env, &dir.path().join("stderr"));
    let response = client()
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(APP_KEY)
        .json(&chat_body())
        .send()
        .await
        .unwrap();
    assert_eq!(
        response
            .headers()
            .get("x-should-retry")
            .and_then(|v| v.to_str().ok()),
        Some("false")
    );
    let error = expect_error(response, 503).await;
    assert_eq!(error["code"], "upstream_key_missing");
    let ready = client()
        .get(format!("{admin_url}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["reason"], "upstream_key_missing", "{body}");
    let _ = child.kill();
}

/// The admin API audits changes, not reads: polling the dashboard's endpoints adds no
/// audit rows, a ban does.
#[tokio::test]
async fn admin_reads_are_not_audited_changes_are() {
    let mut w = Warden::start();
    for _ in 0..20 {
        for path in ["/admin/v1/summary", "/admin/v1/users", "/admin/v1/risk"] {
            let (status, _, _) = admin(&w, reqwest::Method::GET, path, None).await;
            assert_eq!(status, 200, "{path}");
        }
    }
    let (status, _, _) = admin(
        &w,
        reqwest::Method::POST,
        "/admin/v1/users/app/alice/ban",
        Some(r#"{"reason":"test"}"#.into()),
    )
    .await;
    assert_eq!(status, 200);
    w.stop();
    let url = format!("sqlite://{}", w.dir.path().join("warden.db").display());
    let db = crate::audit_support::Db::open(&url).await;
    let audited = db
        .strings("SELECT reason FROM events WHERE kind = 'admin' AND endpoint = 'admin'")
        .await;
    assert_eq!(
        audited,
        vec!["POST /admin/v1/users/app/alice/ban".to_owned()],
        "{audited:?}"
    );
}
