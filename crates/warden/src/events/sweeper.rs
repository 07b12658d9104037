//! Retention: deletes expired excerpts and, when `[events] event_retention_days` is set,
//! events older than that — leaving a checkpoint per chain so `warden audit verify` still
//! proves the rest (see `Store::cut_events_before`).

use crate::config::events::EventsConfig;
use crate::store::Store;

/// Runs one sweep now and then every `sweep_interval`, for the life of the process.
pub fn spawn(store: Store, config: EventsConfig) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(config.sweep_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            sweep(&store, &config).await;
        }
    })
}

/// One pass; failures are logged and retried at the next tick.
pub async fn sweep(store: &Store, config: &EventsConfig) {
    let now = super::now_ms();
    match store.delete_expired_excerpts(now).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(deleted = n, "expired event excerpts deleted"),
        Err(err) => tracing::warn!(%err, "could not delete expired excerpts"),
    }
    if let Some(keep) = config.event_retention {
        let cutoff = now.saturating_sub(keep.as_millis() as i64);
        match store.cut_events_before(cutoff, now).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                deleted = n,
                "events past retention deleted; checkpoints recorded"
            ),
            Err(err) => tracing::warn!(%err, "could not delete events past retention"),
        }
    }
}
