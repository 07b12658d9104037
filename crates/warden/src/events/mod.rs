//! Every decision becomes an event, recorded through one interface. The hot path only
//! queues; a background writer batches events to the sinks (log lines, the store).

pub mod chain;
pub mod content;
pub mod flags;
mod log_line;
mod metrics;
pub mod spool;
mod store_sink;
pub mod sweeper;
pub mod verify;
mod writer;

pub use flags::{AuditNotes, Flag};
pub use metrics::Metrics;

pub use log_line::LogSink;
pub use store_sink::StoreSink;
pub use writer::{EventLog, EventOptions, EventSink, SinkFuture};

/// One row of the event log, flat so both store backends and the log line share it.
/// Other kinds are built with `..Default::default()`: `flag`, `enforcement`, `admin`, `case`.
#[derive(Debug, Clone, Default)]
pub struct EventRecord {
    pub request_id: String,
    pub at_ms: i64,
    /// `request` for now; later stages add their own kinds (flag, strike, admin, …).
    pub kind: &'static str,
    pub key_name: Option<String>,
    pub end_user: Option<String>,
    pub safety_identifier: Option<String>,
    pub client_ip: Option<String>,
    pub endpoint: &'static str,
    pub model: Option<String>,
    pub stream: bool,
    pub status: u16,
    /// `allowed`, `blocked`, `failed` (upstream or Warden fault) or `cancelled`.
    pub outcome: &'static str,
    /// The error code or stream ending that explains a non-allowed outcome.
    pub reason: Option<String>,
    pub latency_us: i64,
    pub upstream_us: Option<i64>,
    /// What the checks noticed, typed, for the strike reader and the abuse rates; the
    /// detail stores their text form.
    pub findings: Vec<crate::pipeline::Finding>,
    /// Stage trail and extras as compact JSON; `flags` holds the structured findings
    /// (`events::Flag`) the report counts by category.
    pub detail: Option<String>,
    /// ISO country code of the client IP, when `[geo]` has a database that places it.
    pub country: Option<String>,
    /// SHA-256 (hex) of the request's user text as the filters scan it, and its length in
    /// bytes: the content itself is never stored.
    pub content_sha256: Option<String>,
    pub content_len: Option<i64>,
    /// Opt-in (`[events] keep_flagged_excerpts`): a redacted excerpt of the flagged text,
    /// stored apart from the event (outside the hash chain) and deleted after
    /// `retention_days`.
    pub excerpt: Option<String>,
    /// Its number in this writer's audit chain, given when it is recorded, so an event
    /// lost on the way leaves a gap `audit verify` reports.
    pub chain_seq: Option<i64>,
    /// Whether it is in the local spool (`events::spool`), safe while the store is away.
    pub spooled: bool,
    /// Time per pipeline stage, µs, for `/metrics` (not stored).
    pub stage_us: Vec<(&'static str, u32)>,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
