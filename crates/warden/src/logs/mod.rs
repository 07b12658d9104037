//! Warden's own log: tracing to stderr, JSON lines (or text), every line masked for
//! secrets before it is written (see `mask`). The events module writes the one `request`
//! line per request; this module decides how lines look and what they may not show.

pub mod mask;
pub mod writer;

use std::sync::Arc;

use crate::config::{Config, LogFormat};

/// Overrides `[log] format` (json | text), as `RUST_LOG` overrides `[log] level`.
pub const FORMAT_ENV: &str = "WARDEN_LOG_FORMAT";

/// Installs the subscriber; a second call (tests, the demo) keeps the first.
pub fn init(config: &Config) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| tracing_subscriber::EnvFilter::try_new(v).ok())
        .or_else(|| tracing_subscriber::EnvFilter::try_new(&config.log.level).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new("info"));
    let format = match std::env::var(FORMAT_ENV).ok().as_deref().map(str::trim) {
        Some("json") => LogFormat::Json,
        Some("text") => LogFormat::Text,
        _ => config.log.format,
    };
    let masker = match mask::Masker::new() {
        Ok(masker) => Arc::new(masker),
        Err(why) => {
            // The patterns are compiled into the binary, so this is a build defect; logging
            // unmasked is not an option, so log nothing rather than leak.
            eprintln!("error: log masking unavailable ({why}); logging is off");
            return;
        }
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer::Masking::new(std::io::stderr, masker));
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.with_ansi(false).try_init(),
    };
}
