//! `warden users list|show|ban|suspend|unban|reset`: review end users and act on them, in
//! the store or through a running Warden's admin API. Running gateways (every replica)
//! pick a change up within a second.

use std::path::PathBuf;

use clap::Subcommand;
use serde_json::{json, Value};

use super::remote::{encode, AdminClient};
use super::target::{open_existing, open_local, Target};
use crate::admin_api::user_json;
use crate::config::{Config, EnvSource, ProcessEnv};
use crate::enforcement::{format_ms, ladder, Action, Actor, Enforcement};
use crate::events::{now_ms, EventLog, EventSink, StoreSink};
use crate::store::Store;

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

/// What an operator asks to be done to an end user.
struct Act {
    user: String,
    key: Option<String>,
    /// The admin API's verb: ban, suspend, unban, reset.
    verb: &'static str,
    action: Action,
    reason: String,
}

pub async fn run(command: UsersCommand, target: Target) -> anyhow::Result<()> {
    let act = match command {
        UsersCommand::List {
            sanctioned,
            limit,
            json,
        } => {
            let users = match &target {
                Target::Local(path) => {
                    let (config, store) = open_existing(path.as_ref()).await?;
                    store
                        .list_users(sanctioned, limit)
                        .await?
                        .iter()
                        .map(|u| user_json(&config.enforcement, u))
                        .collect()
                }
                Target::Remote(api) => data(
                    api.get(&format!(
                        "/admin/v1/users?sanctioned={sanctioned}&limit={limit}"
                    ))
                    .await?,
                )?,
            };
            print_list(&users, json);
            return Ok(());
        }
        UsersCommand::Show { user, key, json } => {
            let shown = match &target {
                Target::Local(path) => {
                    let (config, store) = open_existing(path.as_ref()).await?;
                    show_local(&config, &store, &user, key.as_deref()).await?
                }
                Target::Remote(api) => {
                    let key = match key {
                        Some(key) => key,
                        None => resolve(&user, remote_candidates(api, &user).await?, false)?,
                    };
                    api.get(&format!(
                        "/admin/v1/users/{}/{}",
                        encode(&key),
                        encode(&user)
                    ))
                    .await?
                }
            };
            print_user(&shown, json);
            return Ok(());
        }
        UsersCommand::Ban { user, key, reason } => Act {
            user,
            key,
            verb: "ban",
            action: Action::Ban,
            reason,
        },
        UsersCommand::Suspend {
            user,
            key,
            hours,
            reason,
        } => {
            let Some(period) = crate::error::wait::checked_hours(hours, false) else {
                anyhow::bail!(
                    "--hours must be more than 0 and at most {} (ten years)",
                    crate::error::wait::MAX_HOURS
                );
            };
            Act {
                user,
                key,
                verb: "suspend",
                action: Action::Suspend(period),
                reason,
            }
        }
        UsersCommand::Unban { user, key } => Act {
            user,
            key,
            verb: "unban",
            action: Action::Lift,
            reason: "lifted by operator".into(),
        },
        UsersCommand::Reset { user, key } => Act {
            user,
            key,
            verb: "reset",
            action: Action::Reset,
            reason: "reset by operator".into(),
        },
    };
    crate::identity::validate_user_id(&act.user).map_err(|e| anyhow::anyhow!("{}", e.message()))?;
    let after = match &target {
        Target::Local(path) => act_local(path.as_ref(), act).await?,
        Target::Remote(api) => act_remote(api, act).await?,
    };
    let until = after["status_until_ms"]
        .as_i64()
        .map(|u| format!(" until {}", format_ms(u)))
        .unwrap_or_default();
    println!(
        "{} (key {}): {}{until}",
        after["end_user"].as_str().unwrap_or_default(),
        after["key"].as_str().unwrap_or_default(),
        after["status"].as_str().unwrap_or_default()
    );
    Ok(())
}

async fn show_local(
    config: &Config,
    store: &Store,
    user: &str,
    key: Option<&str>,
) -> anyhow::Result<Value> {
    let key = match key {
        Some(key) => key.to_owned(),
        None => resolve(user, local_candidates(config, store, user).await?, false)?,
    };
    let found = store
        .user(&key, user)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no end user '{user}' under key '{key}'"))?;
    let half_life = config.enforcement.half_life;
    let strikes = store
        .strikes_since(&key, user, now_ms() - ladder::horizon_ms(half_life))
        .await?;
    let mut shown = user_json(&config.enforcement, &found);
    shown["strikes"] = serde_json::to_value(&strikes)?;
    Ok(shown)
}

async fn act_local(path: Option<&PathBuf>, act: Act) -> anyhow::Result<Value> {
    let (config, store) = open_local(path).await?;
    // Acting ahead of a user's first request needs the key named.
    let key = match act.key {
        Some(key) => key,
        None => resolve(
            &act.user,
            local_candidates(&config, &store, &act.user).await?,
            true,
        )?,
    };
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
    let acted = enforcement
        .act(&key, &act.user, act.action, &act.reason, Actor::Operator)
        .await;
    events.flush().await;
    acted?;
    let stored = store
        .user(&key, &act.user)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no end user '{}' under key '{key}'", act.user))?;
    Ok(user_json(&config.enforcement, &stored))
}

