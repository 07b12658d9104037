//! Config hot reload, on SIGHUP, a change of the file, or `POST /admin/v1/config/reload`.
//! The file is read, validated and built into a new snapshot beside the running one,
//! then swapped in with one atomic store; a file with problems changes nothing and every
//! problem is reported. Settings that need a restart are applied at the next start and
//! listed (log and API) until then.

pub mod restart;
pub mod snapshot;
pub mod watch;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use serde::Serialize;

pub use snapshot::{Live, Snapshot};

use crate::config::{Config, EnvSource, Problems, Secrets};
use crate::gateway::Gateway;

/// What started a reload, for the log and the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    Signal,
    FileChange,
    AdminApi,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Signal => "signal",
            Trigger::FileChange => "file_change",
            Trigger::AdminApi => "admin_api",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ProblemView {
    pub path: String,
    pub message: String,
}

/// The result of one reload.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub reloaded: bool,
    /// The generation serving requests after this reload.
    pub generation: u64,
    pub trigger: Trigger,
    /// Why the file was rejected; empty when it was applied.
    pub problems: Vec<ProblemView>,
    /// Key paths whose new values take effect only after a restart.
    pub restart_required: Vec<String>,
    pub at_ms: i64,
    pub took_ms: f64,
}

struct Source {
    path: PathBuf,
    env: Arc<dyn EnvSource>,
}

#[derive(Default)]
struct FileState {
    /// SHA-256 of the file the serving generation came from.
    applied: Option<String>,
    /// SHA-256 of the file last read for a reload (applied or not): the watcher acts
    /// only on other contents, so a rejected file is not retried every poll.
    attempted: Option<String>,
    last: Option<Outcome>,
}

/// Reload bookkeeping kept by the gateway.
pub struct Reloads {
    source: OnceLock<Source>,
    /// The config the process started with: restart-only settings compare against it.
    boot: Config,
    /// One reload at a time; each reads the file afresh.
    one_at_a_time: tokio::sync::Mutex<()>,
    applied: AtomicU64,
    rejected: AtomicU64,
    file: Mutex<FileState>,
}

impl Reloads {
    pub fn new(boot: Config) -> Reloads {
        Reloads {
            source: OnceLock::new(),
            boot,
            one_at_a_time: tokio::sync::Mutex::new(()),
            applied: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            file: Mutex::new(FileState::default()),
        }
    }

    /// Names the file the running config came from and where its secrets are read; a
    /// gateway started without a file (embedded defaults, the demo) has nothing to reload.
    pub fn attach(&self, path: PathBuf, env: Arc<dyn EnvSource>) {
        let digest = std::fs::read(&path).ok().map(|bytes| sha256_hex(&bytes));
        if let Ok(mut file) = self.file.lock() {
            file.applied = digest.clone();
            file.attempted = digest;
        }
        let _ = self.source.set(Source { path, env });
    }

    pub fn path(&self) -> Option<&std::path::Path> {
        self.source.get().map(|s| s.path.as_path())
    }

    fn attempted(&self) -> Option<String> {
        self.file.lock().ok().and_then(|f| f.attempted.clone())
    }

    /// `GET /admin/v1/config`: where the config comes from and how reloads went. No
    /// secrets: paths, digests and counts only.
    pub fn status(&self, generation: u64) -> serde_json::Value {
        let file = self.file.lock();
        let (applied, last) = match &file {
            Ok(f) => (f.applied.clone(), f.last.clone()),
            Err(_) => (None, None),
        };
        serde_json::json!({
            "object": "config",
            "generation": generation,
            "path": self.path().map(|p| p.display().to_string()),
            "sha256": applied,
            "reloads": {
                "applied": self.applied.load(Ordering::Relaxed),
                "rejected": self.rejected.load(Ordering::Relaxed),
            },
            "last_reload": last,
        })
    }

