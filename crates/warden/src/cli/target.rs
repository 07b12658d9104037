//! Where an operator command acts: the store named by the config (local), or a running
//! Warden's admin API (`--admin-url`). Commands build the same documents either way and
//! print them with the same renderers, so the output does not say which was used.

use std::path::PathBuf;

use super::remote::AdminClient;
use crate::config::Config;
use crate::store::Store;

pub enum Target {
    Local(Option<PathBuf>),
    Remote(Box<AdminClient>),
}

/// The global flags that pick the target.
#[derive(clap::Args, Clone)]
pub struct TargetArgs {
    /// A running Warden's admin listener (e.g. http://127.0.0.1:8081): operator commands
    /// call its admin API instead of opening the store.
    #[arg(long, env = "WARDEN_ADMIN_URL", global = true)]
    pub admin_url: Option<String>,
    /// The environment variable holding the admin token for --admin-url.
    #[arg(
        long,
        env = "WARDEN_ADMIN_TOKEN_ENV",
        default_value = "WARDEN_ADMIN_TOKEN",
        global = true
    )]
    pub admin_token_env: String,
}

impl Target {
    pub fn choose(args: &TargetArgs, config: Option<PathBuf>) -> anyhow::Result<Target> {
        match args.admin_url.as_deref().filter(|u| !u.trim().is_empty()) {
            Some(url) => {
                let client = AdminClient::new(url.trim(), &args.admin_token_env)?;
                eprintln!("warden: using the admin API at {}", url.trim());
                Ok(Target::Remote(Box::new(client)))
            }
            None => Ok(Target::Local(config)),
        }
    }
}

/// The config and its store, for commands that change something (a SQLite store is
/// created when missing, as `serve` would). Says on stderr which store it is.
pub async fn open_local(config: Option<&PathBuf>) -> anyhow::Result<(Config, Store)> {
    let (config, source) = load(config)?;
    eprintln!(
        "warden: using {} ({source})",
        super::announce::store(&config.storage)
    );
    let store = Store::open(&config.storage).await?;
    Ok((config, store))
}

/// The same for read-only commands: a SQLite store that does not exist is an error, never
/// created (an empty new store would answer "no keys" from the wrong directory).
pub async fn open_existing(config: Option<&PathBuf>) -> anyhow::Result<(Config, Store)> {
    let (loaded, source) = load(config)?;
    if let Some(problem) = missing_store(&loaded.storage, &source) {
        anyhow::bail!(problem);
    }
    open_local(config).await
}

fn load(path: Option<&PathBuf>) -> anyhow::Result<(Config, String)> {
    let config = super::load_config(path)?;
    let source = match path {
        Some(path) => format!("from {}", path.display()),
        None => "embedded defaults: no --config or WARDEN_CONFIG".into(),
    };
    Ok((config, source))
}

/// Why a read-only command cannot open the store, when its SQLite file is absent.
fn missing_store(storage: &crate::config::StorageConfig, source: &str) -> Option<String> {
    match storage {
        crate::config::StorageConfig::Sqlite { path } if !path.exists() => Some(format!(
            "no store at {} ({source}). Run this command with the config `warden serve` uses \
             (--config FILE or WARDEN_CONFIG), from the directory it runs in, or use \
             --admin-url to ask the running gateway",
            super::announce::store(storage)
        )),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a test fails loudly")]
mod tests {
    /// Regression: read-only commands created an empty store under ./warden-data and
    /// answered from it.
    #[tokio::test]
    async fn read_only_commands_never_create_a_store() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("absent/warden.db");
        let config = dir.path().join("w.toml");
        std::fs::write(
            &config,
            format!("[storage]\nurl = \"sqlite://{}\"\n", db.display()),
        )
        .unwrap();
        let err = super::open_existing(Some(&config))
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("no store at") && err.contains("absent/warden.db"),
            "{err}"
        );
        assert!(!db.exists() && !db.parent().unwrap().exists());
        // A command that changes something still creates it, as serve would.
        super::open_local(Some(&config)).await.unwrap();
        assert!(db.exists());
        super::open_existing(Some(&config)).await.unwrap();
    }
}
