//! `warden lockdown on|off|status`: flips lockdown mode in the store; every running
//! gateway sharing the store follows within about a second.

use std::path::PathBuf;

use clap::Subcommand;

use crate::lockdown::{self, LockdownState};
use crate::store::Store;

#[derive(Subcommand)]
pub enum LockdownCommand {
    /// Turn lockdown on: untrusted tiers refused, limits halved, moderation stricter.
    On {
        /// Why (kept with the state, shown by `status`).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Turn lockdown off.
    Off,
    /// Show whether lockdown is on, since when, and who switched it.
    Status {
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(command: LockdownCommand, config: Option<PathBuf>) -> anyhow::Result<()> {
    let config = super::load_config(config.as_ref())?;
    let store = Store::open(&config.storage).await?;
    match command {
        LockdownCommand::On { reason } => {
            lockdown::save(&store, &LockdownState::new(true, "cli", reason)).await?;
            println!("lockdown on");
        }
        LockdownCommand::Off => {
            lockdown::save(&store, &LockdownState::new(false, "cli", None)).await?;
            println!("lockdown off");
        }
        LockdownCommand::Status { json } => {
            let state = lockdown::load(&store).await?;
            if json {
                println!("{}", serde_json::to_string(&state)?);
            } else if state.since_ms == 0 {
                println!("lockdown off (never switched)");
            } else {
                println!(
                    "lockdown {} since {} (by {}{})",
                    if state.on { "on" } else { "off" },
                    state.since_ms / 1000,
                    state.by,
                    state
                        .reason
                        .as_deref()
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default()
                );
            }
        }
    }
    Ok(())
}
