//! Reloads when the config file's contents change. Polls the path (not an inode), so an
//! editor or a Kubernetes ConfigMap that replaces the file by rename is seen like an
//! in-place write; a change is acted on once two polls in a row read the same new
//! contents, so a file caught half-written is not loaded.

use std::sync::Weak;
use std::time::Duration;

use super::{reload, sha256_hex, Trigger};
use crate::gateway::Gateway;

/// Between polls: a change is applied 0.5-1 s after the last write. Reading and hashing
/// a config file of a few KiB twice a second costs nothing measurable.
pub const POLL: Duration = Duration::from_millis(500);

pub fn spawn(gateway: Weak<Gateway>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // New contents seen once, waiting for the next poll to confirm them.
        let mut settling: Option<String> = None;
        loop {
            tick.tick().await;
            let Some(gateway) = gateway.upgrade() else {
                return;
            };
            let Some(path) = gateway.reloads.path() else {
                return;
            };
            // A missing file is mid-rename or deleted: keep serving, look again.
            let Ok(bytes) = tokio::fs::read(path).await else {
                continue;
            };
            let digest = sha256_hex(&bytes);
            if gateway.reloads.attempted().as_deref() == Some(digest.as_str()) {
                settling = None;
                continue;
            }
            if settling.as_deref() == Some(digest.as_str()) {
                settling = None;
                reload(&gateway, Trigger::FileChange).await;
            } else {
                settling = Some(digest);
            }
        }
    })
}
