//! The config file as written: every section and key Warden accepts, nothing validated yet.

use super::problems::Problems;
use super::schema::section;

section! {
    pub struct RawServer {
        listen: String,
        admin_listen: String,
        max_body_bytes: u64,
        trusted_proxies: Vec<String>,
        request_body_timeout_secs: u64,
        watch_config: bool,
        first_byte_timeout_secs: u64,
        idle_timeout_secs: u64,
        max_header_bytes: u64,
        max_connections: u64,
        max_connections_per_ip: u64,
        admin_max_connections: u64,
    }
}

section! {
    pub struct RawUpstream {
        base_url: String,
        api_key_env: String,
        api_key_file: String,
        master_key_env: String,
        organization: String,
        openai_beta: Vec<String>,
        project: String,
        unknown_paths: String,
        connect_timeout_secs: u64,
        timeout_secs: u64,
        // Retries, breaker and pacing: validated in `config/retries.rs` and `config/pacing.rs`.
        max_retries: u64,
        retry_deadline_secs: u64,
        retry_backoff_ms: u64,
        breaker_failures: u64,
        breaker_cooldown_secs: u64,
        pacing: bool,
        pacing_share: f64,
        pacing_max_wait_ms: u64,
    }
}

section! {
    pub struct RawStorage {
        url: String,
        ready_without_store: bool,
    }
}

section! {
    pub struct RawIdentity {
        safety_identifier_secret_env: String,
    }
}

section! {
    pub struct RawLog {
        level: String,
        format: String,
    }
}

section! {
    pub struct RawKey {
        name: String,
        secret_env: String,
        upstream_key_env: String,
        openai_project: String,
        end_user: String,
        trusted_user_field: bool,
        shared_objects: bool,
        jwt: toml::Value,
        tier: String,
        limits: toml::Value,
        moderation_mode: String,
        moderation_on_error: String,
        safety_profile: String,
    }
}

section! {
    pub struct RawJwt {
        hs256_secret_env: String,
        rs256_public_key_file: String,
        jwks_file: String,
        issuer: String,
        audience: String,
        user_claim: String,
    }
}

section! {
    /// `[safety]`: each subsection is read by its own module (`config::moderation`, …).
    pub struct RawSafety {
        moderation: toml::Value,
        filters: toml::Value,
        jailbreak: toml::Value,
        profiles: toml::Table,
    }
}

/// A key entry with its nested `jwt` table read too.
#[derive(Debug, Clone, Default)]
pub struct RawKeyEntry {
    pub key: RawKey,
    pub jwt: Option<RawJwt>,
}

#[derive(Debug, Clone, Default)]
pub struct RawConfig {
    pub server: RawServer,
    pub upstream: RawUpstream,
    pub storage: RawStorage,
    pub identity: RawIdentity,
    pub log: RawLog,
    pub keys: Vec<RawKeyEntry>,
    pub safety: RawSafety,
    /// `[limits]` and `[cluster]`, read in `config/limits.rs`.
    pub limits: Option<toml::Value>,
    pub cluster: Option<toml::Value>,
    /// `[enforcement]`, `[admin]` and `[openai_notices]`, read in `config/enforcement.rs`.
    pub enforcement: Option<toml::Value>,
    pub admin: Option<toml::Value>,
    pub openai_notices: Option<toml::Value>,
    /// `[geo]`, `[abuse]`, `[alerts]`, `[lockdown]`, each read in its own `config/` file.
    pub geo: Option<toml::Value>,
    pub abuse: Option<toml::Value>,
    pub alerts: Option<toml::Value>,
    pub lockdown: Option<toml::Value>,
    /// `[events]`, read in `config/events.rs`.
    pub events: Option<toml::Value>,
    /// `[spend]`, read in `config/spend.rs`.
    pub spend: Option<toml::Value>,
    /// `[openai_admin]`, read in `config/openai_admin.rs`.
    pub openai_admin: Option<toml::Value>,
    /// `[realtime]`, read in `config/realtime.rs`.
    pub realtime: Option<toml::Value>,
    /// Sections present in the file (defaults apply differently when a section is explicit).
    pub explicit: Vec<String>,
}

const SECTIONS: &[&str] = &[
    "server",
    "upstream",
    "storage",
    "identity",
    "log",
    "keys",
    "safety",
    "limits",
    "cluster",
    "enforcement",
    "admin",
    "openai_notices",
    "geo",
    "abuse",
    "alerts",
    "lockdown",
    "events",
    "spend",
    "openai_admin",
    "realtime",
];

impl RawConfig {
    pub fn parse(text: &str, problems: &mut Problems) -> RawConfig {
        let mut raw = RawConfig::default();
        let table: toml::Table = match text.parse() {
            Ok(t) => t,
            Err(err) => {
                problems.push(
                    "",
                    format!("not valid TOML: {}", one_line(&err.to_string())),
                );
                return raw;
            }
        };
        for (name, value) in &table {
            raw.explicit.push(name.clone());
            match name.as_str() {
                "server" => raw.server = RawServer::read(value, name, problems),
                "upstream" => raw.upstream = RawUpstream::read(value, name, problems),
                "storage" => raw.storage = RawStorage::read(value, name, problems),
                "identity" => raw.identity = RawIdentity::read(value, name, problems),
                "log" => raw.log = RawLog::read(value, name, problems),
                "keys" => raw.keys = read_keys(value, problems),
                "limits" => raw.limits = Some(value.clone()),
                "cluster" => raw.cluster = Some(value.clone()),
                "enforcement" => raw.enforcement = Some(value.clone()),
                "admin" => raw.admin = Some(value.clone()),
                "openai_notices" => raw.openai_notices = Some(value.clone()),
                "geo" => raw.geo = Some(value.clone()),
                "abuse" => raw.abuse = Some(value.clone()),
                "alerts" => raw.alerts = Some(value.clone()),
                "lockdown" => raw.lockdown = Some(value.clone()),
                "events" => raw.events = Some(value.clone()),
                "spend" => raw.spend = Some(value.clone()),
                "openai_admin" => raw.openai_admin = Some(value.clone()),
                "realtime" => raw.realtime = Some(value.clone()),
                "safety" => raw.safety = RawSafety::read(value, name, problems),
                other => problems.push(other, super::schema::unknown("section", other, SECTIONS)),
            }
        }
        raw
    }

    pub fn is_explicit(&self, section: &str) -> bool {
        self.explicit.iter().any(|s| s == section)
    }
}

fn read_keys(value: &toml::Value, problems: &mut Problems) -> Vec<RawKeyEntry> {
    let Some(items) = value.as_array() else {
        problems.push("keys", "expected an array of tables ([[keys]])");
        return Vec::new();
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let path = format!("keys[{i}]");
            let key = RawKey::read(item, &path, problems);
            let jwt = key
                .jwt
                .as_ref()
                .map(|v| RawJwt::read(v, &format!("{path}.jwt"), problems));
            RawKeyEntry { key, jwt }
        })
        .collect()
}

fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}
