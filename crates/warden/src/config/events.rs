//! `[events]`: how the event log keeps what it records — the store switch, the durable
//! wait for blocked and flagged answers, opt-in redacted excerpts and retention.

use std::time::Duration;

use super::problems::Problems;
use super::schema::section;

section! {
    pub struct RawEvents {
        store: bool,
        durable_timeout_ms: u64,
        keep_flagged_excerpts: bool,
        excerpt_chars: u64,
        retention_days: u64,
        event_retention_days: u64,
        sweep_interval_secs: u64,
        spool: bool,
        spool_dir: String,
        spool_max_mb: u64,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsConfig {
    /// false: events go to the log line and metrics only — no store rows, no audit chain,
    /// no report. For measuring the event log's cost; never for production.
    pub store: bool,
    /// Longest a blocked or flagged answer waits for its event's commit.
    pub durable_timeout: Duration,
    pub keep_flagged_excerpts: bool,
    /// Characters kept of a flagged field (after redaction).
    pub excerpt_chars: usize,
    /// How long excerpts are kept.
    pub excerpt_retention: Duration,
    /// How long events are kept; `None` (the default): forever.
    pub event_retention: Option<Duration>,
    /// How often the sweeper deletes expired excerpts and events.
    pub sweep_interval: Duration,
    /// The local journal of events not yet committed (`events::spool`): on by default
    /// with a file or PostgreSQL store.
    pub spool: bool,
    /// Where the spool lives; `None`: `spool/` next to a SQLite file, else
    /// `warden-data/spool`.
    pub spool_dir: Option<std::path::PathBuf>,
    /// Cap on the spool's size; an alert is raised at 80 %.
    pub spool_max_bytes: u64,
}

const DAY: u64 = 24 * 3600;

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            store: true,
            durable_timeout: Duration::from_millis(2000),
            keep_flagged_excerpts: false,
            excerpt_chars: 200,
            excerpt_retention: Duration::from_secs(30 * DAY),
            event_retention: None,
            sweep_interval: Duration::from_secs(3600),
            spool: true,
            spool_dir: None,
            spool_max_bytes: 1024 * 1024 * 1024,
        }
    }
}

pub fn validate(value: Option<&toml::Value>, problems: &mut Problems) -> EventsConfig {
    let mut config = EventsConfig::default();
    let Some(value) = value else {
        return config;
    };
    let raw = RawEvents::read(value, "events", problems);
    config.store = raw.store.unwrap_or(true);
    config.keep_flagged_excerpts = raw.keep_flagged_excerpts.unwrap_or(false);
    if let Some(ms) = positive(
        raw.durable_timeout_ms,
        "events.durable_timeout_ms",
        problems,
    ) {
        config.durable_timeout = Duration::from_millis(ms);
    }
    if let Some(chars) = positive(raw.excerpt_chars, "events.excerpt_chars", problems) {
        if chars > 10_000 {
            problems.push("events.excerpt_chars", "must be at most 10000");
        } else {
            config.excerpt_chars = chars as usize;
        }
    }
    if let Some(days) = positive(raw.retention_days, "events.retention_days", problems) {
        config.excerpt_retention = Duration::from_secs(days.saturating_mul(DAY));
    }
    if let Some(days) = positive(
        raw.event_retention_days,
        "events.event_retention_days",
        problems,
    ) {
        config.event_retention = Some(Duration::from_secs(days.saturating_mul(DAY)));
    }
    if let Some(secs) = positive(
        raw.sweep_interval_secs,
        "events.sweep_interval_secs",
        problems,
    ) {
        config.sweep_interval = Duration::from_secs(secs);
    }
    config.spool = raw.spool.unwrap_or(true);
    match raw.spool_dir.as_deref() {
        Some("") => problems.push("events.spool_dir", "must not be empty"),
        Some(dir) => config.spool_dir = Some(dir.into()),
        None => {}
    }
    if let Some(mb) = positive(raw.spool_max_mb, "events.spool_max_mb", problems) {
        config.spool_max_bytes = mb.saturating_mul(1024 * 1024);
    }
    if !config.store && config.keep_flagged_excerpts {
        problems.push(
            "events.keep_flagged_excerpts",
            "needs events.store = true: excerpts live in the store",
        );
    }
    config
}

fn positive(value: Option<u64>, path: &str, problems: &mut Problems) -> Option<u64> {
    match value {
        Some(0) => {
            problems.push(path, "must be greater than 0");
            None
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn read(text: &str) -> (EventsConfig, Problems) {
        let value: toml::Value = text.parse::<toml::Table>().unwrap().into();
        let mut problems = Problems::default();
        let config = validate(value.get("events"), &mut problems);
        (config, problems)
    }

    #[test]
    fn defaults_keep_no_content_and_every_event() {
        let (config, problems) = read("");
        assert!(problems.is_empty());
        assert_eq!(config, EventsConfig::default());
        assert!(!config.keep_flagged_excerpts && config.store);
        assert_eq!(config.event_retention, None);
    }

    #[test]
    fn reads_every_key_and_reports_bad_ones_with_their_path() {
        let (config, problems) = read(
            "[events]\nkeep_flagged_excerpts = true\nexcerpt_chars = 80\nretention_days = 7\nevent_retention_days = 365\n",
        );
        assert!(problems.is_empty(), "{problems}");
        assert!(config.keep_flagged_excerpts);
        assert_eq!(config.excerpt_chars, 80);
        assert_eq!(config.excerpt_retention, Duration::from_secs(7 * DAY));
        assert_eq!(config.event_retention, Some(Duration::from_secs(365 * DAY)));

        let (_, problems) = read(
            "[events]\nretention_days = 0\nexcerpt_chars = \"x\"\ncolour = 1\nstore = false\nkeep_flagged_excerpts = true\n",
        );
        let text = problems.to_string();
        for path in [
            "events.retention_days",
            "events.excerpt_chars",
            "events.colour",
            "events.keep_flagged_excerpts",
        ] {
            assert!(text.contains(path), "{path} missing: {text}");
        }
    }
}
