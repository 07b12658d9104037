//! Fault tests of the event log against real processes: a private PostgreSQL stopped for
//! a minute under load, and Warden itself killed with SIGKILL under load. The property in
//! both: every request that got an answer has its event in the store afterwards.
//!
//! The PostgreSQL is private to the test (initdb into a temp dir as the `postgres` OS user,
//! on a free loopback port) and only it is stopped; the shared one is never touched.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;

/// A PostgreSQL cluster in a temp dir, run by the `postgres` OS user on its own port.
struct PrivatePostgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

impl PrivatePostgres {
    fn start() -> PrivatePostgres {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL binaries under /usr/lib/postgresql")
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("bin"))
            .find(|p| p.join("initdb").exists())
            .expect("an initdb under /usr/lib/postgresql/*/bin");
        let dir = tempfile::tempdir().unwrap();
        Command::new("chown")
            .args(["postgres:postgres"])
            .arg(dir.path())
            .status()
            .unwrap();
        let port = free_port();
        let pg = PrivatePostgres { bin, dir, port };
        pg.as_postgres(
            "initdb",
            &[
                "-D",
                &pg.data(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        pg.up();
        pg
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn as_postgres(&self, tool: &str, args: &[&str]) {
        let out = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join(tool))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{tool} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn up(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("pg.log").display().to_string();
        self.as_postgres(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-o",
                &options,
                "-l",
                &log,
                "-w",
                "start",
            ],
        );
    }

    /// An outage: stop at once, dropping every connection.
    fn down(&self) {
        self.as_postgres(
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        );
    }

    fn query(&self, sql: &str) -> Vec<String> {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
            ])
            .args(["-d", "postgres", "-Atc", sql])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args(["-D", &self.data(), "-m", "immediate", "stop"])
            .output();
    }
}

/// Answered requests by id, from clients that run until told to stop. One in four asks
/// without an end user and is refused (a 4xx whose event must be durable before it is
/// answered); the rest are allowed.
struct Load {
    stop: Arc<AtomicBool>,
    answered: Arc<Mutex<Vec<(String, u16)>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(base: String, clients: usize, pause: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(Mutex::new(Vec::new()));
        let tasks = (0..clients)
            .map(|c| {
                let (stop, answered, base) = (stop.clone(), answered.clone(), base.clone());
                tokio::spawn(async move {
                    let http = reqwest::Client::builder()
                        .timeout(Duration::from_secs(10))
                        .build()
                        .unwrap();
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        i += 1;
                        let mut request = http
                            .post(format!("{base}/v1/chat/completions"))
                            .bearer_auth(APP_KEY)
                            .json(&chat_body());
                        if !i.is_multiple_of(4) {
                            request = request.header("x-warden-user", format!("user-{c}"));
                        }
                        // Only a request whose whole answer arrived counts as answered.
                        let Ok(response) = request.send().await else {
                            continue;
                        };
                        let status = response.status().as_u16();
                        let id = response
                            .headers()
                            .get("x-warden-request-id")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned);
                        if response.bytes().await.is_ok() {
                            let id = id.expect("every answer carries x-warden-request-id");
                            answered.lock().unwrap().push((id, status));
                        }
                        tokio::time::sleep(pause).await;
                    }
                })
            })
            .collect();
        Load {
            stop,
            answered,
            tasks,
        }
    }

    fn count(&self) -> usize {
        self.answered.lock().unwrap().len()
    }

    async fn stop(self) -> Vec<(String, u16)> {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            let _ = task.await;
        }
        std::mem::take(&mut *self.answered.lock().unwrap())
    }
}

/// The answered ids with no `request` event among `stored`.
fn missing(answered: &[(String, u16)], stored: &[String]) -> Vec<String> {
    let stored: HashSet<&str> = stored.iter().map(String::as_str).collect();
    answered
        .iter()
        .filter(|(id, _)| !stored.contains(id.as_str()))
        .map(|(id, _)| id.clone())
        .collect()
}

