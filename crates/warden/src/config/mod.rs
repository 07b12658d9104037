//! Configuration: the raw TOML is read, then validated into types that cannot hold an
//! invalid state. Every problem is reported at once, with its key path.

pub mod abuse;
pub mod alerts;
pub mod connections;
pub mod enforcement;
pub mod env;
pub mod events;
pub mod filters;
pub mod geo;
pub mod limits;
pub mod lockdown;
pub mod moderation;
pub mod openai_admin;
pub mod pacing;
pub mod problems;
pub mod profiles;
pub mod raw;
pub mod realtime;
pub mod retries;
pub mod schema;
pub mod secrets;
pub mod spend;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

pub use env::{EnvSource, MapEnv, ProcessEnv};
pub use problems::{Problem, Problems};
pub use secrets::Secrets;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:8081";
pub const DEFAULT_UPSTREAM: &str = "https://api.openai.com/v1";
pub const DEFAULT_UPSTREAM_KEY_ENV: &str = "OPENAI_API_KEY";
pub const DEFAULT_STORAGE: &str = "sqlite://warden-data/warden.db";
pub const DEFAULT_SAFETY_SECRET_ENV: &str = "WARDEN_SAFETY_SECRET";
pub const DEFAULT_MAX_BODY_BYTES: usize = 20 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub upstream: UpstreamConfig,
    pub storage: StorageConfig,
    /// `[storage] ready_without_store`: whether `/readyz` reports ready while the store
    /// does not answer (Warden serves either way; this only steers a load balancer).
    pub ready_without_store: bool,
    pub identity: IdentityConfig,
    pub log: LogConfig,
    pub keys: Vec<KeyConfig>,
    pub safety: SafetyConfig,
    pub limits: limits::LimitsConfig,
    pub cluster: limits::ClusterConfig,
    pub enforcement: enforcement::EnforcementConfig,
    pub admin: enforcement::AdminConfig,
    pub notices: enforcement::NoticesConfig,
    pub geo: geo::GeoConfig,
    pub abuse: abuse::AbuseConfig,
    pub alerts: alerts::AlertsConfig,
    pub lockdown: lockdown::LockdownConfig,
    /// `[events]`: store switch, durable wait, excerpts, retention.
    pub events: events::EventsConfig,
    pub spend: spend::SpendConfig,
    pub openai_admin: openai_admin::OpenaiAdminConfig,
    /// `[realtime]`: the Realtime relay and client secrets.
    pub realtime: realtime::RealtimeConfig,
}

/// `[safety]`: content safety policy.
#[derive(Debug, Clone)]
pub struct SafetyConfig {
    pub moderation: moderation::ModerationConfig,
    /// `[safety.filters]` and `[safety.jailbreak]`: the local filters.
    pub filters: crate::safety::filters::FilterPolicy,
    /// `[safety.profiles.<name>]` and the keys that use them.
    pub profiles: profiles::Profiles,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub max_body_bytes: usize,
    pub trusted_proxies: Vec<IpNet>,
    pub request_body_timeout: Duration,
    /// Reload when the config file changes (SIGHUP and the admin API always work).
    pub watch_config: bool,
    pub connections: connections::ConnectionConfig,
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// Scheme, authority and path prefix (e.g. `https://api.openai.com/v1`), no trailing slash.
    pub base_url: http::Uri,
    pub api_key_env: String,
    /// Named in the file: a missing variable is then an error, not a warning.
    pub api_key_required: bool,
    /// A mounted secret holding the default upstream key; wins over `api_key_env`.
    pub api_key_file: Option<PathBuf>,
    /// The vault's master key (32 bytes, base64) for upstream keys kept in the store.
    pub master_key_env: String,
    pub organization: Option<String>,
    pub project: Option<String>,
    /// `OpenAI-Beta` features a client may ask for (`assistants=v2`); others are not
    /// forwarded.
    pub openai_beta: Vec<String>,
    /// Paths under `/v1` that no routing table knows: refused (404) or passed through.
    pub unknown_paths: UnknownPaths,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    /// Retries of failed upstream calls and the circuit breaker that bounds them.
    pub retries: retries::RetryConfig,
    /// Staying under OpenAI's own rate limits, read from its `x-ratelimit-*` headers.
    pub pacing: pacing::PacingConfig,
}

/// `[upstream] unknown_paths`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnknownPaths {
    /// A 404 saying Warden does not proxy the path yet (nothing reaches OpenAI).
    #[default]
    Refuse,
    /// Sent upstream with the key swap, identity, limits and an event, but no content
    /// checks: Warden cannot read what it does not know.
    Forward,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageConfig {
    Sqlite { path: PathBuf },
    SqliteMemory,
    Postgres { url: String },
}

#[derive(Debug, Clone)]
pub struct IdentityConfig {
    pub safety_identifier_secret_env: String,
    /// Named in the file: a missing variable is an error. Otherwise Warden keeps a
    /// generated secret in the store so identifiers stay stable across restarts.
    pub secret_required: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub level: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndUserPolicy {
    Required,
    Optional,
}

impl EndUserPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            EndUserPolicy::Required => "required",
            EndUserPolicy::Optional => "optional",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "required" => Some(EndUserPolicy::Required),
            "optional" => Some(EndUserPolicy::Optional),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct KeyConfig {
    pub name: String,
    pub secret_env: Option<String>,
    pub upstream_key_env: Option<String>,
    pub openai_project: Option<String>,
    pub end_user: EndUserPolicy,
    pub trusted_user_field: bool,
    /// Sees every stored object (files, batches, responses…), not only its own.
    pub shared_objects: bool,
    pub jwt: Option<JwtConfig>,
}

#[derive(Debug, Clone)]
pub enum JwtKeySource {
    Hs256SecretEnv(String),
    Rs256PublicKeyFile(PathBuf),
    JwksFile(PathBuf),
}

#[derive(Debug, Clone)]
pub struct JwtConfig {
    pub key: JwtKeySource,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub user_claim: String,
}

impl Config {
    /// Parses and validates a config text; every problem is returned at once.
    pub fn from_toml(text: &str) -> Result<Config, Problems> {
        let mut problems = Problems::default();
        let raw = raw::RawConfig::parse(text, &mut problems);
        let config = validate::validate(&raw, &mut problems);
        problems.into_result(config)
    }

    pub fn from_file(path: &Path) -> Result<Config, Problems> {
        match std::fs::read_to_string(path) {
            Ok(text) => Config::from_toml(&text),
            Err(err) => {
                let mut problems = Problems::default();
                problems.push("", format!("cannot read {}: {err}", path.display()));
                Err(problems)
            }
        }
    }

    /// The embedded default: no file at all.
    pub fn embedded_default() -> Result<Config, Problems> {
        Config::from_toml("")
    }
}

#[cfg(test)]
mod tests;
