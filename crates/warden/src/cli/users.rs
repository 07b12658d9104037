//! `warden users list|show|ban|suspend|unban|reset`: review end users and act on them in
//! the store. Running gateways (every replica) pick a change up within a second.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Subcommand;

use crate::config::{EnvSource, ProcessEnv};
use crate::enforcement::{format_ms, ladder, Action, Actor, Enforcement};
use crate::events::{now_ms, EventLog, EventSink, StoreSink};
use crate::store::{Store, StoredUser};

#[derive(Subcommand)]
pub enum UsersCommand {
    /// End users, heaviest strike weight first.
    List {
        /// Only suspended and banned users.
        #[arg(long)]
        sanctioned: bool,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// One end user: standing and recent strikes.
    Show {
        user: String,
        #[arg(long)]
        key: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Ban until lifted; requests get 403 `user_banned`.
    Ban {
        user: String,
        #[arg(long)]
        key: Option<String>,
        #[arg(long, default_value = "banned by operator")]
        reason: String,
    },
    /// Suspend for a number of hours; requests get 403 `user_suspended`.
    Suspend {
        user: String,
        #[arg(long)]
        key: Option<String>,
        #[arg(long)]
        hours: f64,
        #[arg(long, default_value = "suspended by operator")]
        reason: String,
    },
    /// Lift a ban or suspension (strikes stay).
    Unban {
        user: String,
        #[arg(long)]
        key: Option<String>,
    },
    /// Lift any sanction and forget every strike.
    Reset {
        user: String,
        #[arg(long)]
        key: Option<String>,
    },
}

pub async fn run(command: UsersCommand, config: Option<PathBuf>) -> anyhow::Result<()> {
    let config = super::load_config(config.as_ref())?;
    let store = Store::open(&config.storage).await?;
    let secret = ProcessEnv
        .get(&config.identity.safety_identifier_secret_env)
        .map(crate::secret::Secret::new);
    let safety_ids = crate::gateway::safety_identifiers(secret.as_ref(), &store).await?;
    let sinks: Vec<Box<dyn EventSink>> = vec![Box::new(StoreSink::new(
        store.clone(),
        config.events.excerpt_retention,
    ))];
    let events = EventLog::start(sinks);
    let (_, offences) = crate::enforcement::offence_channel(&config.enforcement);
    let enforcement = Enforcement::new(
        config.enforcement.clone(),
        store.clone(),
        events.clone(),
        safety_ids,
        offences,
    );
    let result = dispatch(command, &store, &enforcement).await;
    events.flush().await;
    result
}

async fn dispatch(
    command: UsersCommand,
    store: &Store,
    enforcement: &Arc<Enforcement>,
) -> anyhow::Result<()> {
    let half_life = enforcement.config().half_life;
    match command {
        UsersCommand::List {
            sanctioned,
            limit,
            json,
        } => {
            let users = store.list_users(sanctioned, limit).await?;
            if json {
                println!("{}", serde_json::to_string(&users)?);
                return Ok(());
            }
            println!(
                "{:<20} {:<28} {:>7} {:<10} {:<20} LAST SEEN",
                "KEY", "END USER", "STRIKES", "STATUS", "UNTIL"
            );
            for u in &users {
                println!(
                    "{:<20} {:<28} {:>7.2} {:<10} {:<20} {}",
                    u.key_name,
                    u.end_user,
                    ladder::decayed(u.strike_weight, u.strike_at_ms, now_ms(), half_life),
                    u.status,
                    u.status_until_ms
                        .map(format_ms)
                        .unwrap_or_else(|| "-".into()),
                    when(u.last_seen_ms),
                );
            }
        }
        UsersCommand::Show { user, key, json } => {
            let found = resolve(store, &user, key.as_deref(), false).await?;
            let strikes = store
                .strikes_since(
                    &found.key_name,
                    &user,
                    now_ms() - ladder::horizon_ms(half_life),
                )
                .await?;
            if json {
                let mut body = serde_json::to_value(&found)?;
                body["strikes"] = serde_json::to_value(&strikes)?;
                println!("{body}");
                return Ok(());
            }
            println!("key                {}", found.key_name);
            println!("end user           {}", found.end_user);
            println!("safety_identifier  {}", found.safety_identifier);
            println!(
                "first / last seen  {} / {}",
                when(found.first_seen_ms),
                when(found.last_seen_ms)
            );
            println!(
                "strike weight      {:.2} (now, after decay)",
                ladder::decayed(found.strike_weight, found.strike_at_ms, now_ms(), half_life)
            );
            println!(
                "status             {}{}{}",
                found.status,
                found
                    .status_until_ms
                    .map(|u| format!(" until {}", format_ms(u)))
                    .unwrap_or_default(),
                found
                    .status_reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            );
            println!("strikes            {}", strikes.len());
            for s in &strikes {
                println!(
                    "  {}  {:<24} {:>5.2}  {}",
                    format_ms(s.at_ms),
                    s.category,
                    s.weight,
                    s.request_id.as_deref().unwrap_or("-")
                );
            }
        }
        UsersCommand::Ban { user, key, reason } => {
            act(store, enforcement, &user, key, Action::Ban, &reason).await?
        }
        UsersCommand::Suspend {
            user,
            key,
            hours,
            reason,
        } => {
            if !(hours.is_finite() && hours > 0.0) {
                anyhow::bail!("--hours must be a positive number");
            }
            let period = Duration::from_secs_f64(hours * 3600.0);
            act(
                store,
                enforcement,
                &user,
                key,
                Action::Suspend(period),
                &reason,
            )
            .await?
        }
        UsersCommand::Unban { user, key } => {
            act(
                store,
                enforcement,
                &user,
                key,
                Action::Lift,
                "lifted by operator",
            )
            .await?
        }
        UsersCommand::Reset { user, key } => {
            act(
                store,
                enforcement,
                &user,
                key,
                Action::Reset,
                "reset by operator",
            )
            .await?
        }
    }
    Ok(())
}

async fn act(
    store: &Store,
    enforcement: &Enforcement,
    user: &str,
    key: Option<String>,
    action: Action,
    reason: &str,
) -> anyhow::Result<()> {
    crate::identity::validate_user_id(user).map_err(|e| anyhow::anyhow!("{}", e.message()))?;
    // Acting ahead of a user's first request needs the key named.
    let key_name = match key {
        Some(key) => key,
        None => resolve(store, user, None, true).await?.key_name,
    };
    let standing = enforcement
        .act(&key_name, user, action, reason, Actor::Operator)
        .await?;
    let until = standing
        .status
        .until_ms()
        .map(|u| format!(" until {}", format_ms(u)))
        .unwrap_or_default();
    println!(
        "{user} (key {key_name}): {}{until}",
        standing.status.label()
    );
    Ok(())
}

/// The stored user; without `--key` the id must have been seen under exactly one key.
async fn resolve(
    store: &Store,
    user: &str,
    key: Option<&str>,
    acting: bool,
) -> anyhow::Result<StoredUser> {
    if let Some(key) = key {
        return store
            .user(key, user)
            .await?
            .ok_or_else(|| anyhow::anyhow!("no end user '{user}' under key '{key}'"));
    }
    let mut found = store.users_named(user).await?;
    match found.len() {
        1 => Ok(found.remove(0)),
        0 if acting => anyhow::bail!(
            "end user '{user}' has not been seen yet: pass --key KEY to act ahead of their first request"
        ),
        0 => anyhow::bail!("no end user '{user}' has been seen (see `warden users list`)"),
        _ => anyhow::bail!(
            "end user '{user}' is known under several keys ({}): pass --key KEY",
            found
                .iter()
                .map(|u| u.key_name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn when(ms: i64) -> String {
    if ms <= 0 {
        "never".into()
    } else {
        format_ms(ms)
    }
}
