//! Creating, rotating, revoking and listing store keys: one implementation behind both
//! `warden keys` (local store) and `/admin/v1/keys`, so they check the same things and
//! answer with the same documents.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{display_prefix, generate_secret, hash_secret};
use crate::config::EndUserPolicy;
use crate::endpoint::Endpoint;
use crate::events::now_ms;
use crate::store::{Store, StoreError, StoredKey};

/// A key from the config file, as listings show it.
pub struct Declared {
    pub name: String,
    pub end_user: EndUserPolicy,
    pub trusted_user_field: bool,
}

/// Why a key operation was refused: a client mistake (with an error code) or a store
/// failure.
#[derive(Debug)]
pub enum KeyOpError {
    Invalid(&'static str, String),
    Conflict(&'static str, String),
    NotFound(String),
    Store(StoreError),
}

impl std::fmt::Display for KeyOpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyOpError::Invalid(_, m) | KeyOpError::Conflict(_, m) | KeyOpError::NotFound(m) => {
                f.write_str(m)
            }
            KeyOpError::Store(err) => write!(f, "{err}"),
        }
    }
}

impl std::error::Error for KeyOpError {}

/// `POST /admin/v1/keys` and `warden keys create`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    pub name: String,
    #[serde(default)]
    pub end_user: Option<String>,
    #[serde(default)]
    pub trusted_user_field: bool,
    #[serde(default)]
    pub expires_in_hours: Option<f64>,
    #[serde(default)]
    pub models: Option<Vec<String>>,
    #[serde(default)]
    pub endpoints: Option<Vec<String>>,
}

fn is_declared(declared: &[Declared], name: &str) -> bool {
    declared.iter().any(|d| d.name == name)
}

/// Stores a new key; the answer holds its secret, the only time it is ever shown.
pub async fn create(
    store: &Store,
    declared: &[Declared],
    new: NewKey,
) -> Result<Value, KeyOpError> {
    let invalid = |why: String| KeyOpError::Invalid("invalid_key_request", why);
    if let Some(h) = new.expires_in_hours {
        if crate::error::wait::checked_hours(h, false).is_none() {
            return Err(invalid(format!(
                "expires_in_hours must be a number more than 0 and at most {} (ten years)",
                crate::error::wait::MAX_HOURS
            )));
        }
    }
    if let Some(unknown) = new
        .endpoints
        .iter()
        .flatten()
        .find(|e| Endpoint::from_label(e).is_none())
    {
        return Err(invalid(format!(
            "unknown endpoint '{unknown}' (known: {})",
            Endpoint::all_labels().collect::<Vec<_>>().join(", ")
        )));
    }
    let end_user = match new.end_user.as_deref() {
        None => EndUserPolicy::Required,
        Some(text) => EndUserPolicy::parse(text)
            .ok_or_else(|| invalid(format!("end_user '{text}' is not 'required' or 'optional'")))?,
    };
    let name = new.name;
    if is_declared(declared, &name) {
        return Err(KeyOpError::Conflict(
            "key_in_config",
            format!("'{name}' is declared in the config file; choose another name"),
        ));
    }
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !valid {
        return Err(invalid(
            "key names are 1-64 characters of a-z, A-Z, 0-9, '-', '_' or '.'".into(),
        ));
    }
    let secret = generate_secret()
        .map_err(|_| KeyOpError::Store(StoreError::Corrupt("no system randomness".into())))?;
    let now = now_ms() / 1000;
    let key = StoredKey {
        name: name.clone(),
        secret_hash: hash_secret(secret.expose()),
        prefix: display_prefix(secret.expose()),
        end_user,
        trusted_user_field: new.trusted_user_field,
        created_at: now,
        revoked_at: None,
        expires_at: new.expires_in_hours.map(|h| now + (h * 3600.0) as i64),
        allowed_models: new.models,
        allowed_endpoints: new.endpoints,
        previous_hash: None,
        previous_until: None,
    };
    match store.insert_key(&key).await {
        Ok(()) => {}
        Err(StoreError::DuplicateKey(name)) => {
            return Err(KeyOpError::Conflict(
                "key_exists",
                format!("a key named '{name}' already exists (see `warden keys list`)"),
            ))
        }
        Err(err) => return Err(KeyOpError::Store(err)),
    }
    Ok(json!({ "name": name, "secret": secret.expose(), "expires_at": key.expires_at }))
}

