//! `warden audit verify`: walks the event log's hash chains (in the store, or through a
//! running Warden's admin API) and reports the first broken link (event id and why);
//! exit 1 if any link is broken.

use std::process::ExitCode;

use clap::Subcommand;
use serde_json::Value;

use super::target::{open_existing, Target};
use crate::events::verify;

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Recompute every stored event's hash and check each chain link by link.
    Verify {
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(command: AuditCommand, target: Target) -> anyhow::Result<ExitCode> {
    let AuditCommand::Verify { json } = command;
    let result = match &target {
        Target::Local(path) => {
            let (_, store) = open_existing(path.as_ref()).await?;
            verify::verify(&store).await?.document()
        }
        Target::Remote(api) => api.get("/admin/v1/audit/verify").await?,
    };
    let Some(ok) = result["ok"].as_bool() else {
        anyhow::bail!("the verification result says neither ok nor broken: {result}");
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        print_text(&result);
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_text(result: &Value) {
    let int = |v: &Value| v.as_i64().unwrap_or(0);
    for chain in result["chains"].as_array().into_iter().flatten() {
        let start = match int(&chain["starts_after"]) {
            0 => String::new(),
            after => format!(" from checkpoint seq {after}"),
        };
        let broken = &chain["broken"];
        let state = if broken.is_null() {
            "ok".to_owned()
        } else {
            let why = broken["why"].as_str().unwrap_or_default();
            match broken["event_id"].as_i64() {
                Some(id) => format!("BROKEN at event {id} (seq {}): {why}", int(&broken["seq"])),
                None => format!("BROKEN after seq {}: {why}", int(&broken["seq"])),
            }
        };
        println!(
            "chain {}: {} event(s){start}, head seq {}: {state}",
            chain["chain_id"].as_str().unwrap_or_default(),
            int(&chain["events"]),
            int(&chain["head_seq"])
        );
    }
    println!("{}", result["summary"].as_str().unwrap_or_default());
}
