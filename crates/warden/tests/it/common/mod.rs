//! Starts the real `warden` binary on port 0 in front of an in-process stand-in upstream.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const UPSTREAM_KEY: &str = "sk-standin-upstream-SECRET-9f8e7d6c";
pub const APP_KEY: &str = "wk-test-app-0123456789abcdef";
pub const TRUSTED_KEY: &str = "wk-test-trusted-0123456789abcdef";
pub const OPTIONAL_KEY: &str = "wk-test-optional-0123456789abcdef";
pub const JWT_SECRET: &str = "jwt-app-secret-0123456789abcdef";
pub const SAFETY_SECRET: &str = "safety-secret-0123456789abcdef";
/// The admin API token every test gateway accepts.
pub const ADMIN_TOKEN: &str = "admin-token-0123456789abcdef";

pub fn postgres_url() -> String {
    std::env::var("WARDEN_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

pub struct Options {
    pub storage_url: Option<String>,
    pub extra_toml: String,
    pub server_toml: String,
    pub upstream_url: Option<String>,
    pub upstream_timeout_secs: u64,
    /// Extra keys for the `[upstream]` section (retries, breaker, pacing).
    pub upstream_toml: String,
    pub extra_env: Vec<(String, String)>,
    /// Moderation (on by default in Warden) is off in tests unless asked for, so the
    /// stand-in's request log holds only the calls a test makes.
    pub moderation: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            storage_url: None,
            extra_toml: String::new(),
            server_toml: "max_body_bytes = 65536\nrequest_body_timeout_secs = 2\n".into(),
            upstream_url: None,
            upstream_timeout_secs: 30,
            upstream_toml: String::new(),
            extra_env: Vec::new(),
            moderation: false,
        }
    }
}

pub struct Warden {
    pub child: Child,
    pub base: String,
    pub admin: String,
    pub standin: standin::Handle,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub stderr_path: PathBuf,
    pub env: HashMap<String, String>,
}

pub fn warden_bin() -> &'static str {
    env!("CARGO_BIN_EXE_warden")
}

impl Warden {
    pub fn start() -> Warden {
        Warden::start_with(Options::default())
    }

    pub fn start_with(options: Options) -> Warden {
        let standin = standin::spawn(standin::Options {
            api_key: Some(UPSTREAM_KEY.into()),
            ..Default::default()
        })
        .expect("stand-in starts");
        let dir = tempfile::tempdir().unwrap();
        let storage = options
            .storage_url
            .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("warden.db").display()));
        let upstream = options.upstream_url.unwrap_or_else(|| standin.base_url());
        // Each test's spool in its own directory (the PostgreSQL default is under the
        // working directory, shared by every test); a test with its own `[events]`
        // section names its spool there.
        let mut extra_toml = options.extra_toml;
        if !extra_toml.contains("[events]") {
            extra_toml.push_str(&format!(
                "\n[events]\nspool_dir = \"{}\"\n",
                dir.path().join("spool").display()
            ));
        }
        let config = format!(
            r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
{server}

[upstream]
base_url = "{upstream}"
api_key_env = "T_UPSTREAM_KEY"
timeout_secs = {timeout}
{upstream_extra}

[storage]
url = "{storage}"

[identity]
safety_identifier_secret_env = "T_SAFETY_SECRET"

[log]
level = "info"
format = "json"

[admin]
token_env = "T_ADMIN_TOKEN"

[[keys]]
name = "app"
secret_env = "T_APP_KEY"
end_user = "required"

[[keys]]
name = "trusted"
secret_env = "T_TRUSTED_KEY"
end_user = "optional"
trusted_user_field = true

[[keys]]
name = "optional"
secret_env = "T_OPTIONAL_KEY"
end_user = "optional"

[[keys]]
name = "web"
end_user = "required"
[keys.jwt]
hs256_secret_env = "T_JWT_SECRET"
issuer = "test-app"
{extra}
"#,
            server = options.server_toml,
            timeout = options.upstream_timeout_secs,
            upstream_extra = options.upstream_toml,
            extra = if options.moderation {
                extra_toml
            } else {
                format!("{extra_toml}\n[safety.moderation]\nenabled = false\n")
            },
        );
        let config_path = dir.path().join("warden.toml");
        std::fs::write(&config_path, config).unwrap();
        let mut env: HashMap<String, String> = [
            ("T_UPSTREAM_KEY", UPSTREAM_KEY),
            ("T_SAFETY_SECRET", SAFETY_SECRET),
            ("T_APP_KEY", APP_KEY),
            ("T_TRUSTED_KEY", TRUSTED_KEY),
            ("T_OPTIONAL_KEY", OPTIONAL_KEY),
            ("T_JWT_SECRET", JWT_SECRET),
            ("T_ADMIN_TOKEN", ADMIN_TOKEN),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        env.extend(options.extra_env);
        let stderr_path = dir.path().join("warden.stderr.log");
        let (child, base, admin) = spawn_serve(&config_path, &env, &stderr_path);
        Warden {
            child,
            base,
            admin,
            standin,
            dir,
            config_path,
            stderr_path,
            env,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Runs another `warden` subcommand against the same config and environment.
    /// A `cli` that can run on another thread (a blocking task) while the test goes on.
    pub fn clone_cli_env(&self) -> impl Fn(&[&str]) -> std::process::Output + Send + 'static {
        let (config, env) = (self.config_path.clone(), self.env.clone());
        move |args: &[&str]| {
            Command::new(warden_bin())
                .args(args)
                .env("WARDEN_CONFIG", &config)
                .env_remove("WARDEN_ADMIN_URL")
                .envs(&env)
                .output()
                .unwrap()
        }
    }

    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(warden_bin())
            .args(args)
            .env("WARDEN_CONFIG", &self.config_path)
            // Local mode unless a test asks for the admin API.
            .env_remove("WARDEN_ADMIN_URL")
            .envs(&self.env)
            .output()
            .unwrap()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// SIGTERM and wait: the gateway drains and flushes its events.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("warden did not stop within 20 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Warden {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `warden serve` and waits for its "listening" line.
pub fn spawn_serve(
    config: &Path,
    env: &HashMap<String, String>,
    stderr: &Path,
) -> (Child, String, String) {
    let mut child = Command::new(warden_bin())
        .args(["serve", "--config"])
        .arg(config)
        .env_remove("RUST_LOG")
        .env_remove("WARDEN_LOG_FORMAT")
        .env_remove("OPENAI_API_KEY")
        .envs(env)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(stderr).unwrap())
        .spawn()
        .expect("warden binary runs");
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let Some(rest) = line.strip_prefix("warden listening on ") else {
        let _ = child.kill();
        let log = std::fs::read_to_string(stderr).unwrap_or_default();
        panic!("warden did not start: stdout {line:?}\nstderr:\n{log}");
    };
    // "http://A (admin http://B)"
    let mut parts = rest.trim().split(" (admin ");
    let base = parts.next().unwrap().to_owned();
    let admin = parts.next().unwrap().trim_end_matches(')').to_owned();
    (child, base, admin)
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

pub fn chat_body() -> serde_json::Value {
    serde_json::json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Hello there"}]
    })
}