    pub fn render_metrics(&self, generation: u64, out: &mut String) {
        use std::fmt::Write;
        let _ = write!(
            out,
            "# HELP warden_config_reloads_total Config reloads, by result.\n\
             # TYPE warden_config_reloads_total counter\n\
             warden_config_reloads_total{{result=\"applied\"}} {}\n\
             warden_config_reloads_total{{result=\"rejected\"}} {}\n\
             # HELP warden_config_generation The config generation serving requests (1 at start).\n\
             # TYPE warden_config_generation gauge\n\
             warden_config_generation {generation}\n",
            self.applied.load(Ordering::Relaxed),
            self.rejected.load(Ordering::Relaxed),
        );
    }
}

/// Reads, validates and applies the config file. `None` when the gateway runs without
/// a file.
pub async fn reload(gateway: &Gateway, trigger: Trigger) -> Option<Outcome> {
    let reloads = &gateway.reloads;
    let source = reloads.source.get()?;
    let _one = reloads.one_at_a_time.lock().await;
    let started = Instant::now();
    let read = tokio::fs::read(&source.path).await;
    let digest = read.as_ref().ok().map(|bytes| sha256_hex(bytes));
    let built = match read {
        Ok(bytes) => prepare(gateway, source, bytes).await,
        Err(err) => Err(one_problem(
            "",
            format!("cannot read {}: {err}", source.path.display()),
        )),
    };
    let outcome = match built {
        Ok((snapshot, config, secrets)) => {
            let mut restart_required = restart::restart_required(&reloads.boot, &config);
            let generation = snapshot.generation;
            install(gateway, snapshot, &config, &secrets, &mut restart_required);
            reloads.applied.fetch_add(1, Ordering::Relaxed);
            Outcome {
                reloaded: true,
                generation,
                trigger,
                problems: Vec::new(),
                restart_required,
                at_ms: crate::events::now_ms(),
                took_ms: started.elapsed().as_secs_f64() * 1000.0,
            }
        }
        Err(problems) => {
            reloads.rejected.fetch_add(1, Ordering::Relaxed);
            Outcome {
                reloaded: false,
                generation: gateway.snapshot().generation,
                trigger,
                problems: problems
                    .iter()
                    .map(|p| ProblemView {
                        path: p.path.clone(),
                        message: p.message.clone(),
                    })
                    .collect(),
                restart_required: Vec::new(),
                at_ms: crate::events::now_ms(),
                took_ms: started.elapsed().as_secs_f64() * 1000.0,
            }
        }
    };
    log(&outcome, &source.path);
    record(gateway, &outcome, digest.as_deref());
    if let Ok(mut file) = reloads.file.lock() {
        file.attempted = digest.clone();
        if outcome.reloaded {
            file.applied = digest;
        }
        file.last = Some(outcome.clone());
    }
    Some(outcome)
}

