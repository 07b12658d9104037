//! `warden lockdown on|off|status`: flips lockdown mode in the store (every running
//! gateway sharing it follows within about a second) or through a running Warden's admin
//! API (applied there at once).

use clap::Subcommand;
use serde_json::json;

use super::target::{open_existing, open_local, Target};
use crate::lockdown::{self, LockdownState};

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

pub async fn run(command: LockdownCommand, target: Target) -> anyhow::Result<()> {
    let (switch, json) = match command {
        LockdownCommand::On { reason } => (Some((true, reason)), false),
        LockdownCommand::Off => (Some((false, None)), false),
        LockdownCommand::Status { json } => (None, json),
    };
    let switching = switch.is_some();
    let state: LockdownState = match (&target, switch) {
        (Target::Local(path), Some((on, reason))) => {
            let (_, store) = open_local(path.as_ref()).await?;
            let state = LockdownState::new(on, "cli", reason);
            lockdown::save(&store, &state).await?;
            state
        }
        (Target::Local(path), None) => {
            let (_, store) = open_existing(path.as_ref()).await?;
            lockdown::load(&store).await?
        }
        (Target::Remote(api), Some((on, reason))) => serde_json::from_value(
            api.post("/admin/v1/lockdown", json!({ "on": on, "reason": reason }))
                .await?,
        )?,
        (Target::Remote(api), None) => {
            serde_json::from_value(api.get("/admin/v1/lockdown").await?)?
        }
    };
    if switching {
        println!("lockdown {}", if state.on { "on" } else { "off" });
    } else if json {
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
    Ok(())
}
