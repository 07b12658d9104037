//! `warden upstream-keys add|activate|retire|list`: OpenAI keys kept in the store, sealed
//! under the master key. `warden keys rotate-upstream` is `add` + `activate` in one step.

use clap::Subcommand;

use crate::config::{EnvSource, ProcessEnv};
use crate::enforcement::format_ms;
use crate::events::now_ms;
use crate::store::{Store, StoredUpstreamKey};
use crate::vault::MasterKey;

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
}

/// Why these commands refuse `--admin-url`.
pub const LOCAL_ONLY: &str = "upstream keys are sealed with the master key where the store is: run this without --admin-url (or use POST /admin/v1/upstream-keys)";

pub async fn run(
    command: UpstreamKeysCommand,
    target: super::target::Target,
) -> anyhow::Result<()> {
    let super::target::Target::Local(config) = target else {
        anyhow::bail!("{LOCAL_ONLY}");
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
            println!("'{name}' is now the active upstream key; gateways switch within a second");
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
            let keys = store.upstream_keys().await?;
            if json {
                let rows: Vec<_> = keys
                    .iter()
                    .map(|k| serde_json::json!({"name": k.name, "state": k.state, "organization": k.organization, "project": k.project, "created_ms": k.created_ms, "updated_ms": k.updated_ms}))
                    .collect();
                println!("{}", serde_json::Value::Array(rows));
                return Ok(());
            }
            println!(
                "{:<24} {:<8} {:<20} {:<20} CHANGED",
                "NAME", "STATE", "ORGANIZATION", "PROJECT"
            );
            for k in &keys {
                println!(
                    "{:<24} {:<8} {:<20} {:<20} {}",
                    k.name,
                    k.state,
                    k.organization.as_deref().unwrap_or("-"),
                    k.project.as_deref().unwrap_or("-"),
                    format_ms(k.updated_ms)
                );
            }
            Ok(())
        }
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
        })
        .await?;
    if activate {
        store.activate_upstream_key(name, now).await?;
        println!(
            "added '{name}' and made it the active upstream key; gateways switch within a second"
        );
    } else {
        println!("added '{name}' (standby); `warden upstream-keys activate {name}` puts it in use");
    }
    Ok(())
}
