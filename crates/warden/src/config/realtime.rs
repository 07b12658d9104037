//! `[realtime]`: the Realtime API relay (`GET /v1/realtime`) and browser client secrets.

use std::time::Duration;

use super::problems::Problems;
use super::schema::section;

section! {
    pub struct RawRealtime {
        enabled: bool,
        max_sessions_per_user: u64,
        sessions_per_user_per_hour: u64,
        idle_timeout_secs: u64,
        max_session_secs: u64,
        max_frame_bytes: u64,
        client_send_timeout_secs: u64,
        client_secret_max_ttl_secs: u64,
        unknown_events: String,
        moderate_output: bool,
    }
}

/// What happens to a client event type Warden does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownEvents {
    /// Refused with an `error` event; never reaches OpenAI (nothing unchecked goes up).
    Refuse,
    /// Relayed unchecked (for a new OpenAI event type Warden has not learned yet).
    Relay,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RealtimeConfig {
    pub enabled: bool,
    /// Open sessions one end user may hold at once (WebSocket sessions through Warden).
    pub max_sessions_per_user: u32,
    /// Sessions (WebSocket or client secrets) one end user may start in an hour.
    pub sessions_per_user_per_hour: u32,
    /// A session with no frame either way for this long is closed.
    pub idle_timeout: Duration,
    /// A session is closed after this long, whatever it does.
    pub max_session: Duration,
    /// Largest frame accepted from the client (OpenAI caps audio appends at 15 MiB).
    pub max_frame_bytes: usize,
    /// A client that cannot take one frame for this long is not reading: closed.
    pub client_send_timeout: Duration,
    /// Client secrets never live longer than this, whatever the request asked.
    pub client_secret_max_ttl: Duration,
    pub unknown_events: UnknownEvents,
    /// Model text and transcripts are moderated in windows like streamed chat.
    pub moderate_output: bool,
}

impl Default for RealtimeConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_sessions_per_user: 2,
            sessions_per_user_per_hour: 30,
            idle_timeout: Duration::from_secs(300),
            max_session: Duration::from_secs(3600),
            max_frame_bytes: 16 * 1024 * 1024,
            client_send_timeout: Duration::from_secs(10),
            client_secret_max_ttl: Duration::from_secs(600),
            unknown_events: UnknownEvents::Refuse,
            moderate_output: true,
        }
    }
}

pub fn validate(value: Option<&toml::Value>, problems: &mut Problems) -> RealtimeConfig {
    const PATH: &str = "realtime";
    let raw = value
        .map(|v| RawRealtime::read(v, PATH, problems))
        .unwrap_or_default();
    let d = RealtimeConfig::default();
    let mut within = |value: Option<u64>, default: u64, key: &str, min: u64, max: u64| match value {
        Some(v) if v < min || v > max => {
            problems.push(
                format!("{PATH}.{key}"),
                format!("must be from {min} to {max}"),
            );
            default
        }
        Some(v) => v,
        None => default,
    };
    let max_sessions_per_user = within(
        raw.max_sessions_per_user,
        u64::from(d.max_sessions_per_user),
        "max_sessions_per_user",
        1,
        10_000,
    ) as u32;
    let sessions_per_user_per_hour = within(
        raw.sessions_per_user_per_hour,
        u64::from(d.sessions_per_user_per_hour),
        "sessions_per_user_per_hour",
        1,
        1_000_000,
    ) as u32;
    let idle = within(
        raw.idle_timeout_secs,
        d.idle_timeout.as_secs(),
        "idle_timeout_secs",
        1,
        86_400,
    );
    let max_session = within(
        raw.max_session_secs,
        d.max_session.as_secs(),
        "max_session_secs",
        1,
        86_400,
    );
    let max_frame_bytes = within(
        raw.max_frame_bytes,
        d.max_frame_bytes as u64,
        "max_frame_bytes",
        1024,
        64 * 1024 * 1024,
    ) as usize;
    let send_timeout = within(
        raw.client_send_timeout_secs,
        d.client_send_timeout.as_secs(),
        "client_send_timeout_secs",
        1,
        600,
    );
    // OpenAI accepts 10 s to 2 h for a client secret.
    let ttl = within(
        raw.client_secret_max_ttl_secs,
        d.client_secret_max_ttl.as_secs(),
        "client_secret_max_ttl_secs",
        10,
        7200,
    );
    let unknown_events = match raw.unknown_events.as_deref() {
        None | Some("refuse") => UnknownEvents::Refuse,
        Some("relay") => UnknownEvents::Relay,
        Some(other) => {
            problems.push(
                format!("{PATH}.unknown_events"),
                format!("must be \"refuse\" or \"relay\", not {other:?}"),
            );
            UnknownEvents::Refuse
        }
    };
    RealtimeConfig {
        enabled: raw.enabled.unwrap_or(d.enabled),
        max_sessions_per_user,
        sessions_per_user_per_hour,
        idle_timeout: Duration::from_secs(idle),
        max_session: Duration::from_secs(max_session),
        max_frame_bytes,
        client_send_timeout: Duration::from_secs(send_timeout),
        client_secret_max_ttl: Duration::from_secs(ttl),
        unknown_events,
        moderate_output: raw.moderate_output.unwrap_or(d.moderate_output),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_bad_values() {
        let mut problems = Problems::default();
        assert_eq!(validate(None, &mut problems), RealtimeConfig::default());
        let value: toml::Value = toml::from_str(
            "max_sessions_per_user = 0\nunknown_events = \"drop\"\nclient_secret_max_ttl_secs = 9000",
        )
        .unwrap_or(toml::Value::Boolean(false));
        let config = validate(Some(&value), &mut problems);
        assert_eq!(config.max_sessions_per_user, 2);
        let text = problems.to_string();
        assert!(text.contains("realtime.max_sessions_per_user"), "{text}");
        assert!(text.contains("realtime.unknown_events"), "{text}");
        assert!(
            text.contains("realtime.client_secret_max_ttl_secs"),
            "{text}"
        );
    }
}
