//! `warden audit verify`: walks the event log's hash chains and reports the first broken
//! link (event id and why); exit 1 if any link is broken.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use crate::events::verify;
use crate::store::Store;

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Recompute every stored event's hash and check each chain link by link.
    Verify {
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(command: AuditCommand, config: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let config = super::load_config(config.as_ref())?;
    let store = Store::open(&config.storage).await?;
    let AuditCommand::Verify { json } = command;
    let result = verify::verify(&store).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        for chain in &result.chains {
            let start = if chain.starts_after > 0 {
                format!(" from checkpoint seq {}", chain.starts_after)
            } else {
                String::new()
            };
            let state = match &chain.broken {
                None => "ok".to_owned(),
                Some(b) => match b.event_id {
                    Some(id) => format!("BROKEN at event {id} (seq {}): {}", b.seq, b.why),
                    None => format!("BROKEN after seq {}: {}", b.seq, b.why),
                },
            };
            println!(
                "chain {}: {} event(s){start}, head seq {}: {state}",
                chain.chain_id, chain.events, chain.head_seq
            );
        }
        println!("{}", result.summary());
    }
    Ok(if result.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
