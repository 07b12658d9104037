//! OpenAI safety webhooks end to end: deliveries signed exactly as OpenAI signs them
//! (Standard Webhooks), posted to the admin listener; the stand-in serves the cases.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use crate::common::*;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};

const SECRET_BYTES: &[u8] = b"0123456789abcdef0123456789abcdef";

fn secret() -> String {
    format!("whsec_{}", STANDARD.encode(SECRET_BYTES))
}

const NOTICES: &str = r#"
[openai_notices]
secret_env = "T_WEBHOOK_SECRET"
warning_suspend_hours = 2
"#;

fn start() -> Warden {
    Warden::start_with(Options {
        extra_toml: NOTICES.into(),
        extra_env: vec![("T_WEBHOOK_SECRET".into(), secret())],
        ..Default::default()
    })
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// `v1,<base64 HMAC-SHA256(key, "<id>.<ts>.<body>")>` — written here from the spec, not
/// taken from Warden.
fn signature(id: &str, ts: i64, body: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET_BYTES);
    let tag = ring::hmac::sign(&key, format!("{id}.{ts}.{body}").as_bytes());
    format!("v1,{}", STANDARD.encode(tag.as_ref()))
}

fn event(kind: &str, case_id: &str) -> String {
    json!({"id": format!("evt_{case_id}"), "object": "event", "created_at": now(), "type": kind, "data": {"id": case_id}}).to_string()
}

