//! Turns the raw file into a `Config`, pushing a problem for every invalid value.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

use super::problems::Problems;
use super::raw::{RawConfig, RawJwt, RawKeyEntry};
use super::*;

pub(super) fn validate(raw: &RawConfig, problems: &mut Problems) -> Config {
    let server = &raw.server;
    let listen = socket_addr(
        server.listen.as_deref(),
        DEFAULT_LISTEN,
        "server.listen",
        problems,
    );
    let admin_listen = socket_addr(
        server.admin_listen.as_deref(),
        DEFAULT_ADMIN_LISTEN,
        "server.admin_listen",
        problems,
    );
    if listen == admin_listen && listen.port() != 0 {
        problems.push(
            "server.admin_listen",
            "must differ from server.listen: the admin plane never shares the public listener",
        );
    }
    let max_body_bytes = match server.max_body_bytes {
        None => DEFAULT_MAX_BODY_BYTES,
        Some(0) => {
            problems.push("server.max_body_bytes", "must be greater than 0");
            DEFAULT_MAX_BODY_BYTES
        }
        Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
    };
    let trusted_proxies = server
        .trusted_proxies
        .iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, text)| match parse_net(text) {
            Some(net) => Some(net),
            None => {
                problems.push(
                    format!("server.trusted_proxies[{i}]"),
                    format!("'{text}' is not an IP address or CIDR range"),
                );
                None
            }
        })
        .collect();
    let request_body_timeout = positive_secs(
        server.request_body_timeout_secs,
        30,
        "server.request_body_timeout_secs",
        problems,
    );

    let up = &raw.upstream;
    let base_text = up.base_url.as_deref().unwrap_or(DEFAULT_UPSTREAM);
    let base_url = match base_url(base_text) {
        Ok(uri) => uri,
        Err(why) => {
            problems.push("upstream.base_url", format!("'{base_text}' {why}"));
            http::Uri::from_static(DEFAULT_UPSTREAM)
        }
    };
    let api_key_env = env_name(
        up.api_key_env.as_deref(),
        DEFAULT_UPSTREAM_KEY_ENV,
        "upstream.api_key_env",
        problems,
    );
    let upstream = UpstreamConfig {
        base_url,
        api_key_env,
        api_key_required: up.api_key_env.is_some(),
        api_key_file: up.api_key_file.as_deref().map(std::path::PathBuf::from),
        master_key_env: env_name(
            up.master_key_env.as_deref(),
            "WARDEN_MASTER_KEY",
            "upstream.master_key_env",
            problems,
        ),
        organization: header_text(
            up.organization.as_deref(),
            "upstream.organization",
            problems,
        ),
        project: header_text(up.project.as_deref(), "upstream.project", problems),
        openai_beta: up.openai_beta.clone().unwrap_or_default(),
        unknown_paths: match up.unknown_paths.as_deref() {
            None | Some("refuse") => super::UnknownPaths::Refuse,
            Some("forward") => super::UnknownPaths::Forward,
            Some(other) => {
                problems.push(
                    "upstream.unknown_paths",
                    format!("'{other}' is not one of \"refuse\", \"forward\""),
                );
                super::UnknownPaths::Refuse
            }
        },
        connect_timeout: positive_secs(
            up.connect_timeout_secs,
            10,
            "upstream.connect_timeout_secs",
            problems,
        ),
        timeout: positive_secs(up.timeout_secs, 600, "upstream.timeout_secs", problems),
        retries: super::retries::validate(up, problems),
        pacing: super::pacing::validate(up, problems),
    };

    let storage_text = raw.storage.url.as_deref().unwrap_or(DEFAULT_STORAGE);
    let storage = storage(storage_text).unwrap_or_else(|why| {
        problems.push("storage.url", format!("'{storage_text}' {why}"));
        StorageConfig::SqliteMemory
    });

    let identity = IdentityConfig {
        safety_identifier_secret_env: env_name(
            raw.identity.safety_identifier_secret_env.as_deref(),
            DEFAULT_SAFETY_SECRET_ENV,
            "identity.safety_identifier_secret_env",
            problems,
        ),
        secret_required: raw.identity.safety_identifier_secret_env.is_some(),
    };

    let log = LogConfig {
        level: raw.log.level.clone().unwrap_or_else(|| "info".into()),
        format: match raw.log.format.as_deref() {
            None | Some("json") => LogFormat::Json,
            Some("text") => LogFormat::Text,
            Some(other) => {
                problems.push("log.format", format!("'{other}' is not one of: json, text"));
                LogFormat::Json
            }
        },
    };
    if tracing_subscriber::EnvFilter::try_new(&log.level).is_err() {
        problems.push(
            "log.level",
            format!(
                "'{}' is not a log filter (e.g. info, warn, warden=debug)",
                log.level
            ),
        );
    }

    let keys: Vec<KeyConfig> = raw
        .keys
        .iter()
        .enumerate()
        .filter_map(|(i, entry)| key(entry, &format!("keys[{i}]"), problems))
        .collect();
    for (i, k) in keys.iter().enumerate() {
        if keys[..i].iter().any(|other| other.name == k.name) {
            problems.push(
                format!("keys[{i}].name"),
                format!("'{}' is declared twice", k.name),
            );
        }
    }

    let limits = super::limits::validate_limits(raw.limits.as_ref(), &raw.keys, problems);
    let cluster = super::limits::validate_cluster(raw.cluster.as_ref(), problems);
    let enforcement =
        super::enforcement::validate_enforcement(raw.enforcement.as_ref(), &limits, problems);
    let admin = super::enforcement::validate_admin(raw.admin.as_ref(), problems);
    let notices = super::enforcement::validate_notices(raw.openai_notices.as_ref(), problems);
    let mut moderation =
        super::moderation::validate(raw.safety.moderation.as_ref(), &raw.keys, problems);
    let filters = super::filters::validate(
        raw.safety.filters.as_ref(),
        raw.safety.jailbreak.as_ref(),
        problems,
    );
    let profiles = super::profiles::validate(
        raw.safety.profiles.as_ref(),
        &raw.keys,
        &mut moderation,
        &filters,
        problems,
    );

    Config {
        server: ServerConfig {
            listen,
            admin_listen,
            max_body_bytes,
            trusted_proxies,
            request_body_timeout,
            watch_config: server.watch_config.unwrap_or(true),
            connections: super::connections::validate(server, problems),
        },
        upstream,
        storage,
        ready_without_store: raw.storage.ready_without_store.unwrap_or(false),
        identity,
        log,
        keys,
        limits,
        cluster,
        enforcement,
        admin,
        notices,
        geo: super::geo::validate(raw.geo.as_ref(), problems),
        abuse: super::abuse::validate(raw.abuse.as_ref(), problems),
        alerts: super::alerts::validate(raw.alerts.as_ref(), problems),
        lockdown: super::lockdown::validate(raw.lockdown.as_ref(), problems),
        realtime: super::realtime::validate(raw.realtime.as_ref(), problems),
        events: super::events::validate(raw.events.as_ref(), problems),
        spend: super::spend::validate(raw.spend.as_ref(), problems),
        openai_admin: super::openai_admin::validate(raw.openai_admin.as_ref(), problems),
        safety: SafetyConfig {
            moderation,
            filters,
            profiles,
        },
    }
}