async fn act_remote(api: &AdminClient, act: Act) -> anyhow::Result<Value> {
    let key = match act.key {
        Some(key) => key,
        None => resolve(&act.user, remote_candidates(api, &act.user).await?, true)?,
    };
    let mut body = json!({ "reason": act.reason });
    if let Action::Suspend(period) = act.action {
        body["hours"] = json!(period.as_secs_f64() / 3600.0);
    }
    api.post(
        &format!(
            "/admin/v1/users/{}/{}/{}",
            encode(&key),
            encode(&act.user),
            act.verb
        ),
        body,
    )
    .await
}

async fn local_candidates(
    config: &Config,
    store: &Store,
    user: &str,
) -> anyhow::Result<Vec<Value>> {
    Ok(store
        .users_named(user)
        .await?
        .iter()
        .map(|u| user_json(&config.enforcement, u))
        .collect())
}

async fn remote_candidates(api: &AdminClient, user: &str) -> anyhow::Result<Vec<Value>> {
    data(
        api.get(&format!("/admin/v1/users?end_user={}", encode(user)))
            .await?,
    )
}

fn data(mut answer: Value) -> anyhow::Result<Vec<Value>> {
    match answer["data"].take() {
        Value::Array(rows) => Ok(rows),
        _ => anyhow::bail!("the admin API's answer has no data list"),
    }
}

/// The key of the user's only record; without `--key` the id must have been seen under
/// exactly one key.
fn resolve(user: &str, found: Vec<Value>, acting: bool) -> anyhow::Result<String> {
    let keys: Vec<&str> = found.iter().filter_map(|u| u["key"].as_str()).collect();
    match keys.as_slice() {
        [key] => Ok((*key).to_owned()),
        [] if acting => anyhow::bail!(
            "end user '{user}' has not been seen yet: pass --key KEY to act ahead of their first request"
        ),
        [] => anyhow::bail!("no end user '{user}' has been seen (see `warden users list`)"),
        _ => anyhow::bail!(
            "end user '{user}' is known under several keys ({}): pass --key KEY",
            keys.join(", ")
        ),
    }
}

fn print_list(users: &[Value], json: bool) {
    if json {
        println!("{}", Value::Array(users.to_vec()));
        return;
    }
    print!("{}", list_table(users));
}

/// The users table. RUNG is where the strikes put the user (clear, warn, throttle,
/// suspend, ban): warned and throttled users are `active` in STATUS, so without it their
/// standing was invisible here.
fn list_table(users: &[Value]) -> String {
    use std::fmt::Write as _;
    let mut out = format!(
        "{:<20} {:<28} {:>7} {:<9} {:<10} {:<20} LAST SEEN\n",
        "KEY", "END USER", "STRIKES", "RUNG", "STATUS", "UNTIL"
    );
    for u in users {
        let _ = writeln!(
            out,
            "{:<20} {:<28} {:>7.2} {:<9} {:<10} {:<20} {}",
            u["key"].as_str().unwrap_or_default(),
            u["end_user"].as_str().unwrap_or_default(),
            u["strike_weight"].as_f64().unwrap_or(0.0),
            u["rung"].as_str().unwrap_or("-"),
            u["status"].as_str().unwrap_or_default(),
            u["status_until_ms"]
                .as_i64()
                .map(format_ms)
                .unwrap_or_else(|| "-".into()),
            when(u["last_seen_ms"].as_i64().unwrap_or(0)),
        );
    }
    out
}

fn print_user(u: &Value, json: bool) {
    if json {
        println!("{u}");
        return;
    }
    let text = |field: &str| u[field].as_str().unwrap_or_default().to_owned();
    println!("key                {}", text("key"));
    println!("end user           {}", text("end_user"));
    println!("safety_identifier  {}", text("safety_identifier"));
    println!(
        "first / last seen  {} / {}",
        when(u["first_seen_ms"].as_i64().unwrap_or(0)),
        when(u["last_seen_ms"].as_i64().unwrap_or(0))
    );
    println!(
        "strike weight      {:.2} (now, after decay)",
        u["strike_weight"].as_f64().unwrap_or(0.0)
    );
    println!("rung               {}", text("rung"));
    println!(
        "status             {}{}{}",
        text("status"),
        u["status_until_ms"]
            .as_i64()
            .map(|until| format!(" until {}", format_ms(until)))
            .unwrap_or_default(),
        u["status_reason"]
            .as_str()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default()
    );
    let strikes = u["strikes"].as_array().cloned().unwrap_or_default();
    println!("strikes            {}", strikes.len());
    for s in &strikes {
        println!(
            "  {}  {:<24} {:>5.2}  {}",
            format_ms(s["at_ms"].as_i64().unwrap_or(0)),
            s["category"].as_str().unwrap_or_default(),
            s["weight"].as_f64().unwrap_or(0.0),
            s["request_id"].as_str().unwrap_or("-")
        );
    }
}

fn when(ms: i64) -> String {
    if ms <= 0 {
        "never".into()
    } else {
        format_ms(ms)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a test fails loudly")]
mod tests {
    /// Regression: warned and throttled users showed only `active`; the rung is a column.
    #[test]
    fn the_users_table_shows_the_strike_rung() {
        let user = serde_json::json!({"key": "app", "end_user": "u1", "strike_weight": 3.2,
            "status": "active", "rung": "throttle", "last_seen_ms": 0});
        let table = super::list_table(&[user]);
        assert!(table.lines().next().unwrap().contains("RUNG"), "{table}");
        assert!(
            table.lines().nth(1).unwrap().contains("throttle"),
            "{table}"
        );
    }
}
