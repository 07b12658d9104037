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
        /// The key stops working this many hours after creation.
        #[arg(long)]
        expires_in_hours: Option<f64>,
        /// Models it may use, comma-separated (`gpt-4o*` matches a prefix).
        #[arg(long, value_delimiter = ',')]
        models: Option<Vec<String>>,
        /// Endpoints it may use, comma-separated: chat.completions, responses,
        /// completions, embeddings, moderations, images.generations, models,
        /// models.retrieve.
        #[arg(long, value_delimiter = ',')]
        endpoints: Option<Vec<String>>,
        #[arg(long)]
        json: bool,
    },
    /// Give a key a new secret (printed once); the old one keeps working for the overlap.
    Rotate {
        name: String,
        /// Hours the old secret stays valid, so clients can move over without errors.
        #[arg(long, default_value_t = 24.0)]
        overlap_hours: f64,
        #[arg(long)]
        json: bool,
    },
    /// List keys (never their secrets).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Rotate the upstream OpenAI key: seal the new one (from an environment variable) and
    /// make it active; gateways switch within a second, in-flight requests finish on the
    /// old one. Retire the old key at OpenAI once traffic has moved.
    RotateUpstream {
        name: String,
        #[arg(long)]
        from_env: String,
        #[arg(long)]
        organization: Option<String>,
        #[arg(long)]
        project: Option<String>,
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
            expires_in_hours,
            models,
            endpoints,
            json,
        } => {
            if let Some(h) = expires_in_hours {
                if !(h.is_finite() && h > 0.0) {
                    anyhow::bail!("--expires-in-hours must be a positive number");
                }
            }
            if let Some(unknown) = endpoints
                .iter()
                .flatten()
                .find(|e| !crate::endpoint::Endpoint::LABELS.contains(&e.as_str()))
            {
                anyhow::bail!(
                    "unknown endpoint '{unknown}' (known: {})",
                    crate::endpoint::Endpoint::LABELS.join(", ")
                );
            }
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
                expires_at: expires_in_hours.map(|h| now_ms() / 1000 + (h * 3600.0) as i64),
                allowed_models: models,
                allowed_endpoints: endpoints,
                previous_hash: None,
                previous_until: None,
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
                            "revoked_at": k.revoked_at, "origin": "store", "expires_at": k.expires_at,
                            "allowed_models": k.allowed_models, "allowed_endpoints": k.allowed_endpoints,
                            "previous_valid_until": k.previous_until,
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
                    let expired = k.expires_at.is_some_and(|at| at <= now_ms() / 1000);
                    let status = if k.revoked_at.is_some() {
                        "revoked"
                    } else if expired {
                        "expired"
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
        KeysCommand::Rotate {
            name,
            overlap_hours,
            json,
        } => {
            if !(overlap_hours.is_finite() && overlap_hours >= 0.0) {
                anyhow::bail!("--overlap-hours must be a number >= 0");
            }
            if config.keys.iter().any(|k| k.name == name) {
                anyhow::bail!("'{name}' is declared in the config file: rotate its secret where the config's secret_env comes from");
            }
            let secret =
                generate_secret().map_err(|_| anyhow::anyhow!("no system randomness available"))?;
            let until = now_ms() / 1000 + (overlap_hours * 3600.0) as i64;
            let rotated = store
                .rotate_key(
                    &name,
                    &hash_secret(secret.expose()),
                    &display_prefix(secret.expose()),
                    until,
                )
                .await?;
            if !rotated {
                anyhow::bail!("no active key named '{name}' (see `warden keys list`)");
            }
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "name": name, "secret": secret.expose(), "previous_valid_until": until })
                );
            } else {
                eprintln!(
                    "Rotated '{name}'. The old secret works until {}. Store the new one now; it cannot be shown again:",
                    crate::enforcement::format_ms(until * 1000)
                );
                println!("{}", secret.expose());
            }
        }
        KeysCommand::RotateUpstream {
            name,
            from_env,
            organization,
            project,
        } => {
            super::upstream_keys::add(
                &config,
                &store,
                &name,
                &from_env,
                organization,
                project,
                true,
            )
            .await?
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