/// Everything that can fail, before anything changes.
async fn prepare(
    gateway: &Gateway,
    source: &Source,
    bytes: Vec<u8>,
) -> Result<(Snapshot, Config, Secrets), Problems> {
    let text = String::from_utf8(bytes).map_err(|_| one_problem("", "the file is not UTF-8"))?;
    let config = Config::from_toml(&text)?;
    let (secrets, problems, warnings) = Secrets::load(&config, source.env.as_ref());
    for warning in &warnings {
        tracing::warn!("{warning}");
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let stored = gateway.store.list_keys().await.map_err(|err| {
        one_problem(
            "storage",
            format!("cannot read the store's virtual keys: {err}"),
        )
    })?;
    let current = gateway.snapshot();
    let moderator = Arc::new(
        current
            .moderator
            .reconfigured(config.safety.moderation.clone()),
    );
    let live = gateway.live();
    let generation = current.generation + 1;
    // Compiling rule sets and opening the geo database is CPU and disk work: keep it
    // off the workers that serve requests.
    tokio::task::spawn_blocking(move || {
        Snapshot::build(&config, &secrets, live, moderator, &stored, generation)
            .map(|snapshot| (snapshot, config, secrets))
    })
    .await
    .unwrap_or_else(|_| Err(one_problem("", "building the new config panicked")))
}

/// Swaps the snapshot in, then brings the long-lived services in step with it.
fn install(
    gateway: &Gateway,
    snapshot: Snapshot,
    config: &Config,
    secrets: &Secrets,
    restart_required: &mut Vec<String>,
) {
    let moderator = snapshot.moderator.clone();
    gateway.install(snapshot);
    gateway.limiter.set_rates(&config.limits);
    // After the swap: a lockdown switch flipped meanwhile lowered either the old
    // moderator (and is read here) or this one.
    moderator.set_lockdown(gateway.lockdown.moderation_lowering());
    let key = secrets
        .upstream_default
        .as_ref()
        .and_then(|s| crate::proxy::headers::bearer(s.expose()));
    let current = gateway.upstream.defaults();
    if key != current.key {
        if gateway.vault.is_some() {
            // The vault keeps the start-up key as its fallback; it is not swapped under it.
            restart_required.push("upstream.api_key_env / api_key_file".into());
        } else if current.name.is_none() {
            gateway
                .upstream
                .set_defaults(crate::proxy::upstream::Defaults {
                    key,
                    ..(*current).clone()
                });
            tracing::info!("the default upstream key changed and is in use");
        }
    }
}

fn log(outcome: &Outcome, path: &std::path::Path) {
    let file = path.display().to_string();
    if outcome.reloaded {
        tracing::info!(
            %file,
            generation = outcome.generation,
            trigger = outcome.trigger.as_str(),
            took_ms = outcome.took_ms,
            "config reloaded"
        );
        if !outcome.restart_required.is_empty() {
            tracing::warn!(
                %file,
                settings = outcome.restart_required.join(", "),
                "config reloaded, but these changed settings take effect only after a restart"
            );
        }
    } else {
        let problems = outcome
            .problems
            .iter()
            .map(|p| format!("{}: {}", p.path, p.message))
            .collect::<Vec<_>>()
            .join("; ");
        tracing::error!(
            %file,
            generation = outcome.generation,
            trigger = outcome.trigger.as_str(),
            %problems,
            "config reload rejected; the running config keeps serving"
        );
    }
}

/// Every reload, whatever triggered it, goes into the hash-chained event log: a policy
/// change is part of what the audit trail must prove.
fn record(gateway: &Gateway, outcome: &Outcome, digest: Option<&str>) {
    let file = digest
        .map(|d| &d[..d.len().min(16)])
        .unwrap_or("unreadable");
    let reason = if outcome.reloaded {
        format!(
            "config reload ({}): applied generation {} (file sha256 {file}…)",
            outcome.trigger.as_str(),
            outcome.generation
        )
    } else {
        format!(
            "config reload ({}): rejected, {} problem(s) (file sha256 {file}…)",
            outcome.trigger.as_str(),
            outcome.problems.len()
        )
    };
    gateway.events.record(crate::events::EventRecord {
        request_id: format!("wcf_{:032x}", fastrand::u128(..)),
        at_ms: outcome.at_ms,
        kind: "admin",
        endpoint: "admin",
        status: if outcome.reloaded { 200 } else { 422 },
        outcome: if outcome.reloaded {
            "allowed"
        } else {
            "blocked"
        },
        reason: Some(reason),
        ..Default::default()
    });
}

fn one_problem(path: &str, message: impl Into<String>) -> Problems {
    let mut problems = Problems::default();
    problems.push(path, message);
    problems
}

fn sha256_hex(bytes: &[u8]) -> String {
    crate::events::content::hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

/// Reloads on every SIGHUP until the gateway is gone.
#[cfg(unix)]
pub fn spawn_on_sighup(
    gateway: std::sync::Weak<Gateway>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    Ok(tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            let Some(gateway) = gateway.upgrade() else {
                return;
            };
            reload(&gateway, Trigger::Signal).await;
        }
    }))
}

#[cfg(test)]
mod tests;
