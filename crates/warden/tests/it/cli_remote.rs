//! The operator CLI against a running Warden's admin API (`--admin-url`): every command
//! goes through the API (the CLI is given a config path that does not exist, so it cannot
//! have used the store), takes effect on the gateway, prints what the local mode prints,
//! and fails with advice when the API cannot be reached or refuses the token.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::Value;

/// `warden ARGS --admin-url <w.admin>` with the admin token in WARDEN_ADMIN_TOKEN.
fn remote(w: &Warden, args: &[&str]) -> Output {
    remote_with(&w.admin, ADMIN_TOKEN, args)
}

fn remote_with(url: &str, token: &str, args: &[&str]) -> Output {
    Command::new(warden_bin())
        .args(args)
        .args(["--admin-url", url])
        .env("WARDEN_CONFIG", "/nonexistent/warden-remote-test.toml")
        .env("WARDEN_ADMIN_TOKEN", token)
        .env_remove("WARDEN_ADMIN_URL")
        .env_remove("WARDEN_ADMIN_TOKEN_ENV")
        .output()
        .unwrap()
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn json(out: Output) -> Value {
    serde_json::from_str(ok(out).trim()).unwrap()
}

async fn chat(w: &Warden, key: &str, user: Option<&str>) -> u16 {
    let mut request = client()
        .post(w.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(&chat_body());
    if let Some(user) = user {
        request = request.header("x-warden-user", user);
    }
    request.send().await.unwrap().status().as_u16()
}

async fn until_status(w: &Warden, key: &str, user: Option<&str>, want: u16) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = chat(w, key, user).await;
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "wanted {want}, still {got}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn keys_are_created_listed_and_revoked_through_the_admin_api() {
    let w = Warden::start();
    let name = format!("remote-{:08x}", fastrand::u32(..));
    let created = json(remote(&w, &["keys", "create", "--name", &name, "--json"]));
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("wk-"), "{created}");
    until_status(&w, &secret, Some("alice"), 200).await;

    let table = ok(remote(&w, &["keys", "list"]));
    let row = table.lines().find(|l| l.starts_with(&name)).unwrap();
    assert!(row.contains("store") && row.contains("active"), "{table}");
    assert!(!table.contains(&secret), "a listing never shows secrets");
    // The API's listing and the store's are the same document once traffic has settled.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let from_api = json(remote(&w, &["keys", "list", "--json"]));
        let from_store = json(w.cli(&["keys", "list", "--json"]));
        if from_api == from_store {
            let mine = from_api
                .as_array()
                .unwrap()
                .iter()
                .find(|k| k["name"] == name.as_str())
                .unwrap()
                .clone();
            assert_eq!(mine["status"], "active");
            assert!(mine["requests"].as_i64().unwrap() >= 1, "{mine}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "local and remote listings differ:\n{from_api:#}\n{from_store:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let duplicate = remote(&w, &["keys", "create", "--name", &name]);
    assert!(!duplicate.status.success());
    assert!(String::from_utf8_lossy(&duplicate.stderr).contains("already exists"));

    let rotated = json(remote(
        &w,
        &["keys", "rotate", &name, "--overlap-hours", "0", "--json"],
    ));
    let rotated_secret = rotated["secret"].as_str().unwrap().to_owned();
    until_status(&w, &rotated_secret, Some("alice"), 200).await;

    assert!(ok(remote(&w, &["keys", "revoke", &name])).contains("revoked"));
    until_status(&w, &rotated_secret, Some("alice"), 401).await;
    let listed = json(remote(&w, &["keys", "list", "--json"]));
    let mine = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == name.as_str())
        .unwrap()
        .clone();
    assert_eq!(mine["status"], "revoked");
    let again = remote(&w, &["keys", "revoke", &name]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("no active key named"));
    // Config keys cannot be revoked from the API either.
    let declared = remote(&w, &["keys", "revoke", "app"]);
    assert!(String::from_utf8_lossy(&declared.stderr).contains("declared in the config file"));
}

#[tokio::test]
async fn users_are_banned_and_unbanned_through_the_admin_api() {
    let w = Warden::start();
    let user = format!("mallory-{:08x}", fastrand::u32(..));
    assert_eq!(chat(&w, APP_KEY, Some(&user)).await, 200);
    // The sighting reaches the store in the background; without --key the CLI looks it up.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let out = remote(&w, &["users", "ban", &user, "--reason", "testing"]);
        if out.status.success() {
            let said = String::from_utf8_lossy(&out.stdout);
            assert!(said.contains("(key app): banned"), "{said}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The admin API acts on this gateway at once: the very next request is refused.
    assert_eq!(chat(&w, APP_KEY, Some(&user)).await, 403);

    let shown = json(remote(&w, &["users", "show", &user, "--json"]));
    assert_eq!(shown["status"], "banned");
    assert_eq!(shown["status_reason"], "testing");
    let listed = ok(remote(&w, &["users", "list", "--sanctioned"]));
    assert!(listed.contains(&user), "{listed}");
    // The same end user, shown from the store, is the same document.
    let local = json(w.cli(&["users", "show", &user, "--json"]));
    assert_eq!(local["status"], shown["status"]);
    assert_eq!(local["safety_identifier"], shown["safety_identifier"]);
    assert_eq!(local["rung"], shown["rung"]);

    let lifted = ok(remote(&w, &["users", "unban", &user, "--key", "app"]));
    assert!(lifted.contains("(key app): active"), "{lifted}");
    until_status(&w, APP_KEY, Some(&user), 200).await;

    let unknown = remote(&w, &["users", "ban", "never-seen-user"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("pass --key KEY"));
}

#[tokio::test]
async fn lockdown_report_audit_and_cases_work_through_the_admin_api() {
    let w = Warden::start();
    assert_eq!(chat(&w, APP_KEY, Some("alice")).await, 200);
    assert_eq!(chat(&w, OPTIONAL_KEY, None).await, 200);

    assert_eq!(
        ok(remote(
            &w,
            &["lockdown", "on", "--reason", "OpenAI warning e-mail"]
        ))
        .trim(),
        "lockdown on"
    );
    // Applied at once on the gateway the API reached: no end user, no service.
    assert_eq!(chat(&w, OPTIONAL_KEY, None).await, 403);
    let state = json(remote(&w, &["lockdown", "status", "--json"]));
    assert_eq!(state["on"], true);
    assert_eq!(state["reason"], "OpenAI warning e-mail");
    // The store says the same, printed the same way.
    assert_eq!(
        ok(remote(&w, &["lockdown", "status"])),
        ok(w.cli(&["lockdown", "status"]))
    );
    assert_eq!(ok(remote(&w, &["lockdown", "off"])).trim(), "lockdown off");
    assert_eq!(chat(&w, OPTIONAL_KEY, None).await, 200);

    let today = {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let out = Command::new("date")
            .args(["-u", "-d", &format!("@{secs}"), "+%Y-%m-%d"])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    // Requests reach the store in the background.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let report = json(remote(
            &w,
            &["report", "--since", &today, "--format", "json"],
        ));
        // Three answered, one refused by lockdown.
        if report["requests"]["total"] == 4 && report["requests"]["by_outcome"]["blocked"] == 1 {
            assert!(
                report["admin"].to_string().contains("lockdown"),
                "{report:#}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "report lacks traffic: {report:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let md = ok(remote(&w, &["report", "--since", &today, "--format", "md"]));
    assert!(md.starts_with('#'), "{md}");
    let bad = remote(&w, &["report", "--since", "last tuesday"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--since"));

    let verified = ok(remote(&w, &["audit", "verify"]));
    assert!(verified.contains("OK: "), "{verified}");
    let verified = json(remote(&w, &["audit", "verify", "--json"]));
    assert_eq!(verified["ok"], true);
    assert!(verified["events"].as_i64().unwrap() >= 3, "{verified}");

    let cases = json(remote(&w, &["cases", "list", "--json"]));
    assert_eq!(cases["cases"], serde_json::json!([]));
    let missing = remote(&w, &["cases", "show", "C-none"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("No case 'C-none'"));

    // A wrong token: refused, with the variable to fix named.
    let refused = remote_with(&w.admin, "not-the-admin-token-000", &["keys", "list"]);
    assert_eq!(refused.status.code(), Some(1));
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("admin token rejected") && said.contains("WARDEN_ADMIN_TOKEN"),
        "{said}"
    );
}

#[tokio::test]
async fn an_unreachable_admin_api_or_a_missing_token_says_what_to_do() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    for args in [
        &["keys", "list"][..],
        &["users", "ban", "bob", "--key", "app"],
        &["lockdown", "on"],
        &["audit", "verify"],
        &["report", "--since", "2026-01-01"],
    ] {
        let out = remote_with(&url, ADMIN_TOKEN, args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(
            said.contains(&format!("cannot reach the Warden admin API at {url}"))
                && said.contains("warden serve"),
            "{args:?}: {said}"
        );
    }

    let out = Command::new(warden_bin())
        .args(["keys", "list", "--admin-url", &url])
        .env_remove("WARDEN_ADMIN_TOKEN")
        .env_remove("WARDEN_ADMIN_TOKEN_ENV")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("WARDEN_ADMIN_TOKEN is not set"), "{said}");
}

#[tokio::test]
async fn upstream_keys_are_rotated_through_the_admin_api() {
    use base64::Engine;
    const NEW_UPSTREAM_KEY: &str = "sk-standin-remote-rotated-0123456789";
    let w = Warden::start_with(Options {
        extra_env: vec![(
            "WARDEN_MASTER_KEY".into(),
            base64::engine::general_purpose::STANDARD.encode([7u8; 32]),
        )],
        ..Default::default()
    });
    w.standin.accept_also(NEW_UPSTREAM_KEY);
    // The key travels from this process's environment to the gateway, which seals it.
    let out = Command::new(warden_bin())
        .args([
            "keys",
            "rotate-upstream",
            "remote-1",
            "--from-env",
            "T_REMOTE_NEW",
        ])
        .args(["--admin-url", &w.admin])
        .env("WARDEN_CONFIG", "/nonexistent/warden-remote-test.toml")
        .env("WARDEN_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("T_REMOTE_NEW", NEW_UPSTREAM_KEY)
        .output()
        .unwrap();
    assert!(ok(out).contains("made it the active upstream key"));
    let listed = json(remote(&w, &["upstream-keys", "list", "--json"]));
    assert_eq!(listed[0]["name"], "remote-1");
    assert_eq!(listed[0]["state"], "active");
    assert_eq!(listed, json(w.cli(&["upstream-keys", "list", "--json"])));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        assert_eq!(chat(&w, APP_KEY, Some("alice")).await, 200);
        let last = w
            .standin
            .requests()
            .iter()
            .rev()
            .find(|r| r.path == "/v1/chat/completions")
            .and_then(|r| r.headers.get("authorization").cloned());
        if last.as_deref() == Some(&format!("Bearer {NEW_UPSTREAM_KEY}")) {
            break;
        }
        assert!(Instant::now() < deadline, "still on the old key: {last:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok(remote(&w, &["upstream-keys", "retire", "remote-1"])).contains("retired"));
    let missing = remote(&w, &["upstream-keys", "activate", "nope"]);
    assert_eq!(missing.status.code(), Some(1));
}