/// A POST through Warden with the app key and an end user.
pub async fn post(
    w: &Warden,
    path: &str,
    user: Option<&str>,
    body: &serde_json::Value,
) -> reqwest::Response {
    let mut request = client().post(w.url(path)).bearer_auth(APP_KEY).json(body);
    if let Some(user) = user {
        request = request.header("x-warden-user", user);
    }
    request.send().await.unwrap()
}

/// A chat request as user alice that asks the stand-in to misbehave (`x-standin-fault`).
pub async fn chat_with_fault(w: &Warden, fault: &str) -> reqwest::Response {
    client()
        .post(w.url("/v1/chat/completions"))
        .bearer_auth(APP_KEY)
        .header("x-warden-user", "alice")
        .header("x-standin-fault", fault)
        .json(&chat_body())
        .send()
        .await
        .unwrap()
}

/// Asserts OpenAI's error envelope with all four keys and returns the error object.
pub async fn expect_error(response: reqwest::Response, status: u16) -> serde_json::Value {
    assert_eq!(response.status().as_u16(), status, "unexpected status");
    assert!(response.headers().contains_key("x-warden-request-id"));
    let body: serde_json::Value = response.json().await.unwrap();
    let error = body["error"].clone();
    for key in ["message", "type", "param", "code"] {
        assert!(
            error.get(key).is_some(),
            "error envelope lacks {key}: {body}"
        );
    }
    error
}

pub fn hs256_token(sub: &str, issuer: &str, secret: &str) -> String {
    let claims = serde_json::json!({
        "sub": sub,
        "iss": issuer,
        "exp": jsonwebtoken::get_current_timestamp() + 600,
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// Waits for a condition that another process makes true.
pub async fn eventually(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The admin listener's whole `/metrics` text.
pub async fn metrics_text(w: &Warden) -> String {
    client()
        .get(format!("{}/metrics", w.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// An admin API GET with the admin token, as JSON (whatever the status).
pub async fn admin_get(w: &Warden, path: &str) -> serde_json::Value {
    admin_get_with_status(w, path).await.1
}

/// An admin API GET with the admin token: the status and the JSON body.
pub async fn admin_get_with_status(w: &Warden, path: &str) -> (u16, serde_json::Value) {
    let answer = client()
        .get(format!("{}{path}", w.admin))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    (answer.status().as_u16(), answer.json().await.unwrap())
}

/// A GET of an open admin-listener path (`/readyz`, `/healthz`), as JSON.
pub async fn admin_get_open(w: &Warden, path: &str) -> serde_json::Value {
    client()
        .get(format!("{}{path}", w.admin))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// One value from the admin listener's `/metrics` (a metric without labels).
pub async fn metric(w: &Warden, name: &str) -> f64 {
    let text = metrics_text(w).await;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{text}"))
        .parse()
        .unwrap()
}

/// A loopback port that was free a moment ago, for servers a test starts itself.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Chat requests from `workers` clients (end users `load-N`, app key) back to back until
/// stopped; every answer's status is kept.
pub struct ChatLoad {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<Vec<u16>>>,
}

impl ChatLoad {
    pub fn start(w: &Warden, workers: usize) -> ChatLoad {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let workers = (0..workers)
            .map(|worker| {
                let (stop, url) = (stop.clone(), w.url("/v1/chat/completions"));
                tokio::spawn(async move {
                    let mut statuses = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let status = client()
                            .post(&url)
                            .bearer_auth(APP_KEY)
                            .header("x-warden-user", format!("load-{worker}"))
                            .json(&chat_body())
                            .send()
                            .await
                            .unwrap()
                            .status()
                            .as_u16();
                        statuses.push(status);
                    }
                    statuses
                })
            })
            .collect();
        ChatLoad { stop, workers }
    }

    /// Stops the clients and returns every status they got.
    pub async fn stop(self) -> Vec<u16> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut statuses = Vec::new();
        for worker in self.workers {
            statuses.extend(worker.await.unwrap());
        }
        statuses
    }
}
