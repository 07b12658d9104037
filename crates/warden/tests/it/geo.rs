//! Geo policy through the real binary: a small real `.mmdb` written here maps test
//! networks to countries; requests arrive from those networks via `X-Forwarded-For`
//! through a trusted proxy (the test itself, on loopback).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::*;
use std::path::Path;

const RU_IP: &str = "77.88.21.11";
const DE_IP: &str = "85.214.132.117";
/// In no network of the test database.
const UNPLACED_IP: &str = "8.8.8.8";

fn write_country_db(path: &Path) {
    #[derive(serde::Serialize)]
    struct Country {
        iso_code: &'static str,
    }
    #[derive(serde::Serialize)]
    struct Record {
        country: Country,
    }
    let mut writer = mmdb_writer::Writer::new("Warden-Test-Country");
    for (net, code) in [
        ("77.88.0.0/18", "RU"),
        ("85.214.0.0/16", "DE"),
        ("90.0.0.0/9", "FR"),
        ("3.0.0.0/9", "US"),
        ("126.0.0.0/8", "JP"),
    ] {
        writer
            .insert(
                net.parse::<ipnet::IpNet>().unwrap(),
                &Record {
                    country: Country { iso_code: code },
                },
            )
            .unwrap();
    }
    std::fs::write(path, writer.to_bytes().unwrap()).unwrap();
}

fn start(geo: &str) -> (Warden, tempfile::TempDir) {
    let dbdir = tempfile::tempdir().unwrap();
    let db = dbdir.path().join("country.mmdb");
    write_country_db(&db);
    let w = Warden::start_with(Options {
        server_toml: format!(
            "{}trusted_proxies = [\"127.0.0.1\"]\n",
            Options::default().server_toml
        ),
        extra_toml: format!("[geo]\ndatabase = \"{}\"\n{geo}\n", db.display()),
        ..Options::default()
    });
    (w, dbdir)
}