async fn deliver(w: &Warden, headers: &[(&str, String)], body: &str) -> (u16, Value) {
    let mut request = client()
        .post(format!("{}/hooks/openai", w.admin))
        .header("content-type", "application/json")
        .body(body.to_owned());
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn deliver_signed(w: &Warden, webhook_id: &str, body: &str) -> (u16, Value) {
    let ts = now();
    deliver(
        w,
        &[
            ("webhook-id", webhook_id.to_owned()),
            ("webhook-timestamp", ts.to_string()),
            ("webhook-signature", signature(webhook_id, ts, body)),
        ],
        body,
    )
    .await
}

fn unique(name: &str) -> String {
    format!("{name}-{:08x}", fastrand::u32(..))
}

/// Sends one request as `user` and returns the safety identifier the stand-in saw.
async fn identifier_of(w: &Warden, user: &str) -> String {
    let marker = unique("marker");
    let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": marker}]});
    assert_eq!(
        post(w, "/v1/chat/completions", Some(user), &body)
            .await
            .status(),
        200
    );
    let seen = w
        .standin
        .requests()
        .into_iter()
        .find(|r| r.body_text.contains(&marker))
        .unwrap();
    seen.body["safety_identifier"].as_str().unwrap().to_owned()
}

fn register_case(w: &Warden, case_id: &str, sid: &str, notice: &str) {
    w.standin
        .add_case(json!({
            "id": case_id, "object": "safety.case", "created_at": now(),
            "entity_identifier": sid, "reason": "cyber_abuse",
            "notice": {"type": notice, "message": "test notice"}
        }))
        .unwrap();
}

fn case_fetches(w: &Warden, case_id: &str) -> usize {
    w.standin
        .requests()
        .iter()
        .filter(|r| r.path == format!("/v1/safety/cases/{case_id}"))
        .count()
}

async fn status_of(w: &Warden, user: &str) -> (u16, Value) {
    let response = post(w, "/v1/chat/completions", Some(user), &chat_body()).await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Waits until the user's requests get `status` (and error code, when refused).
async fn wait_for_status(
    w: &Warden,
    user: &str,
    status: u16,
    code: Option<&str>,
    within: Duration,
) {
    let deadline = Instant::now() + within;
    loop {
        let (got, body) = status_of(w, user).await;
        if got == status && code.is_none_or(|c| body["error"]["code"] == c) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{user}: wanted {status} {code:?}, got {got} {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn cli_json(w: &Warden, args: &[&str]) -> Value {
    let config = w.config_path.to_str().unwrap().to_owned();
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--json", "--config", &config]);
    let out = w.cli(&all);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn a_warning_suspends_the_user_it_names_and_is_recorded() {
    let w = start();
    let user = unique("warned");
    let sid = identifier_of(&w, &user).await;
    let case_id = unique("C-warn");
    register_case(&w, &case_id, &sid, "warning");

    let started = Instant::now();
    let (status, ack) = deliver_signed(
        &w,
        &unique("msg"),
        &event("safety.warning_issued", &case_id),
    )
    .await;
    assert_eq!(status, 200, "{ack}");
    assert_eq!(ack["queued"], true);
    // Acknowledged at once; the action follows within seconds.
    wait_for_status(
        &w,
        &user,
        403,
        Some("user_suspended"),
        Duration::from_secs(5),
    )
    .await;
    let took = started.elapsed();
    eprintln!("warning to suspension: {took:?}");

    let case = cli_json(&w, &["cases", "show", &case_id]);
    assert_eq!(case["action"], "suspend");
    assert_eq!(case["end_user"], user.as_str());
    assert_eq!(case["key_name"], "app");
    assert_eq!(case["reason"], "cyber_abuse");
    let shown = cli_json(&w, &["users", "show", &user]);
    assert!(shown["status_reason"].as_str().unwrap().contains(&case_id));
    // Another user of the same key is untouched.
    assert_eq!(status_of(&w, &unique("bystander")).await.0, 200);
}

#[tokio::test]
async fn a_deactivation_bans_and_an_unknown_identifier_is_reported_plainly() {
    let w = start();
    let user = unique("deactivated");
    let sid = identifier_of(&w, &user).await;
    let case_id = unique("C-deact");
    register_case(&w, &case_id, &sid, "deactivation");
    let (status, _) = deliver_signed(
        &w,
        &unique("msg"),
        &event("safety.deactivation_issued", &case_id),
    )
    .await;
    assert_eq!(status, 200);
    wait_for_status(&w, &user, 403, Some("user_banned"), Duration::from_secs(5)).await;

    let stranger = unique("C-stranger");
    register_case(
        &w,
        &stranger,
        "wsi1_never_seen_by_this_warden_xxxxxxxxxxxxxxxxxxx",
        "warning",
    );
    deliver_signed(
        &w,
        &unique("msg"),
        &event("safety.warning_issued", &stranger),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let listed = cli_json(&w, &["cases", "list"]);
        let found = listed["cases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["case_id"] == stranger.as_str())
            .cloned();
        if let Some(case) = found {
            assert_eq!(case["action"], "unmapped");
            assert!(case["end_user"].is_null());
            break;
        }
        assert!(Instant::now() < deadline, "unmapped case not recorded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn forged_stale_or_unsigned_deliveries_are_refused_and_change_nothing() {
    let w = start();
    let user = unique("target");
    let sid = identifier_of(&w, &user).await;
    let case_id = unique("C-forged");
    register_case(&w, &case_id, &sid, "deactivation");
    let body = event("safety.deactivation_issued", &case_id);
    let ts = now();

    let forged = signature("msg_f", ts, &body.replace("deactivation", "warning"));
    let (status, error) = deliver(
        &w,
        &[
            ("webhook-id", "msg_f".into()),
            ("webhook-timestamp", ts.to_string()),
            ("webhook-signature", forged),
        ],
        &body,
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(error["error"]["code"], "invalid_webhook_signature");

    let stale_ts = ts - 301;
    let (status, error) = deliver(
        &w,
        &[
            ("webhook-id", "msg_s".into()),
            ("webhook-timestamp", stale_ts.to_string()),
            ("webhook-signature", signature("msg_s", stale_ts, &body)),
        ],
        &body,
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("tolerance"),
        "{error}"
    );

    let (status, error) = deliver(&w, &[("webhook-id", "msg_m".into())], &body).await;
    assert_eq!(status, 400);
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("missing header"),
        "{error}"
    );

    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(case_fetches(&w, &case_id), 0, "nothing was fetched");
    assert_eq!(status_of(&w, &user).await.0, 200, "nothing was done");
}

#[tokio::test]
async fn a_duplicate_delivery_is_acknowledged_but_acted_on_once() {
    let w = start();
    let user = unique("dup");
    let sid = identifier_of(&w, &user).await;
    let case_id = unique("C-dup");
    register_case(&w, &case_id, &sid, "warning");
    let body = event("safety.warning_issued", &case_id);
    let webhook_id = unique("msg");
    let (first, ack1) = deliver_signed(&w, &webhook_id, &body).await;
    let (second, ack2) = deliver_signed(&w, &webhook_id, &body).await;
    assert_eq!((first, second), (200, 200));
    assert_eq!(ack1["duplicate"], false);
    assert_eq!(ack2["duplicate"], true);
    // A second delivery id for the same case (OpenAI retries with a new id) is not
    // acted on again either.
    deliver_signed(&w, &unique("msg"), &body).await;
    wait_for_status(
        &w,
        &user,
        403,
        Some("user_suspended"),
        Duration::from_secs(5),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(case_fetches(&w, &case_id), 1, "the case was fetched once");
    let db = format!("sqlite://{}", w.dir.path().join("warden.db").display());
    let pool = sqlx::SqlitePool::connect(&db).await.unwrap();
    let (suspensions,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM events WHERE kind = 'enforcement' AND reason = 'suspend' AND end_user = $1",
    )
    .bind(&user)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(suspensions, 1);
}

#[tokio::test]
async fn a_case_fetch_that_fails_twice_is_retried_and_acted_on_once() {
    let w = start();
    let user = unique("retry");
    let sid = identifier_of(&w, &user).await;
    let case_id = unique("C-retry");
    register_case(&w, &case_id, &sid, "warning");
    w.standin
        .queue_fault_for("/v1/safety/cases", "status=500", 2)
        .unwrap();
    let (status, _) = deliver_signed(
        &w,
        &unique("msg"),
        &event("safety.warning_issued", &case_id),
    )
    .await;
    assert_eq!(status, 200);
    wait_for_status(
        &w,
        &user,
        403,
        Some("user_suspended"),
        Duration::from_secs(10),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(case_fetches(&w, &case_id), 3, "two failures, one success");
    let case = cli_json(&w, &["cases", "show", &case_id]);
    assert_eq!(case["action"], "suspend");
}

#[tokio::test]
async fn a_restart_between_acknowledgement_and_action_still_acts() {
    let mut w = start();
    let user = unique("restart");
    let sid = identifier_of(&w, &user).await;
    let case_id = unique("C-restart");
    // The case is not there yet: every fetch before the restart fails (404).
    let (status, ack) = deliver_signed(
        &w,
        &unique("msg"),
        &event("safety.warning_issued", &case_id),
    )
    .await;
    assert_eq!(status, 200, "{ack}");
    eventually("a failed fetch", Duration::from_secs(5), || {
        case_fetches(&w, &case_id) >= 1
    })
    .await;
    // Crash: no shutdown, no chance to finish anything.
    w.child.kill().unwrap();
    w.child.wait().unwrap();
    register_case(&w, &case_id, &sid, "warning");
    let stderr = w.dir.path().join("restarted.stderr.log");
    let (child, base, admin) = spawn_serve(&w.config_path, &w.env, &stderr);
    w.child = child;
    w.base = base;
    w.admin = admin;
    wait_for_status(
        &w,
        &user,
        403,
        Some("user_suspended"),
        Duration::from_secs(30),
    )
    .await;
    let case = cli_json(&w, &["cases", "show", &case_id]);
    assert_eq!(case["action"], "suspend");
}

#[tokio::test]
async fn without_a_secret_the_receiver_says_what_to_set() {
    let w = Warden::start();
    let (status, error) = deliver_signed(&w, "msg_x", &event("safety.warning_issued", "C-1")).await;
    assert_eq!(status, 503);
    assert_eq!(error["error"]["code"], "webhooks_not_configured");
    assert!(error["error"]["message"]
        .as_str()
        .unwrap()
        .contains("OPENAI_WEBHOOK_SECRET"));
}
