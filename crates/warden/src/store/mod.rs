//! The durable store behind one interface, with two real backends: SQLite (the embedded
//! default) and PostgreSQL (shared by replicas). Each query is written once and run on
//! whichever pool is open.

/// Runs the same sqlx code on either pool; `$n` placeholders work on both engines.
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match $store {
            Store::Sqlite($pool) => $body,
            Store::Postgres($pool) => $body,
        }
    };
}

mod migrations;
mod spend;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, Row, SqlitePool};

use crate::config::{EndUserPolicy, StorageConfig};
use crate::events::EventRecord;
use crate::keys::{hash_hex, parse_hash_hex, SecretHash};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("a key named '{0}' already exists")]
    DuplicateKey(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("cannot create the data directory {0}: {1}")]
    Directory(String, std::io::Error),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

#[derive(Clone)]
pub enum Store {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

#[derive(Debug, Clone)]
pub struct StoredKey {
    pub name: String,
    pub secret_hash: SecretHash,
    pub prefix: String,
    pub end_user: EndUserPolicy,
    pub trusted_user_field: bool,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

impl Store {
    /// Opens (creating if needed) and migrates the configured store.
    pub async fn open(config: &StorageConfig) -> Result<Store, StoreError> {
        let store = match config {
            StorageConfig::Sqlite { path } => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| StoreError::Directory(dir.display().to_string(), e))?;
                }
                Store::Sqlite(open_sqlite(Some(path)).await?)
            }
            StorageConfig::SqliteMemory => Store::Sqlite(open_sqlite(None).await?),
            StorageConfig::Postgres { url } => {
                let options = PgConnectOptions::from_str(url)?;
                let pool = PgPoolOptions::new()
                    .max_connections(8)
                    .acquire_timeout(Duration::from_secs(5))
                    .connect_with(options)
                    .await?;
                Store::Postgres(pool)
            }
        };
        migrations::run(&store).await?;
        Ok(store)
    }

    pub fn backend(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        on_pool!(self, pool => {
            sqlx::query("SELECT 1").execute(pool).await?;
        });
        Ok(())
    }

    pub async fn insert_key(&self, key: &StoredKey) -> Result<(), StoreError> {
        let sql = "INSERT INTO virtual_keys (name, secret_hash, prefix, end_user, trusted_user_field, created_at) \
                   VALUES ($1, $2, $3, $4, $5, $6)";
        let result = on_pool!(self, pool => sqlx::query(sql)
            .bind(&key.name)
            .bind(hash_hex(&key.secret_hash))
            .bind(&key.prefix)
            .bind(key.end_user.as_str())
            .bind(key.trusted_user_field)
            .bind(key.created_at)
            .execute(pool)
            .await
            .map(|_| ()));
        match result {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(db)) if db.is_unique_violation() => {
                Err(StoreError::DuplicateKey(key.name.clone()))
            }
            Err(err) => Err(err.into()),
        }
    }

    /// Every key, revoked ones included, oldest first.
    pub async fn list_keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        let sql = "SELECT name, secret_hash, prefix, end_user, trusted_user_field, created_at, revoked_at \
                   FROM virtual_keys ORDER BY created_at, name";
        on_pool!(self, pool => {
            let rows = sqlx::query(sql).fetch_all(pool).await?;
            rows.iter()
                .map(|row| {
                    let hash: String = row.try_get("secret_hash")?;
                    let end_user: String = row.try_get("end_user")?;
                    Ok(StoredKey {
                        name: row.try_get("name")?,
                        secret_hash: parse_hash_hex(&hash)
                            .ok_or_else(|| StoreError::Corrupt("virtual_keys.secret_hash".into()))?,
                        prefix: row.try_get("prefix")?,
                        end_user: EndUserPolicy::parse(&end_user)
                            .ok_or_else(|| StoreError::Corrupt("virtual_keys.end_user".into()))?,
                        trusted_user_field: row.try_get("trusted_user_field")?,
                        created_at: row.try_get("created_at")?,
                        revoked_at: row.try_get("revoked_at")?,
                    })
                })
                .collect()
        })
    }

    /// Marks a key revoked; `false` when no active key has that name.
    pub async fn revoke_key(&self, name: &str, at: i64) -> Result<bool, StoreError> {
        let sql = "UPDATE virtual_keys SET revoked_at = $1 WHERE name = $2 AND revoked_at IS NULL";
        let done = on_pool!(self, pool => sqlx::query(sql).bind(at).bind(name).execute(pool).await?.rows_affected());
        Ok(done > 0)
    }

    /// Returns the stored value, or stores `value` and returns it when there was none.
    /// Two replicas racing both end with the same value.
    pub async fn setting_or_insert(&self, name: &str, value: &str) -> Result<String, StoreError> {
        let insert =
            "INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING";
        let select = "SELECT value FROM settings WHERE name = $1";
        on_pool!(self, pool => {
            sqlx::query(insert).bind(name).bind(value).execute(pool).await?;
            let row = sqlx::query(select).bind(name).fetch_one(pool).await?;
            Ok(row.try_get::<String, _>("value")?)
        })
    }

    /// Writes a batch of events as one multi-row INSERT (the group commit): one round
    /// trip to the database per batch, not per event.
    pub async fn append_events(&self, events: &[EventRecord]) -> Result<(), StoreError> {
        // 16 columns per row: well under both engines' bind-parameter limits.
        for chunk in events.chunks(1000) {
            on_pool!(self, pool => {
                let mut insert = sqlx::QueryBuilder::new(
                    "INSERT INTO events (request_id, at_ms, kind, key_name, end_user, safety_identifier, \
                     client_ip, endpoint, model, stream, status, outcome, reason, latency_us, upstream_us, detail) ",
                );
                insert.push_values(chunk, |mut row, e| {
                    row.push_bind(&e.request_id)
                        .push_bind(e.at_ms)
                        .push_bind(e.kind)
                        .push_bind(&e.key_name)
                        .push_bind(&e.end_user)
                        .push_bind(&e.safety_identifier)
                        .push_bind(&e.client_ip)
                        .push_bind(e.endpoint)
                        .push_bind(&e.model)
                        .push_bind(e.stream)
                        .push_bind(i32::from(e.status))
                        .push_bind(e.outcome)
                        .push_bind(&e.reason)
                        .push_bind(e.latency_us)
                        .push_bind(e.upstream_us)
                        .push_bind(&e.detail);
                });
                insert.build().execute(pool).await?;
            });
        }
        Ok(())
    }

    pub async fn count_events(&self) -> Result<i64, StoreError> {
        on_pool!(self, pool => {
            let row = sqlx::query("SELECT COUNT(*) AS n FROM events").fetch_one(pool).await?;
            Ok(row.try_get::<i64, _>("n")?)
        })
    }
}

async fn open_sqlite(path: Option<&Path>) -> Result<SqlitePool, sqlx::Error> {
    let options = match path {
        Some(path) => SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // WAL + NORMAL: a commit survives a process crash; only power loss can undo
            // the last transactions.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5)),
        None => SqliteConnectOptions::from_str("sqlite::memory:")?,
    };
    let max = if path.is_some() { 4 } else { 1 };
    SqlitePoolOptions::new()
        .max_connections(max)
        .connect_with(options)
        .await
}

#[cfg(test)]
mod tests;