/// Gives a key a new secret; the old one works until the overlap ends.
pub async fn rotate(
    store: &Store,
    declared: &[Declared],
    name: &str,
    overlap_hours: f64,
) -> Result<Value, KeyOpError> {
    if crate::error::wait::checked_hours(overlap_hours, true).is_none() {
        return Err(KeyOpError::Invalid(
            "invalid_overlap",
            format!(
                "overlap_hours must be a number from 0 to {} (ten years)",
                crate::error::wait::MAX_HOURS
            ),
        ));
    }
    if is_declared(declared, name) {
        return Err(KeyOpError::Conflict("key_in_config", format!(
            "'{name}' is declared in the config file: rotate its secret where the config's secret_env comes from"
        )));
    }
    let secret = generate_secret()
        .map_err(|_| KeyOpError::Store(StoreError::Corrupt("no system randomness".into())))?;
    let until = now_ms() / 1000 + (overlap_hours * 3600.0) as i64;
    let rotated = store
        .rotate_key(
            name,
            &hash_secret(secret.expose()),
            &display_prefix(secret.expose()),
            until,
        )
        .await
        .map_err(KeyOpError::Store)?;
    if !rotated {
        return Err(not_found(name));
    }
    Ok(json!({ "name": name, "secret": secret.expose(), "previous_valid_until": until }))
}

pub async fn revoke(store: &Store, declared: &[Declared], name: &str) -> Result<Value, KeyOpError> {
    if is_declared(declared, name) {
        return Err(KeyOpError::Conflict("key_in_config", format!(
            "'{name}' is declared in the config file: remove it there (or unset its secret) to revoke it"
        )));
    }
    if !store
        .revoke_key(name, now_ms() / 1000)
        .await
        .map_err(KeyOpError::Store)?
    {
        return Err(not_found(name));
    }
    Ok(json!({ "name": name, "revoked": true }))
}

fn not_found(name: &str) -> KeyOpError {
    KeyOpError::NotFound(format!(
        "no active key named '{name}' (see `warden keys list`)"
    ))
}

/// Every key, config ones first, with its lifecycle, its use since `since_ms` and the
/// countries it has ever been used from.
pub async fn list(
    store: &Store,
    declared: &[Declared],
    since_ms: i64,
) -> Result<Vec<Value>, StoreError> {
    let usage = store.key_usage_since(since_ms).await?;
    let stored = store.list_keys().await?;
    let countries = store.key_countries().await?;
    let now = now_ms() / 1000;
    let used = |name: &str| {
        let u = usage.iter().find(|u| u.key_name == name);
        json!({
            "requests": u.map_or(0, |u| u.requests),
            "blocked": u.map_or(0, |u| u.blocked),
            "last_seen_ms": u.map(|u| u.last_seen_ms),
            "client_ips": u.map_or(0, |u| u.client_ips),
            // Every country the key was ever used from, first seen first.
            "countries": countries
                .iter()
                .filter(|c| c.key_name == name)
                .map(|c| c.country.as_str())
                .collect::<Vec<_>>(),
        })
    };
    let mut rows = Vec::with_capacity(declared.len() + stored.len());
    for d in declared {
        let mut row = json!({
            "name": d.name, "origin": "config", "status": "active", "revoked": false,
            "prefix": null, "end_user": d.end_user.as_str(),
            "trusted_user_field": d.trusted_user_field,
            "created_at": null, "revoked_at": null, "expires_at": null,
            "allowed_models": null, "allowed_endpoints": null, "previous_valid_until": null,
        });
        merge(&mut row, used(&d.name));
        rows.push(row);
    }
    for k in &stored {
        let status = if k.revoked_at.is_some() {
            "revoked"
        } else if k.expires_at.is_some_and(|at| at <= now) {
            "expired"
        } else {
            "active"
        };
        let mut row = json!({
            "name": k.name, "origin": "store", "status": status,
            "revoked": k.revoked_at.is_some(),
            "prefix": k.prefix, "end_user": k.end_user.as_str(),
            "trusted_user_field": k.trusted_user_field,
            "created_at": k.created_at, "revoked_at": k.revoked_at, "expires_at": k.expires_at,
            "allowed_models": k.allowed_models, "allowed_endpoints": k.allowed_endpoints,
            "previous_valid_until": k.previous_until,
        });
        merge(&mut row, used(&k.name));
        rows.push(row);
    }
    Ok(rows)
}

fn merge(row: &mut Value, more: Value) {
    if let (Some(row), Value::Object(more)) = (row.as_object_mut(), more) {
        row.extend(more);
    }
}