async fn wait_until_stored(
    what: &str,
    answered: &[(String, u16)],
    stored: impl Fn() -> Vec<String>,
) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let lost = missing(answered, &stored());
        if lost.is_empty() || Instant::now() > deadline {
            eprintln!(
                "{what}: {} answered, {} without an event",
                answered.len(),
                lost.len()
            );
            return lost;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn audit_verify(w: &Warden) -> String {
    let out = w.cli(&["audit", "verify"]);
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A 60 s PostgreSQL outage under load: answers go on, every one of them has its event
/// after the store returns, nothing counts as dropped, and the audit chain verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_a_minute_long_postgres_outage_under_load_loses_no_event() {
    let pg = PrivatePostgres::start();
    let w = Warden::start_with(Options {
        storage_url: Some(pg.url()),
        extra_toml: format!(
            "[events]\nspool_dir = \"{}\"\n",
            w_dir_spool(&pg.dir.path().join("warden-spool"))
        ),
        ..Default::default()
    });
    let load = Load::start(w.base.clone(), 4, Duration::from_millis(2));
    eventually_async("load before the outage", || load.count() > 200).await;
    // One warm connection, so the probe's time is Warden's, not a TCP handshake's.
    let probe = client();
    let readyz = format!("{}/readyz", w.admin);
    assert_eq!(probe.get(&readyz).send().await.unwrap().status(), 200);
    pg.down();
    let before = load.count();
    let outage = Instant::now();
    let ready_ms = {
        let started = Instant::now();
        let ready = probe.get(&readyz).send().await.unwrap();
        assert_eq!(ready.status(), 503, "not ready while the store is down");
        started.elapsed().as_millis()
    };
    assert!(
        ready_ms < 100,
        "/readyz took {ready_ms} ms during the outage"
    );
    // The admin API says why, quickly, in OpenAI's envelope.
    let started = Instant::now();
    let keys = client()
        .get(format!("{}/admin/v1/keys", w.admin))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    let admin_ms = started.elapsed().as_millis();
    assert_eq!(keys.status(), 503);
    let error: serde_json::Value = keys.json().await.unwrap();
    let error = &error["error"];
    assert_eq!(error["code"], "store_unavailable", "{error}");
    assert!(
        admin_ms < 1000,
        "the admin API took {admin_ms} ms to refuse"
    );
    tokio::time::sleep(Duration::from_secs(60).saturating_sub(outage.elapsed())).await;
    let during = load.count() - before;
    let spooled = metric(&w, "warden_events_spool_bytes").await;
    let spooled_events = load.count() - before;
    pg.up();
    let back = Instant::now();
    // Replay: everything answered before the store came back is stored.
    let target = load.count() - 1;
    let stored_count = || {
        pg.query("SELECT count(*) FROM events WHERE kind = 'request'")
            .first()
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(0)
    };
    eventually_async("the spooled backlog is replayed", || {
        stored_count() >= target
    })
    .await;
    let replayed_in = back.elapsed();
    let answered = load.stop().await;
    let lost = wait_until_stored("postgres outage", &answered, || {
        pg.query("SELECT request_id FROM events WHERE kind = 'request'")
    })
    .await;
    eprintln!(
        "outage: {during} answered during 60 s down, spool held {spooled} bytes; {spooled_events} spooled events stored {:.2} s after the store returned",
        replayed_in.as_secs_f64()
    );
    assert!(
        during > 100,
        "requests kept being answered during the outage ({during})"
    );
    assert!(spooled > 0.0, "the outage went through the spool");
    assert_eq!(
        lost.len(),
        0,
        "answered requests without an event: {:?}",
        &lost[..lost.len().min(5)]
    );
    assert_eq!(metric(&w, "warden_events_dropped_total").await, 0.0);
    let verify = audit_verify(&w);
    assert!(
        verify.contains("OK"),
        "audit verify after the outage: {verify}"
    );
}

/// SIGKILL under load, then a restart, three times: each new process replays what the
/// killed one spooled, so every answered request has its event. (Without the spool about
/// one answer in a thousand, answered in the last milliseconds, had none.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_under_load_loses_no_event_of_an_answered_request() {
    let mut w = Warden::start();
    let db = w.dir.path().join("warden.db");
    let mut answered = Vec::new();
    for round in 0..3 {
        // Many clients, so answers are being written at the instant of the kill.
        let load = Load::start(w.base.clone(), 32, Duration::ZERO);
        eventually_async("load before the kill", || load.count() > 700).await;
        w.child.kill().unwrap(); // SIGKILL
        w.child.wait().unwrap();
        answered.extend(load.stop().await);
        let stderr = w.dir.path().join(format!("warden.restart-{round}.log"));
        let (child, base, admin) = spawn_serve(&w.config_path, &w.env, &stderr);
        (w.child, w.base, w.admin) = (child, base, admin);
    }
    let refusals = answered.iter().filter(|(_, s)| *s >= 400).count();
    let lost = wait_until_stored("kill -9", &answered, || sqlite_request_ids(&db)).await;
    eprintln!(
        "kill -9: {} answered ({refusals} refused) over three kills",
        answered.len()
    );
    assert!(refusals > 0);
    assert_eq!(
        lost.len(),
        0,
        "answered requests without an event: {:?}",
        &lost[..lost.len().min(5)]
    );
    let verify = audit_verify(&w);
    assert!(
        verify.contains("OK"),
        "audit verify after the restarts: {verify}"
    );
}

/// Kills `w` (SIGKILL, its spool stays) and starts it again on `config`.
fn restart_with(w: &mut Warden, config: &str, name: &str) {
    w.child.kill().unwrap();
    w.child.wait().unwrap();
    std::fs::write(&w.config_path, config).unwrap();
    let stderr = w.dir.path().join(format!("warden.{name}.log"));
    let (child, base, admin) = spawn_serve(&w.config_path, &w.env, &stderr);
    (w.child, w.base, w.admin) = (child, base, admin);
}

