//! `warden cases list|show`: OpenAI safety cases received, the end user each maps to, and
//! what Warden did; plus deliveries still waiting or given up on. From the store or a
//! running Warden's admin API.

use clap::Subcommand;
use serde_json::{json, Value};

use super::remote::encode;
use super::target::{open_existing, Target};
use crate::enforcement::format_ms;

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

pub async fn run(command: CasesCommand, target: Target) -> anyhow::Result<()> {
    match command {
        CasesCommand::List { limit, json } => {
            let listing = match &target {
                Target::Local(path) => {
                    let (_, store) = open_existing(path.as_ref()).await?;
                    json!({
                        "cases": store.list_cases(limit).await?,
                        "unsettled_deliveries": store.unsettled_deliveries(limit).await?,
                    })
                }
                Target::Remote(api) => {
                    let mut answer = api.get("/admin/v1/cases").await?;
                    let mut take = |field: &str| -> Value {
                        let mut rows = answer[field].take().as_array().cloned().unwrap_or_default();
                        rows.truncate(usize::try_from(limit).unwrap_or(0));
                        Value::Array(rows)
                    };
                    json!({ "cases": take("data"), "unsettled_deliveries": take("unsettled_deliveries") })
                }
            };
            if json {
                println!("{listing}");
            } else {
                print_list(&listing);
            }
        }
        CasesCommand::Show { case_id, json } => {
            let case = match &target {
                Target::Local(path) => {
                    let (_, store) = open_existing(path.as_ref()).await?;
                    let Some(c) = store.case(&case_id).await? else {
                        anyhow::bail!("no case '{case_id}' has been acted on (see `warden cases list` for deliveries still pending)");
                    };
                    serde_json::to_value(c)?
                }
                Target::Remote(api) => {
                    api.get(&format!("/admin/v1/cases/{}", encode(&case_id)))
                        .await?
                }
            };
            if json {
                println!("{case}");
            } else {
                print_case(&case);
            }
        }
    }
    Ok(())
}

fn text<'a>(v: &'a Value, field: &str, missing: &'a str) -> &'a str {
    v[field].as_str().unwrap_or(missing)
}

fn print_list(listing: &Value) {
    println!(
        "{:<24} {:<13} {:<20} {:<16} {:<24} {:<9} RECEIVED",
        "CASE", "NOTICE", "REASON", "KEY", "END USER", "ACTION"
    );
    for c in listing["cases"].as_array().into_iter().flatten() {
        println!(
            "{:<24} {:<13} {:<20} {:<16} {:<24} {:<9} {}",
            text(c, "case_id", ""),
            text(c, "notice_type", ""),
            text(c, "reason", "-"),
            text(c, "key_name", "-"),
            text(c, "end_user", "(not seen)"),
            text(c, "action", ""),
            format_ms(c["received_ms"].as_i64().unwrap_or(0))
        );
    }
    let waiting = listing["unsettled_deliveries"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if !waiting.is_empty() {
        println!("\nDeliveries not acted on yet:");
        for d in &waiting {
            println!(
                "  {} {} case {} — {} after {} attempt(s): {}",
                text(d, "webhook_id", ""),
                text(d, "event_type", ""),
                text(d, "case_id", "-"),
                text(d, "state", ""),
                d["attempts"].as_i64().unwrap_or(0),
                text(d, "last_error", "-")
            );
        }
    }
}

fn print_case(c: &Value) {
    println!("case               {}", text(c, "case_id", ""));
    println!("notice             {}", text(c, "notice_type", ""));
    println!("policy reason      {}", text(c, "reason", "-"));
    println!("safety_identifier  {}", text(c, "safety_identifier", "-"));
    match (c["key_name"].as_str(), c["end_user"].as_str()) {
        (Some(k), Some(u)) => println!("end user           {u} (key {k})"),
        _ => println!("end user           not in Warden's records (never seen, or seen before the mapping was kept)"),
    }
    println!("action             {}", text(c, "action", ""));
    println!(
        "received / acted   {} / {}",
        format_ms(c["received_ms"].as_i64().unwrap_or(0)),
        format_ms(c["acted_ms"].as_i64().unwrap_or(0))
    );
    println!("webhook delivery   {}", text(c, "webhook_id", ""));
}
