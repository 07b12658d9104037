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
            Some(url) => Ok(Target::Remote(Box::new(AdminClient::new(
                url.trim(),
                &args.admin_token_env,
            )?))),
            None => Ok(Target::Local(config)),
        }
    }
}

/// The config and its store, for commands acting locally.
pub async fn open_local(config: Option<&PathBuf>) -> anyhow::Result<(Config, Store)> {
    let config = super::load_config(config)?;
    let store = Store::open(&config.storage).await?;
    Ok((config, store))
}