fn key(entry: &RawKeyEntry, path: &str, problems: &mut Problems) -> Option<KeyConfig> {
    let raw = &entry.key;
    let before = problems.len();
    let name = match raw.name.as_deref() {
        None => {
            problems.push(format!("{path}.name"), "missing: every key needs a name");
            String::new()
        }
        Some(name) => {
            if !valid_key_name(name) {
                problems.push(
                    format!("{path}.name"),
                    format!("'{name}' must be 1-64 characters of a-z, A-Z, 0-9, '-', '_' or '.'"),
                );
            }
            name.to_owned()
        }
    };
    let end_user = match raw.end_user.as_deref() {
        None => EndUserPolicy::Required,
        Some(text) => EndUserPolicy::parse(text).unwrap_or_else(|| {
            problems.push(
                format!("{path}.end_user"),
                format!("'{text}' is not one of: required, optional"),
            );
            EndUserPolicy::Required
        }),
    };
    let jwt = entry
        .jwt
        .as_ref()
        .and_then(|j| jwt(j, &format!("{path}.jwt"), problems));
    if raw.secret_env.is_none() && jwt.is_none() {
        problems.push(
            format!("{path}.secret_env"),
            "missing: a key needs secret_env (its Bearer value) or a [keys.jwt] table (browser/phone clients)",
        );
    }
    let key = KeyConfig {
        name,
        secret_env: raw
            .secret_env
            .as_deref()
            .map(|v| env_name(Some(v), "", &format!("{path}.secret_env"), problems)),
        upstream_key_env: raw
            .upstream_key_env
            .as_deref()
            .map(|v| env_name(Some(v), "", &format!("{path}.upstream_key_env"), problems)),
        openai_project: header_text(
            raw.openai_project.as_deref(),
            &format!("{path}.openai_project"),
            problems,
        ),
        end_user,
        trusted_user_field: raw.trusted_user_field.unwrap_or(false),
        shared_objects: raw.shared_objects.unwrap_or(false),
        jwt,
    };
    (problems.len() == before).then_some(key)
}

