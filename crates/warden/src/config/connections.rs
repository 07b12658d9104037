//! `[server]` connection bounds: how long a connection may stay silent or idle, how large
//! its headers may be, and how many connections each listener holds.

use std::time::Duration;

use super::problems::Problems;
use super::raw::RawServer;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionConfig {
    /// A new connection must send its first byte (and http1 its headers) within this.
    pub first_byte_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
    /// Request headers above this many bytes are refused (431 for http1).
    pub max_header_bytes: usize,
    /// Open connections on the public listener, in all and per client IP. The total is
    /// also capped at start to what the process's file-descriptor limit leaves after a
    /// reserve for the admin listener, the store and upstream.
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// Open connections on the admin listener (health checks, metrics, the operator).
    pub admin_max_connections: usize,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            first_byte_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(90),
            max_header_bytes: 64 * 1024,
            max_connections: 10_000,
            max_connections_per_ip: 1_000,
            admin_max_connections: 256,
        }
    }
}

pub fn validate(raw: &RawServer, problems: &mut Problems) -> ConnectionConfig {
    let d = ConnectionConfig::default();
    let mut count = |value: Option<u64>, default: usize, min: u64, path: &str| match value {
        Some(n) if n < min => {
            problems.push(path, format!("must be at least {min}"));
            default
        }
        Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
        None => default,
    };
    let max_connections = count(
        raw.max_connections,
        d.max_connections,
        1,
        "server.max_connections",
    );
    let max_connections_per_ip = count(
        raw.max_connections_per_ip,
        d.max_connections_per_ip,
        1,
        "server.max_connections_per_ip",
    );
    let admin_max_connections = count(
        raw.admin_max_connections,
        d.admin_max_connections,
        1,
        "server.admin_max_connections",
    );
    let max_header_bytes = count(
        raw.max_header_bytes,
        d.max_header_bytes,
        8192,
        "server.max_header_bytes",
    );
    let mut secs = |value: Option<u64>, default: Duration, path: &str| match value {
        Some(0) => {
            problems.push(path, "must be greater than 0");
            default
        }
        Some(n) if n > 86_400 => {
            problems.push(path, "must be at most 86400 (a day)");
            default
        }
        Some(n) => Duration::from_secs(n),
        None => default,
    };
    ConnectionConfig {
        first_byte_timeout: secs(
            raw.first_byte_timeout_secs,
            d.first_byte_timeout,
            "server.first_byte_timeout_secs",
        ),
        idle_timeout: secs(
            raw.idle_timeout_secs,
            d.idle_timeout,
            "server.idle_timeout_secs",
        ),
        max_header_bytes,
        max_connections,
        max_connections_per_ip,
        admin_max_connections,
    }
}
