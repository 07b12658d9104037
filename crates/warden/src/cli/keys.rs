//! `warden keys create|list|rotate|revoke`: virtual keys, in the store or through a
//! running Warden's admin API. The secret is printed once at creation and never again;
//! only its hash is kept.

use clap::Subcommand;
use serde_json::{json, Value};

use super::target::{open_existing, open_local, Target};
use crate::config::Config;
use crate::events::now_ms;
use crate::keys::lifecycle::{self, Declared, NewKey};

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

pub async fn run(command: KeysCommand, target: Target) -> anyhow::Result<()> {
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
            let new = NewKey {
                name,
                end_user: Some(end_user),
                trusted_user_field,
                expires_in_hours,
                models,
                endpoints,
            };
            let created = match &target {
                Target::Local(path) => {
                    let (config, store) = open_local(path.as_ref()).await?;
                    lifecycle::create(&store, &declared(&config), new).await?
                }
                Target::Remote(api) => api.post("/admin/v1/keys", json!(new)).await?,
            };
            print_secret(&created, json, |name| {
                format!("Created key '{name}'. Store this secret now; it cannot be shown again:")
            })
        }
        KeysCommand::Rotate {
            name,
            overlap_hours,
            json,
        } => {
            let rotated = match &target {
                Target::Local(path) => {
                    let (config, store) = open_local(path.as_ref()).await?;
                    lifecycle::rotate(&store, &declared(&config), &name, overlap_hours).await?
                }
                Target::Remote(api) => {
                    api.post(
                        &format!("/admin/v1/keys/{}/rotate", super::remote::encode(&name)),
                        json!({ "overlap_hours": overlap_hours }),
                    )
                    .await?
                }
            };
            let until = rotated["previous_valid_until"].as_i64().unwrap_or(0);
            print_secret(&rotated, json, |name| {
                format!(
                    "Rotated '{name}'. The old secret works until {}. Store the new one now; it cannot be shown again:",
                    crate::enforcement::format_ms(until * 1000)
                )
            })
        }
        KeysCommand::List { json } => {
            let rows = match &target {
                Target::Local(path) => {
                    let (config, store) = open_existing(path.as_ref()).await?;
                    lifecycle::list(&store, &declared(&config), now_ms() - 24 * 3_600_000).await?
                }
                Target::Remote(api) => match api.get("/admin/v1/keys").await?["data"].take() {
                    Value::Array(rows) => rows,
                    _ => anyhow::bail!("the admin API's key list has no data"),
                },
            };
            if json {
                println!("{}", Value::Array(rows));
            } else {
                print_table(&rows);
            }
            Ok(())
        }
        KeysCommand::RotateUpstream {
            name,
            from_env,
            organization,
            project,
        } => {
            let path = match &target {
                Target::Local(path) => path,
                Target::Remote(api) => {
                    return super::upstream_keys::add_remote(
                        api,
                        &name,
                        &from_env,
                        organization,
                        project,
                        true,
                    )
                    .await
                }
            };
            let (config, store) = open_local(path.as_ref()).await?;
            super::upstream_keys::add(
                &config,
                &store,
                &name,
                &from_env,
                organization,
                project,
                true,
            )
            .await
        }
        KeysCommand::Revoke { name } => {
            match &target {
                Target::Local(path) => {
                    let (config, store) = open_local(path.as_ref()).await?;
                    lifecycle::revoke(&store, &declared(&config), &name).await?
                }
                Target::Remote(api) => {
                    api.post(
                        &format!("/admin/v1/keys/{}/revoke", super::remote::encode(&name)),
                        json!({}),
                    )
                    .await?
                }
            };
            println!("revoked '{name}'");
            Ok(())
        }
    }
}

fn declared(config: &Config) -> Vec<Declared> {
    config
        .keys
        .iter()
        .map(|k| Declared {
            name: k.name.clone(),
            end_user: k.end_user,
            trusted_user_field: k.trusted_user_field,
        })
        .collect()
}

/// The secret alone on stdout (so scripts can capture it), the advice on stderr.
fn print_secret(answer: &Value, json: bool, advice: impl Fn(&str) -> String) -> anyhow::Result<()> {
    let (Some(name), Some(secret)) = (answer["name"].as_str(), answer["secret"].as_str()) else {
        anyhow::bail!("the answer carries no secret: {answer}");
    };
    if json {
        println!("{answer}");
    } else {
        eprintln!("{}", advice(name));
        println!("{secret}");
    }
    Ok(())
}

fn print_table(rows: &[Value]) {
    let text = |v: &Value| v.as_str().map(str::to_owned);
    println!(
        "{:<24} {:<10} {:<9} {:<8} {:<7} {:<8} {:>8} COUNTRIES",
        "NAME", "PREFIX", "END_USER", "TRUSTED", "ORIGIN", "STATUS", "REQ_24H"
    );
    for row in rows {
        let countries = row["countries"]
            .as_array()
            .map(|c| {
                c.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<24} {:<10} {:<9} {:<8} {:<7} {:<8} {:>8} {countries}",
            text(&row["name"]).unwrap_or_default(),
            text(&row["prefix"]).unwrap_or_else(|| "-".into()),
            text(&row["end_user"]).unwrap_or_default(),
            row["trusted_user_field"].as_bool().unwrap_or(false),
            text(&row["origin"]).unwrap_or_default(),
            text(&row["status"]).unwrap_or_default(),
            row["requests"].as_i64().unwrap_or(0),
        );
    }
}
