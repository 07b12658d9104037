//! Upstream key hygiene against the stand-in's Admin, Usage and Costs APIs: reconciliation
//! (a replayed day of matching traffic raises nothing; outside usage on one key raises one
//! alert naming it within one polling interval; unmanaged keys are reported), rotation
//! under load with no failed request and the old key deleted upstream, a failing Admin API
//! that changes nothing, pagination, and the store's hygiene tables on PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::Value;

const ADMIN_KEY: &str = "sk-admin-standin-hygiene-0123456789";

type Seen = Arc<Mutex<Vec<(Instant, Value)>>>;

/// A webhook receiver keeping every alert (JSON format) with when it arrived.
async fn receiver() -> (String, Seen) {
    let seen: Seen = Arc::default();
    let sink = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: String| {
            let sink = sink.clone();
            async move {
                let alert: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                sink.lock().unwrap().push((Instant::now(), alert));
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook"), seen)
}

fn alerts_of(seen: &Seen, kind: &str) -> Vec<(Instant, Value)> {
    seen.lock()
        .unwrap()
        .iter()
        .filter(|(_, a)| a["kind"] == kind)
        .cloned()
        .collect()
}

fn standin() -> standin::Handle {
    standin::spawn(standin::Options {
        api_key: Some(UPSTREAM_KEY.into()),
        admin_key: Some(ADMIN_KEY.into()),
        ..Default::default()
    })
    .unwrap()
}

fn master() -> String {
    STANDARD.encode([23u8; 32])
}

/// A gateway in front of `upstream` with the Admin API on; `extra` adds config.
fn start(upstream: &standin::Handle, hook: Option<&str>, hygiene: &str, extra: &str) -> Warden {
    let alerts = hook.map_or(String::new(), |url| {
        format!("[alerts]\nmax_per_minute = 1000\n[[alerts.webhooks]]\nurl = \"{url}\"\nformat = \"json\"\n")
    });
    Warden::start_with(Options {
        upstream_url: Some(upstream.base_url()),
        extra_toml: format!(
            "[limits]\nenabled = false\n[openai_admin]\nkey_env = \"T_OPENAI_ADMIN\"\n{hygiene}\n{alerts}\n{extra}"
        ),
        extra_env: vec![
            ("T_OPENAI_ADMIN".into(), ADMIN_KEY.into()),
            ("WARDEN_MASTER_KEY".into(), master()),
        ],
        ..Default::default()
    })
}

async fn admin(w: &Warden, method: reqwest::Method, path: &str) -> (u16, Value) {
    let response = client()
        .request(method, format!("{}{path}", w.admin))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn chat(w: &Warden, user: &str) -> u16 {
    client()
        .post(w.url("/v1/chat/completions"))
        .bearer_auth(APP_KEY)
        .header("x-warden-user", user)
        .json(&chat_body())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Writes rows into Warden's own per-key ledger, as earlier replicas would have.
async fn write_ledger(w: &Warden, rows: &HashMap<(String, u64), (u64, u64, u64)>) {
    let url = format!("sqlite://{}", w.dir.path().join("warden.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let rows: Vec<_> = rows.iter().collect();
    for chunk in rows.chunks(400) {
        let mut insert = sqlx::QueryBuilder::new(
            "INSERT INTO upstream_usage (key_name, minute, requests, input_tokens, output_tokens) ",
        );
        insert.push_values(chunk, |mut row, ((key, minute), (r, i, o))| {
            row.push_bind(key.clone())
                .push_bind(*minute as i64)
                .push_bind(*r as i64)
                .push_bind(*i as i64)
                .push_bind(*o as i64);
        });
        insert.build().execute(&pool).await.unwrap();
    }
}

#[tokio::test]
async fn a_day_of_matching_traffic_raises_no_alert() {
    let upstream = standin();
    let (hook, seen) = receiver().await;
    let w = start(
        &upstream,
        Some(&hook),
        "reconcile_every_secs = 2\nsettle_delay_secs = 5\nclock_skew_secs = 60\nlookback_minutes = 1450",
        "",
    );
    // Live traffic through Warden, counted by both sides as it happens.
    let live_from = now();
    for i in 0..12 {
        assert_eq!(chat(&w, &format!("live-{i}")).await, 200);
    }
    // A day of history both sides saw, each request up to 45 s apart on the two clocks.
    let mut rng = fastrand::Rng::with_seed(7);
    let mut ledger: HashMap<(String, u64), (u64, u64, u64)> = HashMap::new();
    let start_at = now() - 86_400;
    let mut replayed = 0u64;
    for second in (start_at..live_from - 120).step_by(20) {
        if rng.u8(..) < 128 {
            continue;
        }
        let (input, output) = (rng.u64(10..1500), rng.u64(1..600));
        let at_openai = second.saturating_add_signed(rng.i64(-45..=45));
        upstream
            .add_usage_at(UPSTREAM_KEY, at_openai, 1, input, output)
            .unwrap();
        let cell = ledger
            .entry(("(env)".into(), second - second % 60))
            .or_default();
        *cell = (cell.0 + 1, cell.1 + input, cell.2 + output);
        replayed += 1;
    }
    write_ledger(&w, &ledger).await;
    // The live minute is judged once it ended and settled (OpenAI reports it late).
    let judged_at = live_from - live_from % 60 + 60 + 5 + 1;
    let wait = judged_at.saturating_sub(now()) + 3;
    tokio::time::sleep(Duration::from_secs(wait)).await;
    let (status, report) = admin(
        &w,
        reqwest::Method::POST,
        "/admin/v1/upstream-keys/hygiene/run",
    )
    .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["errors"], serde_json::json!([]), "{report}");
    assert!(
        report["compared"]["buckets"].as_u64().unwrap() >= 1440,
        "a day of 1-minute buckets (two Usage API pages) compared: {report}"
    );
    assert_eq!(report["excess"], serde_json::json!([]), "{report}");
    assert!(
        report["managed"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == "(env)" && m["api_key_id"] == standin::DEFAULT_KEY_ID),
        "{report}"
    );
    assert!(alerts_of(&seen, "upstream_key_used_elsewhere").is_empty());
    eprintln!("replayed {replayed} requests over a day + 12 live: no false alert");
}

#[tokio::test]
async fn outside_usage_on_one_key_raises_one_alert_naming_it_and_unmanaged_keys_are_reported() {
    let upstream = standin();
    let (unmanaged_id, _) = upstream.add_user_key(standin::DEFAULT_PROJECT, "laptop");
    let (hook, seen) = receiver().await;
    let poll = 3;
    let w = start(
        &upstream,
        Some(&hook),
        &format!("reconcile_every_secs = {poll}\nsettle_delay_secs = 5\nlookback_minutes = 30"),
        "",
    );
    for i in 0..5 {
        assert_eq!(chat(&w, &format!("u{i}")).await, 200);
    }
    eventually(
        "the unmanaged key is reported",
        Duration::from_secs(15),
        || {
            alerts_of(&seen, "upstream_key_unmanaged")
                .iter()
                .any(|(_, a)| a["fields"]["api_key_id"] == unmanaged_id.as_str())
        },
    )
    .await;
    // Someone else uses the key: 40 requests two minutes ago (a settled bucket).
    let leaked_at = now() - 150;
    upstream
        .add_usage_at(UPSTREAM_KEY, leaked_at, 40, 8_000, 4_000)
        .unwrap();
    let injected = Instant::now();
    eventually("the leak alert", Duration::from_secs(30), || {
        !alerts_of(&seen, "upstream_key_used_elsewhere").is_empty()
    })
    .await;
    let alerts = alerts_of(&seen, "upstream_key_used_elsewhere");
    let (at, alert) = &alerts[0];
    let latency = at.duration_since(injected);
    eprintln!(
        "leak found {:.1}s after the outside traffic (poll every {poll}s)",
        latency.as_secs_f64()
    );
    assert!(
        latency <= Duration::from_secs(poll + 2),
        "within one polling interval: {latency:?}"
    );
    let fields = &alert["fields"];
    assert_eq!(fields["key"], "(env)");
    assert_eq!(fields["api_key_id"], standin::DEFAULT_KEY_ID);
    assert_eq!(
        fields["bucket_start_unix"].as_u64().unwrap(),
        leaked_at - leaked_at % 60
    );
    assert_eq!(fields["excess_requests"].as_u64().unwrap(), 40);
    assert_eq!(alert["severity"], "critical");
    // More passes: still one alert (and one event) for that key.
    tokio::time::sleep(Duration::from_secs(2 * poll + 1)).await;
    assert_eq!(alerts_of(&seen, "upstream_key_used_elsewhere").len(), 1);
    let (_, status) = admin(&w, reqwest::Method::GET, "/admin/v1/upstream-keys/hygiene").await;
    assert!(
        status["unmanaged"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["api_key_id"] == unmanaged_id.as_str()
                && k["owner"].as_str().unwrap().starts_with("user")),
        "{status}"
    );
    assert_eq!(status["excess"].as_array().unwrap().len(), 1, "{status}");
    let (_, events) = admin(
        &w,
        reqwest::Method::GET,
        "/admin/v1/events?kind=alert&limit=200",
    )
    .await;
    let leak_events = events["data"].as_array().map_or(0, |e| {
        e.iter()
            .filter(|e| e["reason"] == "upstream_key_used_elsewhere")
            .count()
    });
    assert_eq!(leak_events, 1, "{events}");
    // The evidence report carries the section.
    let report = client()
        .get(format!(
            "{}/admin/v1/report?since={}&format=md",
            w.admin,
            time::OffsetDateTime::now_utc().date()
        ))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(report.contains("## Upstream key hygiene"), "{report}");
    assert!(report.contains(unmanaged_id.as_str()), "{report}");
    assert!(
        report.contains("Usage of Warden's keys that did not come through Warden"),
        "{report}"
    );
}

#[tokio::test]
async fn a_scheduled_rotation_under_load_fails_no_request_and_deletes_the_old_key_upstream() {
    let upstream = standin();
    let (hook, seen) = receiver().await;
    let w = start(
        &upstream,
        Some(&hook),
        "reconcile_every_secs = 1\nrotation_overlap_secs = 3\nmax_key_age_days = 0",
        "",
    );
    let config = w.config_path.to_str().unwrap().to_owned();
    let added = w.cli(&[
        "upstream-keys",
        "add",
        "primary",
        "--from-env",
        "T_UPSTREAM_KEY",
        "--project",
        standin::DEFAULT_PROJECT,
        "--activate",
        "--config",
        &config,
    ]);
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    let scheduled = w.cli(&[
        "upstream-keys",
        "schedule",
        "primary",
        "--every-days",
        "30",
        "--config",
        &config,
    ]);
    assert!(
        scheduled.status.success(),
        "{}",
        String::from_utf8_lossy(&scheduled.stderr)
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let load = ChatLoad::start(&w, 4);
    tokio::time::sleep(Duration::from_millis(700)).await;
    // The key was added 31 days ago: the schedule (every 30 days) makes it due now.
    let url = format!("sqlite://{}", w.dir.path().join("warden.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::query(
        "UPDATE upstream_keys SET created_ms = created_ms - 31 * 86400000 WHERE name = 'primary'",
    )
    .execute(&pool)
    .await
    .unwrap();
    let new_name = {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (_, keys) = admin(&w, reqwest::Method::GET, "/admin/v1/upstream-keys").await;
            let active = keys["data"]
                .as_array()
                .unwrap()
                .iter()
                .find(|k| k["state"] == "active")
                .and_then(|k| k["name"].as_str().map(str::to_owned));
            if let Some(name) = active.filter(|n| n != "primary") {
                break name;
            }
            assert!(Instant::now() < deadline, "no scheduled rotation: {keys}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    assert!(new_name.starts_with("primary-"), "{new_name}");
    // Through the switch and past the overlap, when the old key stops working upstream.
    let deleted = Instant::now();
    eventually(
        "the old key deleted upstream",
        Duration::from_secs(15),
        || !upstream.key_is_live(UPSTREAM_KEY),
    )
    .await;
    eprintln!(
        "old key deleted upstream {:.1}s after the rotation (overlap 3s)",
        deleted.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let statuses = load.stop().await;
    let failed = statuses.iter().filter(|s| **s != 200).count();
    eprintln!(
        "{} requests during the rotation, {failed} failed",
        statuses.len()
    );
    assert!(statuses.len() > 20, "too little load: {}", statuses.len());
    assert_eq!(failed, 0, "{failed} of {} requests failed", statuses.len());

    let bearers: Vec<String> = upstream
        .requests()
        .iter()
        .filter(|r| r.path == "/v1/chat/completions")
        .filter_map(|r| r.header("authorization").map(str::to_owned))
        .collect();
    let last = bearers.last().unwrap();
    assert_ne!(
        last,
        &format!("Bearer {UPSTREAM_KEY}"),
        "the new key serves at the end"
    );
    let (_, keys) = admin(&w, reqwest::Method::GET, "/admin/v1/upstream-keys").await;
    let state = |name: &str| {
        keys["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["name"] == name)
            .map(|k| k["state"].clone())
    };
    assert_eq!(state(&new_name), Some("active".into()), "{keys}");
    assert_eq!(state("primary"), Some("retired".into()), "{keys}");
    assert_eq!(
        upstream.key_ids(standin::DEFAULT_PROJECT).len(),
        1,
        "only the new key is left upstream"
    );

    for kind in [
        "upstream_key_rotation_started",
        "upstream_key_created",
        "upstream_key_rotated",
        "upstream_key_deleted",
    ] {
        eventually(kind, Duration::from_secs(10), || {
            !alerts_of(&seen, kind).is_empty()
        })
        .await;
    }
    let steps = [
        "upstream_key_rotation_started",
        "upstream_key_created",
        "upstream_key_rotated",
        "upstream_key_deleted",
    ];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, events) = admin(
            &w,
            reqwest::Method::GET,
            "/admin/v1/events?kind=admin&limit=500",
        )
        .await;
        let reasons: Vec<String> = events["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["reason"].as_str().map(str::to_owned))
            .collect();
        if steps.iter().all(|s| reasons.iter().any(|r| r == s)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "rotation steps missing from the events: {reasons:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The rotated key keeps the schedule.
    let (_, listing) = admin(&w, reqwest::Method::GET, "/admin/v1/upstream-keys").await;
    let new_row = listing["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == new_name.as_str())
        .unwrap()
        .clone();
    assert_eq!(new_row["rotate_every_days"], 30, "{new_row}");
}

#[tokio::test]
async fn a_failing_admin_api_leaves_the_active_key_and_service_unchanged() {
    let upstream = standin();
    let (hook, seen) = receiver().await;
    let w = start(
        &upstream,
        Some(&hook),
        "reconcile_every_secs = 60\nmax_key_age_days = 0",
        "",
    );
    let config = w.config_path.to_str().unwrap().to_owned();
    let added = w.cli(&[
        "upstream-keys",
        "add",
        "primary",
        "--from-env",
        "T_UPSTREAM_KEY",
        "--project",
        standin::DEFAULT_PROJECT,
        "--activate",
        "--config",
        &config,
    ]);
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    upstream
        .queue_fault_for("/v1/organization", "status=500", 1000)
        .unwrap();
    let (status, error) = admin(
        &w,
        reqwest::Method::POST,
        "/admin/v1/upstream-keys/primary/rotate",
    )
    .await;
    assert_eq!(status, 502, "{error}");
    assert_eq!(error["error"]["code"], "openai_admin_error", "{error}");
    assert!(
        error["error"]["message"].as_str().unwrap().contains("500"),
        "{error}"
    );
    let (_, keys) = admin(&w, reqwest::Method::GET, "/admin/v1/upstream-keys").await;
    let data = keys["data"].as_array().unwrap();
    assert_eq!(data.len(), 1, "no half-made key: {keys}");
    assert_eq!(data[0]["state"], "active");
    assert_eq!(chat(&w, "after").await, 200);
    assert!(upstream.key_is_live(UPSTREAM_KEY));
    eventually("the failure alert", Duration::from_secs(10), || {
        !alerts_of(&seen, "upstream_key_rotation_failed").is_empty()
    })
    .await;
    // A pass reports the Admin API's error instead of failing silently.
    let (_, report) = admin(
        &w,
        reqwest::Method::POST,
        "/admin/v1/upstream-keys/hygiene/run",
    )
    .await;
    let errors = report["errors"].as_array().unwrap();
    assert!(
        errors
            .iter()
            .any(|e| e.as_str().unwrap().contains("inventory")
                && e.as_str().unwrap().contains("500")),
        "{report}"
    );
    // Bad input on the schedule call.
    let response = client()
        .post(format!(
            "{}/admin/v1/upstream-keys/primary/schedule",
            w.admin
        ))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({"rotate_every_days": -3}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "invalid_rotation_schedule");
    let (status, error) = admin(
        &w,
        reqwest::Method::POST,
        "/admin/v1/upstream-keys/nope/rotate",
    )
    .await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (404, Some("upstream_key_not_found"))
    );
    // Once the Admin API answers again, `rotate --now` from the CLI (no gateway involved).
    let cleared = client()
        .delete(format!("http://{}/_standin/faults", upstream.addr()))
        .send()
        .await
        .unwrap();
    assert_eq!(cleared.status().as_u16(), 204);
    let rotated = w.cli(&[
        "upstream-keys",
        "rotate",
        "primary",
        "--now",
        "--config",
        &config,
    ]);
    let out = String::from_utf8_lossy(&rotated.stdout);
    assert!(
        rotated.status.success(),
        "{}",
        String::from_utf8_lossy(&rotated.stderr)
    );
    assert!(out.contains("rotated 'primary' to 'primary-"), "{out}");
    let (_, keys) = admin(&w, reqwest::Method::GET, "/admin/v1/upstream-keys").await;
    let active: Vec<&Value> = keys["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["state"] == "active")
        .collect();
    assert_eq!(active.len(), 1);
    assert!(
        active[0]["name"].as_str().unwrap().starts_with("primary-"),
        "{keys}"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        assert_eq!(chat(&w, "after-rotation").await, 200);
        let last = upstream
            .requests()
            .iter()
            .rev()
            .find(|r| r.path == "/v1/chat/completions")
            .and_then(|r| r.header("authorization").map(str::to_owned));
        if last.as_deref() != Some(format!("Bearer {UPSTREAM_KEY}").as_str()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway never switched to the rotated key"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn project_key_listings_are_followed_across_pages() {
    let upstream = standin();
    for i in 0..105 {
        upstream.add_user_key(standin::DEFAULT_PROJECT, &format!("user-key-{i}"));
    }
    let w = start(&upstream, None, "reconcile_every_secs = 60", "");
    let (status, report) = admin(
        &w,
        reqwest::Method::POST,
        "/admin/v1/upstream-keys/hygiene/run",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(report["errors"], serde_json::json!([]), "{report}");
    assert_eq!(
        report["unmanaged"].as_array().unwrap().len(),
        105,
        "two pages of 100"
    );
    assert_eq!(report["managed"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn hygiene_tables_work_on_postgres() {
    use warden::config::StorageConfig;
    use warden::store::{MinuteCounts, Store, StoredUpstreamKey};
    let store = Store::open(&StorageConfig::Postgres {
        url: postgres_url(),
    })
    .await
    .unwrap();
    let tag = format!("hyg-{:x}", fastrand::u64(..));
    let one = MinuteCounts {
        requests: 2,
        input_tokens: 10,
        output_tokens: 5,
    };
    let minute = 1_000_000_020 * 60;
    store
        .add_upstream_usage(&[(tag.clone(), minute, one)])
        .await
        .unwrap();
    store
        .add_upstream_usage(&[(tag.clone(), minute, one)])
        .await
        .unwrap();
    let rows: Vec<_> = store
        .upstream_usage(minute, minute + 60)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.0 == tag)
        .collect();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0].2,
        MinuteCounts {
            requests: 4,
            input_tokens: 20,
            output_tokens: 10
        }
    );

    store
        .add_upstream_key(&StoredUpstreamKey {
            name: tag.clone(),
            sealed: "x:y".into(),
            state: "standby".into(),
            project: Some("proj_x".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(store.claim_rotation(&tag, 1_000, 600_000).await.unwrap());
    assert!(
        !store.claim_rotation(&tag, 2_000, 600_000).await.unwrap(),
        "one replica at a time"
    );
    assert!(
        store.claim_rotation(&tag, 700_000, 600_000).await.unwrap(),
        "a dead holder's claim is taken over"
    );
    store.release_rotation(&tag).await.unwrap();
    store
        .set_upstream_key_identity(&tag, "key_abc", Some("svc_acct_abc"))
        .await
        .unwrap();
    assert!(store.set_upstream_rotation(&tag, Some(30)).await.unwrap());
    let row = store
        .upstream_keys()
        .await
        .unwrap()
        .into_iter()
        .find(|k| k.name == tag)
        .unwrap();
    assert_eq!(
        (
            row.openai_key_id.as_deref(),
            row.openai_service_account.as_deref(),
            row.rotate_every_days
        ),
        (Some("key_abc"), Some("svc_acct_abc"), Some(30))
    );

    let url = postgres_url();
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    sqlx::query("DELETE FROM upstream_usage WHERE key_name = $1")
        .bind(&tag)
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM upstream_keys WHERE name = $1")
        .bind(&tag)
        .execute(&pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn two_replicas_on_postgres_send_one_leak_alert_and_one_unmanaged_alert() {
    let upstream = standin();
    let (unmanaged_id, _) = upstream.add_user_key(standin::DEFAULT_PROJECT, "cluster-laptop");
    let (hook, seen) = receiver().await;
    let config = format!(
        "[limits]\nenabled = false\n[openai_admin]\nkey_env = \"T_OPENAI_ADMIN\"\nreconcile_every_secs = 2\nsettle_delay_secs = 5\nlookback_minutes = 10\n[alerts]\nmax_per_minute = 1000\n[[alerts.webhooks]]\nurl = \"{hook}\"\nformat = \"json\"\n"
    );
    let replica = || {
        Warden::start_with(Options {
            storage_url: Some(postgres_url()),
            upstream_url: Some(upstream.base_url()),
            extra_toml: config.clone(),
            extra_env: vec![("T_OPENAI_ADMIN".into(), ADMIN_KEY.into())],
            ..Default::default()
        })
    };
    let (_one, _two) = (replica(), replica());
    let leaked_at = now() - 150;
    upstream
        .add_usage_at(UPSTREAM_KEY, leaked_at, 25, 5_000, 1_000)
        .unwrap();
    eventually("the leak alert", Duration::from_secs(20), || {
        !alerts_of(&seen, "upstream_key_used_elsewhere").is_empty()
    })
    .await;
    // Both replicas run several passes more.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let leaks = alerts_of(&seen, "upstream_key_used_elsewhere");
    assert_eq!(leaks.len(), 1, "one alert for the cluster: {leaks:?}");
    let unmanaged: Vec<_> = alerts_of(&seen, "upstream_key_unmanaged")
        .into_iter()
        .filter(|(_, a)| a["fields"]["api_key_id"] == unmanaged_id.as_str())
        .collect();
    assert_eq!(unmanaged.len(), 1, "{unmanaged:?}");
}