fn sqlite_request_ids(db: &Path) -> Vec<String> {
    let out = Command::new("sqlite3")
        .arg(db)
        .arg("SELECT request_id FROM events WHERE kind = 'request'")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn w_dir_spool(dir: &Path) -> String {
    dir.display().to_string()
}

async fn eventually_async(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Started while PostgreSQL is down: Warden serves config keys at once (not ready, the
/// admin API says why), refuses with 503 `store_unavailable` when the identifier secret
/// lives only in the store, and catches up by itself when the store comes back: ready,
/// serving, and the events answered meanwhile stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_while_postgres_is_down_and_catches_up_when_it_returns() {
    let pg = PrivatePostgres::start();
    pg.down();
    let started = Instant::now();
    let mut w = Warden::start_with(Options {
        storage_url: Some(pg.url()),
        extra_toml: format!(
            "[events]\nspool_dir = \"{}\"\n",
            w_dir_spool(&pg.dir.path().join("warden-spool"))
        ),
        ..Default::default()
    });
    let start_ms = started.elapsed().as_millis();
    assert!(start_ms < 10_000, "start took {start_ms} ms");

    let probe = client();
    let health = probe
        .get(format!("{}/healthz", w.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let readyz = format!("{}/readyz", w.admin);
    let began = Instant::now();
    let ready = probe.get(&readyz).send().await.unwrap();
    let ready_ms = began.elapsed().as_millis();
    assert_eq!(ready.status(), 503);
    let ready: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(ready["reason"], "store_unavailable", "{ready}");
    assert!(ready_ms < 100, "/readyz took {ready_ms} ms");

    // Config keys serve at once (the identifier secret is configured).
    let served = post(&w, "/v1/chat/completions", Some("alice"), &chat_body()).await;
    assert_eq!(served.status(), 200);
    let first_id = served.headers()["x-warden-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let (status, error) = admin_get_with_status(&w, "/admin/v1/keys").await;
    assert_eq!(status, 503);
    assert_eq!(error["error"]["code"], "store_unavailable", "{error}");

    // An operator who wants the replica in rotation meanwhile says so.
    let text = std::fs::read_to_string(&w.config_path).unwrap();
    let degraded_ok = text.replace("[storage]\n", "[storage]\nready_without_store = true\n");
    assert_ne!(text, degraded_ok);
    restart_with(&mut w, &degraded_ok, "degraded");
    let ready = probe
        .get(format!("{}/readyz", w.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let ready: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(ready["status"], "degraded", "{ready}");

    // Without a configured secret the generated one is in the store: nothing can be
    // forwarded with an end user's identity until it is read, so not ready either way.
    let without_secret = degraded_ok.replace(
        "[identity]\nsafety_identifier_secret_env = \"T_SAFETY_SECRET\"\n",
        "",
    );
    assert_ne!(
        degraded_ok, without_secret,
        "the test config names the secret"
    );
    restart_with(&mut w, &without_secret, "no-secret");
    let ready = probe
        .get(format!("{}/readyz", w.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let refused = post(&w, "/v1/chat/completions", Some("alice"), &chat_body()).await;
    let error = expect_error(refused, 503).await;
    assert_eq!(error["code"], "store_unavailable", "{error}");
    assert!(
        w.standin
            .requests()
            .iter()
            .filter(|r| r.path == "/v1/chat/completions")
            .count()
            == 1,
        "only the first request reached upstream"
    );

    pg.up();
    let back = Instant::now();
    let readyz = format!("{}/readyz", w.admin);
    let mut status = 0;
    while back.elapsed() < Duration::from_secs(30) {
        status = probe.get(&readyz).send().await.unwrap().status().as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200, "ready once the store answers");
    eprintln!(
        "ready {:.2} s after PostgreSQL came back",
        back.elapsed().as_secs_f64()
    );
    let served = post(&w, "/v1/chat/completions", Some("alice"), &chat_body()).await;
    assert_eq!(served.status(), 200);
    let stored_secret =
        pg.query("SELECT count(*) FROM settings WHERE name = 'safety_identifier_secret'");
    assert_eq!(stored_secret, vec!["1".to_owned()]);
    let (status, _) = admin_get_with_status(&w, "/admin/v1/keys").await;
    assert_eq!(status, 200);
    // The first process was killed during the outage; its spooled event is replayed.
    let answered = vec![(first_id, 200)];
    let lost = wait_until_stored("started without the store", &answered, || {
        pg.query("SELECT request_id FROM events WHERE kind = 'request'")
    })
    .await;
    assert!(
        lost.is_empty(),
        "the outage's answer has no event: {lost:?}"
    );
}
