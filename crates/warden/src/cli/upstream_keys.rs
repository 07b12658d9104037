//! `warden upstream-keys add|activate|retire|list`: OpenAI keys kept in the store, sealed
//! under the master key (here, or by a running Warden through its admin API).
//! `warden keys rotate-upstream` is `add` + `activate` in one step.

use clap::Subcommand;
use serde_json::{json, Value};

use crate::config::{EnvSource, ProcessEnv};
use crate::enforcement::format_ms;
use crate::events::now_ms;
use crate::store::{Store, StoredUpstreamKey};
use crate::vault::MasterKey;

use super::remote::{encode, AdminClient};
use super::target::Target;

#[derive(Subcommand)]
pub enum UpstreamKeysCommand {
    /// Seal a key from an environment variable into the store (standby until activated).
    Add {
        name: String,
        /// The environment variable holding the OpenAI key (never a command-line value).
        #[arg(long)]
        from_env: String,
        #[arg(long)]
        organization: Option<String>,
        #[arg(long)]
        project: Option<String>,
        /// Make it the active key at once.
        #[arg(long)]
        activate: bool,
    },
    /// Make a key the one every gateway uses (within a second); the previous one retires.
    Activate { name: String },
    /// Retire a key; if it was active, gateways fall back to the environment or file key.
    Retire { name: String },
    /// The keys in the store (never their secrets).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Rotate a key now through OpenAI's Admin API ([openai_admin] key_env): a new
    /// project key is sealed and swapped in, the old one deleted upstream after the overlap.
    Rotate {
        name: String,
        /// Rotate now (scheduled rotation is `schedule`).
        #[arg(long, required = true)]
        now: bool,
    },
    /// Rotate a key every N days (0: never).
    Schedule {
        name: String,
        #[arg(long)]
        every_days: i64,
    },
    /// What the last key hygiene pass found (a running gateway's; `--run` runs one now).
    Hygiene {
        #[arg(long)]
        run: bool,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(command: UpstreamKeysCommand, target: Target) -> anyhow::Result<()> {
    let config = match target {
        Target::Local(config) => config,
        Target::Remote(api) => return remote(command, &api).await,
    };
    let config = super::load_config(config.as_ref())?;
    let store = Store::open(&config.storage).await?;
    match command {
        UpstreamKeysCommand::Add {
            name,
            from_env,
            organization,
            project,
            activate,
        } => {
            add(
                &config,
                &store,
                &name,
                &from_env,
                organization,
                project,
                activate,
            )
            .await
        }
        UpstreamKeysCommand::Activate { name } => {
            if !store.activate_upstream_key(&name, now_ms()).await? {
                anyhow::bail!("no upstream key named '{name}' (see `warden upstream-keys list`)");
            }
            activated(&name);
            Ok(())
        }
        UpstreamKeysCommand::Retire { name } => {
            if !store.retire_upstream_key(&name, now_ms()).await? {
                anyhow::bail!("no upstream key named '{name}' that is not already retired");
            }
            println!("retired '{name}'");
            Ok(())
        }
        UpstreamKeysCommand::List { json } => {
            let rows: Vec<Value> = store
                .upstream_keys()
                .await?
                .iter()
                .map(crate::admin_api::upstream_key_row)
                .collect();
            print_list(&rows, json);
            Ok(())
        }
        UpstreamKeysCommand::Rotate { name, .. } => rotate_local(&config, store, &name).await,
        UpstreamKeysCommand::Schedule { name, every_days } => {
            if !(0..=3650).contains(&every_days) {
                anyhow::bail!("--every-days is 1 to 3650 (0: no schedule)");
            }
            let days = (every_days > 0).then_some(every_days);
            if !store.set_upstream_rotation(&name, days).await? {
                anyhow::bail!("no upstream key named '{name}' (see `warden upstream-keys list`)");
            }
            scheduled(&name, days);
            Ok(())
        }
        UpstreamKeysCommand::Hygiene { json, .. } => {
            let status = store.setting(crate::hygiene::STATUS_SETTING).await?;
            let status: Value = status
                .and_then(|s| serde_json::from_str(&s).ok())
                .ok_or_else(|| anyhow::anyhow!("no key hygiene pass has run on this store yet"))?;
            print_hygiene(&status, json);
            Ok(())
        }
    }
}

/// `rotate NAME --now` without a running gateway: this process talks to the Admin API.
async fn rotate_local(
    config: &crate::config::Config,
    store: Store,
    name: &str,
) -> anyhow::Result<()> {
    let (secrets, problems, _) = crate::config::Secrets::load(config, &ProcessEnv);
    let admin_key = secrets.openai_admin_key.as_ref().ok_or_else(|| {
        anyhow::anyhow!(
            "rotation needs OpenAI's Admin key: set [openai_admin] key_env ({problems})"
        )
    })?;
    let master_env = &config.upstream.master_key_env;
    let master = secrets
        .master_key
        .as_ref()
        .and_then(|k| MasterKey::parse(k.expose()))
        .ok_or_else(|| anyhow::anyhow!("{master_env} must hold the vault's master key"))?;
    crate::vault::unlock(&store, &master).await?;
    let hygiene = crate::hygiene::Hygiene::new(
        config.openai_admin.clone(),
        Some(admin_key),
        &config.upstream.base_url,
        store.clone(),
        Some(std::sync::Arc::new(master)),
        Vec::new(),
    )?;
    let rotated = hygiene.rotate(name, "manual").await;
    let events = hygiene.take_pending_events();
    if !events.is_empty() {
        store.append_events(&events).await?;
    }
    let new = rotated?;
    rotated_message(name, &new, hygiene.rotation_overlap().as_secs());
    Ok(())
}

fn rotated_message(old: &str, new: &str, overlap_secs: u64) {
    println!("rotated '{old}' to '{new}'; gateways switch within a second; '{old}' keeps working upstream for {overlap_secs}s and is then deleted there by a running gateway");
}

fn scheduled(name: &str, days: Option<i64>) {
    match days {
        Some(days) => println!("'{name}' is rotated every {days} days"),
        None => println!("'{name}' is no longer rotated on a schedule"),
    }
}

fn print_hygiene(status: &Value, json: bool) {
    if json {
        println!("{status}");
        return;
    }
    let list = |field: &str| status[field].as_array().cloned().unwrap_or_default();
    println!(
        "key hygiene pass at {}",
        format_ms(status["at_ms"].as_i64().unwrap_or(0))
    );
    for error in list("errors") {
        println!("  error: {}", error.as_str().unwrap_or_default());
    }
    println!("managed keys:");
    for k in list("managed") {
        println!(
            "  {:<28} {:<24} {}",
            k["name"].as_str().unwrap_or("-"),
            k["api_key_id"].as_str().unwrap_or("-"),
            k["project"].as_str().unwrap_or("-")
        );
    }
    println!("unmanaged keys (any of them can be a leak):");
    for k in list("unmanaged") {
        println!(
            "  {:<24} {:<18} {:<24} {}",
            k["api_key_id"].as_str().unwrap_or("-"),
            k["redacted_value"].as_str().unwrap_or("-"),
            k["project"].as_str().unwrap_or("-"),
            k["owner"].as_str().unwrap_or("-")
        );
    }
    println!("usage outside Warden:");
    for e in list("excess") {
        println!(
            "  {} at {}: +{} requests, +{} tokens",
            e["key"].as_str().unwrap_or("-"),
            e["bucket_start"].as_str().unwrap_or("-"),
            e["excess_requests"],
            e["excess_tokens"]
        );
    }
    println!("spend (OpenAI vs Warden's estimate, USD):");
    for c in list("costs") {
        println!(
            "  {} {:>10.2} {:>10.2}{}",
            c["day"].as_str().unwrap_or("-"),
            c["openai_usd"].as_f64().unwrap_or(0.0),
            c["warden_usd"].as_f64().unwrap_or(0.0),
            if c["complete"] == true {
                ""
            } else {
                " (today, partial)"
            }
        );
    }
}

/// The same commands through the admin API: the gateway seals with its master key.
async fn remote(command: UpstreamKeysCommand, api: &AdminClient) -> anyhow::Result<()> {
    match command {
        UpstreamKeysCommand::Add {
            name,
            from_env,
            organization,
            project,
            activate,
        } => add_remote(api, &name, &from_env, organization, project, activate).await,
        UpstreamKeysCommand::Activate { name } => {
            api.post(
                &format!("/admin/v1/upstream-keys/{}/activate", encode(&name)),
                json!({}),
            )
            .await?;
            activated(&name);
            Ok(())
        }
        UpstreamKeysCommand::Retire { name } => {
            api.post(
                &format!("/admin/v1/upstream-keys/{}/retire", encode(&name)),
                json!({}),
            )
            .await?;
            println!("retired '{name}'");
            Ok(())
        }
        UpstreamKeysCommand::Rotate { name, .. } => {
            let answer = api
                .post(
                    &format!("/admin/v1/upstream-keys/{}/rotate", encode(&name)),
                    json!({}),
                )
                .await?;
            let overlap = answer["old_deleted_after_secs"].as_u64().unwrap_or(0);
            rotated_message(&name, answer["new_key"].as_str().unwrap_or("?"), overlap);
            Ok(())
        }
        UpstreamKeysCommand::Schedule { name, every_days } => {
            let answer = api
                .post(
                    &format!("/admin/v1/upstream-keys/{}/schedule", encode(&name)),
                    json!({"rotate_every_days": every_days}),
                )
                .await?;
            scheduled(&name, answer["rotate_every_days"].as_i64());
            Ok(())
        }
        UpstreamKeysCommand::Hygiene { run, json } => {
            let status = if run {
                api.post("/admin/v1/upstream-keys/hygiene/run", json!({}))
                    .await?
            } else {
                api.get("/admin/v1/upstream-keys/hygiene").await?
            };
            print_hygiene(&status, json);
            Ok(())
        }
        UpstreamKeysCommand::List { json } => {
            let mut answer = api.get("/admin/v1/upstream-keys").await?;
            let rows = answer["data"]
                .take()
                .as_array()
                .cloned()
                .unwrap_or_default();
            print_list(&rows, json);
            Ok(())
        }
    }
}

/// `upstream-keys add` / `keys rotate-upstream` through the admin API; the key is read
/// from the environment here and sent in the request body.
pub async fn add_remote(
    api: &AdminClient,
    name: &str,
    from_env: &str,
    organization: Option<String>,
    project: Option<String>,
    activate: bool,
) -> anyhow::Result<()> {
    let secret = ProcessEnv
        .get(from_env)
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| anyhow::anyhow!("environment variable {from_env} is not set"))?;
    api.post(
        "/admin/v1/upstream-keys",
        json!({"name": name, "key": secret.trim(), "organization": organization,
               "project": project, "activate": activate}),
    )
    .await?;
    added(name, activate);
    Ok(())
}

fn activated(name: &str) {
    println!("'{name}' is now the active upstream key; gateways switch within a second");
}

fn added(name: &str, activate: bool) {
    if activate {
        println!(
            "added '{name}' and made it the active upstream key; gateways switch within a second"
        );
    } else {
        println!("added '{name}' (standby); `warden upstream-keys activate {name}` puts it in use");
    }
}

fn print_list(rows: &[Value], json: bool) {
    if json {
        println!("{}", Value::Array(rows.to_vec()));
        return;
    }
    println!(
        "{:<24} {:<8} {:<20} {:<20} CHANGED",
        "NAME", "STATE", "ORGANIZATION", "PROJECT"
    );
    for k in rows {
        println!(
            "{:<24} {:<8} {:<20} {:<20} {}",
            k["name"].as_str().unwrap_or_default(),
            k["state"].as_str().unwrap_or_default(),
            k["organization"].as_str().unwrap_or("-"),
            k["project"].as_str().unwrap_or("-"),
            format_ms(k["updated_ms"].as_i64().unwrap_or(0))
        );
    }
}

/// Seals the key held by `from_env` and stores it; activates it when asked.
pub async fn add(
    config: &crate::config::Config,
    store: &Store,
    name: &str,
    from_env: &str,
    organization: Option<String>,
    project: Option<String>,
    activate: bool,
) -> anyhow::Result<()> {
    let master_env = &config.upstream.master_key_env;
    let master = ProcessEnv
        .get(master_env)
        .and_then(|k| MasterKey::parse(&k))
        .ok_or_else(|| anyhow::anyhow!("{master_env} must hold the vault's master key: 32 random bytes in base64 (e.g. `openssl rand -base64 32`)"))?;
    crate::vault::unlock(store, &master).await?;
    let secret = ProcessEnv
        .get(from_env)
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| anyhow::anyhow!("environment variable {from_env} is not set"))?;
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !valid {
        anyhow::bail!("key names are 1-64 characters of a-z, A-Z, 0-9, '-', '_' or '.'");
    }
    let now = now_ms();
    store
        .add_upstream_key(&StoredUpstreamKey {
            name: name.to_owned(),
            sealed: master.seal(name, secret.trim().as_bytes())?,
            organization,
            project,
            state: "standby".into(),
            created_ms: now,
            updated_ms: now,
            ..Default::default()
        })
        .await?;
    if activate {
        store.activate_upstream_key(name, now).await?;
    }
    added(name, activate);
    Ok(())
}