fn jwt(raw: &RawJwt, path: &str, problems: &mut Problems) -> Option<JwtConfig> {
    let sources = [
        raw.hs256_secret_env
            .as_ref()
            .map(|v| JwtKeySource::Hs256SecretEnv(v.clone())),
        raw.rs256_public_key_file
            .as_ref()
            .map(|v| JwtKeySource::Rs256PublicKeyFile(PathBuf::from(v))),
        raw.jwks_file
            .as_ref()
            .map(|v| JwtKeySource::JwksFile(PathBuf::from(v))),
    ];
    let mut given = sources.into_iter().flatten();
    let Some(key) = given.next() else {
        problems.push(
            path,
            "needs exactly one of hs256_secret_env, rs256_public_key_file, jwks_file",
        );
        return None;
    };
    if given.next().is_some() {
        problems.push(
            path,
            "set only one of hs256_secret_env, rs256_public_key_file, jwks_file",
        );
        return None;
    }
    Some(JwtConfig {
        key,
        issuer: raw.issuer.clone(),
        audience: raw.audience.clone(),
        user_claim: raw.user_claim.clone().unwrap_or_else(|| "sub".into()),
    })
}

fn valid_key_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn socket_addr(
    text: Option<&str>,
    default: &str,
    path: &str,
    problems: &mut Problems,
) -> SocketAddr {
    let text = text.unwrap_or(default);
    text.parse().unwrap_or_else(|_| {
        problems.push(
            path,
            format!("'{text}' is not an address like 127.0.0.1:8080"),
        );
        SocketAddr::from(([127, 0, 0, 1], 0))
    })
}

fn parse_net(text: &str) -> Option<IpNet> {
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<std::net::IpAddr>().ok().map(IpNet::from))
}

fn positive_secs(
    value: Option<u64>,
    default: u64,
    path: &str,
    problems: &mut Problems,
) -> Duration {
    match value {
        Some(0) => {
            problems.push(path, "must be greater than 0");
            Duration::from_secs(default)
        }
        Some(n) => Duration::from_secs(n),
        None => Duration::from_secs(default),
    }
}

fn env_name(value: Option<&str>, default: &str, path: &str, problems: &mut Problems) -> String {
    let name = value.unwrap_or(default);
    let valid = !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit();
    if !valid {
        problems.push(
            path,
            format!("'{name}' is not an environment variable name"),
        );
    }
    name.to_owned()
}

fn header_text(value: Option<&str>, path: &str, problems: &mut Problems) -> Option<String> {
    let value = value?;
    if value.is_empty() || http::HeaderValue::from_str(value).is_err() {
        problems.push(
            path,
            format!("'{value}' cannot be sent as an HTTP header value"),
        );
    }
    Some(value.to_owned())
}

pub(super) fn base_url(text: &str) -> Result<http::Uri, &'static str> {
    let trimmed = text.trim_end_matches('/');
    let uri: http::Uri = trimmed.parse().map_err(|_| "is not a URL")?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err("must start with http:// or https://"),
    }
    if uri.authority().is_none() {
        return Err("has no host");
    }
    if uri.query().is_some() {
        return Err("must not have a query string");
    }
    Ok(uri)
}

fn storage(text: &str) -> Result<StorageConfig, &'static str> {
    if text == "sqlite::memory:" || text == "sqlite://:memory:" {
        return Ok(StorageConfig::SqliteMemory);
    }
    if let Some(path) = text.strip_prefix("sqlite://") {
        let path = path.split('?').next().unwrap_or(path);
        if path.is_empty() {
            return Err("names no database file");
        }
        return Ok(StorageConfig::Sqlite {
            path: PathBuf::from(path),
        });
    }
    if text.starts_with("postgres://") || text.starts_with("postgresql://") {
        return Ok(StorageConfig::Postgres {
            url: text.to_owned(),
        });
    }
    Err("must start with sqlite:// or postgres://")
}