async fn chat_from(w: &Warden, ip: &str) -> reqwest::Response {
    client()
        .post(w.url("/v1/chat/completions"))
        .bearer_auth(APP_KEY)
        .header("x-warden-user", "alice")
        .header("x-forwarded-for", ip)
        .json(&chat_body())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn unsupported_countries_are_refused_as_openai_does_and_the_country_is_recorded() {
    let (mut w, _db) = start("");
    let error = expect_error(chat_from(&w, RU_IP).await, 403).await;
    assert_eq!(error["code"], "unsupported_country_region_territory");
    assert_eq!(error["type"], "request_forbidden");
    assert!(error["message"].as_str().unwrap().contains("RU"), "{error}");
    assert_eq!(chat_from(&w, DE_IP).await.status(), 200);
    // Not placed by the database: allowed by default.
    assert_eq!(chat_from(&w, UNPLACED_IP).await.status(), 200);
    // The refused request never reached upstream.
    let forwarded = w
        .standin
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/chat/completions"))
        .count();
    assert_eq!(forwarded, 2);

    assert!(w.stop().success());
    let events: Vec<serde_json::Value> = w
        .stderr()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "warden::events")
        .collect();
    let country_of = |ip: &str| {
        events
            .iter()
            .find(|e| e["client_ip"] == ip)
            .map(|e| e["country"].clone())
    };
    assert_eq!(country_of(RU_IP), Some("RU".into()));
    assert_eq!(country_of(DE_IP), Some("DE".into()));
    assert_eq!(country_of(UNPLACED_IP), Some(serde_json::Value::Null));

    // And in the store.
    let url = format!("sqlite://{}", w.dir.path().join("warden.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let stored: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT client_ip, country FROM events ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert!(
        stored.contains(&(RU_IP.to_string(), Some("RU".to_string()))),
        "{stored:?}"
    );
}

#[tokio::test]
async fn unknown_block_refuses_unplaced_addresses_and_the_deny_list_is_configurable() {
    let (w, _db) = start("unknown = \"block\"\ndeny = [\"de\"]");
    let error = expect_error(chat_from(&w, UNPLACED_IP).await, 403).await;
    assert_eq!(error["code"], "unsupported_country_region_territory");
    assert!(error["message"]
        .as_str()
        .unwrap()
        .contains("could not be determined"));
    // DE is denied by this list; RU is not in it.
    expect_error(chat_from(&w, DE_IP).await, 403).await;
    assert_eq!(chat_from(&w, RU_IP).await.status(), 200);
}

#[tokio::test]
async fn an_end_user_hopping_between_countries_is_reported() {
    let (w, _db) = start("");
    // Four countries in a few seconds: over the default line of three.
    for ip in [DE_IP, "90.12.1.1", "3.5.1.1", "126.1.1.1"] {
        assert_eq!(chat_from(&w, ip).await.status(), 200);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let report: serde_json::Value = admin_get(&w, "/admin/v1/risk").await;
        let found = report["report"]["key_sharing"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["actor"] == "user:app/alice")
            .cloned();
        if let Some(finding) = found {
            assert!(
                finding["detail"].as_str().unwrap().contains("4 countries"),
                "{finding}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not reported: {report:#}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// A webhook receiver that keeps every JSON alert it is sent.
async fn alert_receiver() -> (
    std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
    std::net::SocketAddr,
) {
    let seen: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>> = Default::default();
    let sink = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::Json<serde_json::Value>| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push(body.0);
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (seen, addr)
}

#[tokio::test]
async fn a_key_used_from_a_new_country_raises_one_alert_shared_by_replicas() {
    let (seen, addr) = alert_receiver().await;
    let dbdir = tempfile::tempdir().unwrap();
    let db = dbdir.path().join("country.mmdb");
    write_country_db(&db);
    let options = |storage_url: Option<String>| {
        Options {
        storage_url,
        server_toml: format!(
            "{}trusted_proxies = [\"127.0.0.1\"]\n",
            Options::default().server_toml
        ),
        extra_toml: format!(
            "[geo]\ndatabase = \"{}\"\n[alerts]\n[[alerts.webhooks]]\nurl = \"http://{addr}/hook\"\nformat = \"json\"\n",
            db.display()
        ),
        ..Options::default()
    }
    };
    let first = Warden::start_with(options(None));
    let store_url = format!("sqlite://{}", first.dir.path().join("warden.db").display());
    let new_country_alerts = || -> Vec<serde_json::Value> {
        seen.lock()
            .unwrap()
            .iter()
            .filter(|a| a["kind"] == "key_new_country")
            .cloned()
            .collect()
    };
    let settle = || tokio::time::sleep(std::time::Duration::from_millis(1500));

    // The key's first country, again, and an address no database places: no alert.
    for ip in [DE_IP, DE_IP, UNPLACED_IP, "85.214.1.1"] {
        assert_eq!(chat_from(&first, ip).await.status(), 200);
    }
    settle().await;
    assert_eq!(new_country_alerts(), Vec::<serde_json::Value>::new());

    // A second country: one alert naming the key and the country.
    assert_eq!(chat_from(&first, "90.12.1.1").await.status(), 200);
    eventually(
        "the new-country alert",
        std::time::Duration::from_secs(10),
        || !new_country_alerts().is_empty(),
    )
    .await;
    let alert = new_country_alerts()[0].clone();
    assert_eq!(alert["fields"]["key"], "app", "{alert}");
    assert_eq!(alert["fields"]["country"], "FR", "{alert}");
    assert_eq!(
        alert["fields"]["earlier_countries"],
        serde_json::json!(["DE"])
    );
    assert!(
        alert["title"].as_str().unwrap().contains("'app'"),
        "{alert}"
    );

    // A replica on the same store already knows FR (no alert); its first US request is new.
    let second = Warden::start_with(options(Some(store_url.clone())));
    assert_eq!(chat_from(&second, "90.12.1.1").await.status(), 200);
    assert_eq!(chat_from(&first, "90.99.1.1").await.status(), 200);
    settle().await;
    assert_eq!(new_country_alerts().len(), 1, "{:?}", new_country_alerts());
    assert_eq!(chat_from(&second, "3.5.1.1").await.status(), 200);
    eventually(
        "the second new-country alert",
        std::time::Duration::from_secs(10),
        || new_country_alerts().len() == 2,
    )
    .await;
    assert_eq!(new_country_alerts()[1]["fields"]["country"], "US");
    settle().await;
    assert_eq!(new_country_alerts().len(), 2, "{:?}", new_country_alerts());

    // The admin API lists the key's countries, first seen first.
    let keys: serde_json::Value = admin_get(&first, "/admin/v1/keys").await;
    let app = keys["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "app")
        .unwrap()
        .clone();
    assert_eq!(
        app["countries"],
        serde_json::json!(["DE", "FR", "US"]),
        "{app}"
    );

    // Each alert is also an event on record.
    let pool = sqlx::SqlitePool::connect(&store_url).await.unwrap();
    let recorded: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT key_name, country FROM events WHERE kind = 'alert' AND reason = 'key_new_country' ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let recorded: Vec<(String, Option<String>)> = recorded;
    assert_eq!(
        recorded,
        vec![
            ("app".to_string(), Some("FR".to_string())),
            ("app".to_string(), Some("US".to_string()))
        ]
    );
}
