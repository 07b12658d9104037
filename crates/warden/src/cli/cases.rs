//! `warden cases list|show`: OpenAI safety cases received, the end user each maps to, and
//! what Warden did; plus deliveries still waiting or given up on.

use std::path::PathBuf;

use clap::Subcommand;

use crate::enforcement::format_ms;
use crate::store::Store;

#[derive(Subcommand)]
pub enum CasesCommand {
    /// Cases, newest first, then deliveries not yet acted on.
    List {
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// One case.
    Show {
        case_id: String,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(command: CasesCommand, config: Option<PathBuf>) -> anyhow::Result<()> {
    let config = super::load_config(config.as_ref())?;
    let store = Store::open(&config.storage).await?;
    match command {
        CasesCommand::List { limit, json } => {
            let cases = store.list_cases(limit).await?;
            let waiting = store.unsettled_deliveries(limit).await?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "cases": cases, "unsettled_deliveries": waiting })
                );
                return Ok(());
            }
            println!(
                "{:<24} {:<13} {:<20} {:<16} {:<24} {:<9} RECEIVED",
                "CASE", "NOTICE", "REASON", "KEY", "END USER", "ACTION"
            );
            for c in &cases {
                println!(
                    "{:<24} {:<13} {:<20} {:<16} {:<24} {:<9} {}",
                    c.case_id,
                    c.notice_type,
                    c.reason.as_deref().unwrap_or("-"),
                    c.key_name.as_deref().unwrap_or("-"),
                    c.end_user.as_deref().unwrap_or("(not seen)"),
                    c.action,
                    format_ms(c.received_ms)
                );
            }
            if !waiting.is_empty() {
                println!("\nDeliveries not acted on yet:");
                for d in &waiting {
                    println!(
                        "  {} {} case {} — {} after {} attempt(s): {}",
                        d.webhook_id,
                        d.event_type,
                        d.case_id.as_deref().unwrap_or("-"),
                        d.state,
                        d.attempts,
                        d.last_error.as_deref().unwrap_or("-")
                    );
                }
            }
        }
        CasesCommand::Show { case_id, json } => {
            let Some(c) = store.case(&case_id).await? else {
                anyhow::bail!("no case '{case_id}' has been acted on (see `warden cases list` for deliveries still pending)");
            };
            if json {
                println!("{}", serde_json::to_string(&c)?);
                return Ok(());
            }
            println!("case               {}", c.case_id);
            println!("notice             {}", c.notice_type);
            println!("policy reason      {}", c.reason.as_deref().unwrap_or("-"));
            println!(
                "safety_identifier  {}",
                c.safety_identifier.as_deref().unwrap_or("-")
            );
            match (&c.key_name, &c.end_user) {
                (Some(k), Some(u)) => println!("end user           {u} (key {k})"),
                _ => println!("end user           not in Warden's records (never seen, or seen before the mapping was kept)"),
            }
            println!("action             {}", c.action);
            println!(
                "received / acted   {} / {}",
                format_ms(c.received_ms),
                format_ms(c.acted_ms)
            );
            println!("webhook delivery   {}", c.webhook_id);
        }
    }
    Ok(())
}
