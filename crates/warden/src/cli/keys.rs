//! `warden keys create|list|revoke`: virtual keys in the store. The secret is printed once
//! at creation and never again; only its hash is kept.

use std::path::PathBuf;

use clap::Subcommand;

use crate::config::EndUserPolicy;
use crate::events::now_ms;
use crate::keys::{display_prefix, generate_secret, hash_secret};
use crate::store::{Store, StoredKey};

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Create a key and print its secret (shown only this once).
    Create {
        #[arg(long)]
        name: String,
        /// Whether requests must name an end user.
        #[arg(long, default_value = "required", value_parser = ["required", "optional"])]
        end_user: String,
        /// Let the body's `user` / `safety_identifier` name the end user.
        #[arg(long)]
        trusted_user_field: bool,
        #[arg(long)]
        json: bool,
    },
    /// List keys (never their secrets).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key; running gateways stop accepting it within a second.
    Revoke { name: String },
}

pub async fn run(command: KeysCommand, config: Option<PathBuf>) -> anyhow::Result<()> {
    let config = super::load_config(config.as_ref())?;
    let store = Store::open(&config.storage).await?;
    match command {
        KeysCommand::Create {
            name,
            end_user,
            trusted_user_field,
            json,
        } => {
            if config.keys.iter().any(|k| k.name == name) {
                anyhow::bail!("'{name}' is declared in the config file; choose another name");
            }
            let valid = !name.is_empty()
                && name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
            if !valid {
                anyhow::bail!("key names are 1-64 characters of a-z, A-Z, 0-9, '-', '_' or '.'");
            }
            let secret =
                generate_secret().map_err(|_| anyhow::anyhow!("no system randomness available"))?;
            let key = StoredKey {
                name: name.clone(),
                secret_hash: hash_secret(secret.expose()),
                prefix: display_prefix(secret.expose()),
                end_user: EndUserPolicy::parse(&end_user).unwrap_or(EndUserPolicy::Required),
                trusted_user_field,
                created_at: now_ms() / 1000,
                revoked_at: None,
            };
            store.insert_key(&key).await?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "name": name, "secret": secret.expose() })
                );
            } else {
                eprintln!("Created key '{name}'. Store this secret now; it cannot be shown again:");
                println!("{}", secret.expose());
            }
        }
        KeysCommand::List { json } => {
            let keys = store.list_keys().await?;
            if json {
                let rows: Vec<_> = keys
                    .iter()
                    .map(|k| {
                        serde_json::json!({
                            "name": k.name, "prefix": k.prefix, "end_user": k.end_user.as_str(),
                            "trusted_user_field": k.trusted_user_field, "created_at": k.created_at,
                            "revoked_at": k.revoked_at, "origin": "store",
                        })
                    })
                    .chain(config.keys.iter().map(|k| {
                        serde_json::json!({
                            "name": k.name, "end_user": k.end_user.as_str(),
                            "trusted_user_field": k.trusted_user_field, "origin": "config",
                        })
                    }))
                    .collect();
                println!("{}", serde_json::Value::Array(rows));
            } else {
                println!(
                    "{:<24} {:<10} {:<9} {:<8} {:<7} STATUS",
                    "NAME", "PREFIX", "END_USER", "TRUSTED", "ORIGIN"
                );
                for k in &config.keys {
                    println!(
                        "{:<24} {:<10} {:<9} {:<8} {:<7} active",
                        k.name,
                        "-",
                        k.end_user.as_str(),
                        k.trusted_user_field,
                        "config"
                    );
                }
                for k in &keys {
                    let status = if k.revoked_at.is_some() {
                        "revoked"
                    } else {
                        "active"
                    };
                    println!(
                        "{:<24} {:<10} {:<9} {:<8} {:<7} {status}",
                        k.name,
                        k.prefix,
                        k.end_user.as_str(),
                        k.trusted_user_field,
                        "store"
                    );
                }
            }
        }
        KeysCommand::Revoke { name } => {
            if config.keys.iter().any(|k| k.name == name) {
                anyhow::bail!("'{name}' is declared in the config file: remove it there (or unset its secret) to revoke it");
            }
            if !store.revoke_key(&name, now_ms() / 1000).await? {
                anyhow::bail!("no active key named '{name}' (see `warden keys list`)");
            }
            println!("revoked '{name}'");
        }
    }
    Ok(())
}
