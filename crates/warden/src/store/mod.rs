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

pub mod audit;
mod hygiene;
mod key_countries;
mod lockdown;
mod migrations;
mod notices;
mod objects;
mod overview;
mod users;
mod vault;
pub use hygiene::MinuteCounts;

pub use key_countries::KeyCountry;
pub use notices::{Delivery, SafetyCase};
pub use objects::ObjectOwner;
pub use overview::{Bucket, Count, EventFilter, EventRow, KeyUsage};
pub use users::{Sighting, StatusChange, StoredStrike, StoredUser};
pub use vault::StoredUpstreamKey;
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

/// How long `open_for_serving` waits for PostgreSQL before starting without it.
const START_PROBE: Duration = Duration::from_secs(2);

/// What `open_for_serving` found.
pub enum Opened {
    /// Reachable and migrated.
    Ready(Store),
    /// Not reachable yet; queries fail until it is.
    Waiting(Store),
}

/// An outage rather than a mistake: nothing answered, or it went away mid-query.
fn is_unreachable(err: &sqlx::Error) -> bool {
    matches!(
        err,
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed
    ) || matches!(err, sqlx::Error::Database(db) if db.code().is_some_and(|c| c.starts_with("57P")))
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
    /// Unix seconds after which the key stops working.
    pub expires_at: Option<i64>,
    /// Model patterns (`prefix*` allowed) and endpoint labels the key may use.
    pub allowed_models: Option<Vec<String>>,
    pub allowed_endpoints: Option<Vec<String>>,
    /// The secret a rotation replaced, still accepted until `previous_until`.
    pub previous_hash: Option<SecretHash>,
    pub previous_until: Option<i64>,
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

    /// Like `open`, for `serve`: a PostgreSQL server that does not answer yet is not
    /// fatal. The pool connects lazily and `Opened::Waiting` says the schema is not
    /// checked yet; `migrate_when_reachable` finishes the job. A refused login, a missing
    /// database or a bad URL stay fatal: those are configuration mistakes, not outages.
    pub async fn open_for_serving(config: &StorageConfig) -> Result<Opened, StoreError> {
        let StorageConfig::Postgres { url } = config else {
            return Store::open(config).await.map(Opened::Ready);
        };
        let options = PgConnectOptions::from_str(url)?;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy_with(options);
        let store = Store::Postgres(pool);
        // A short probe first: the pool's own wait (5 s) would hold up the start.
        let unreachable = match tokio::time::timeout(START_PROBE, store.ping()).await {
            Err(_) => Some(format!("no answer within {START_PROBE:?}")),
            Ok(Err(StoreError::Database(err))) if is_unreachable(&err) => Some(err.to_string()),
            Ok(Err(err)) => return Err(err),
            Ok(Ok(())) => None,
        };
        if let Some(why) = unreachable {
            tracing::warn!(
                why,
                "PostgreSQL does not answer: serving without the store until it does"
            );
            return Ok(Opened::Waiting(store));
        }
        migrations::run(&store).await?;
        Ok(Opened::Ready(store))
    }

    /// Retries the migrations until they succeed (the store answers again).
    pub async fn migrate_when_reachable(&self, every: Duration) {
        loop {
            // On a blocking thread: rustc cannot prove the migration's transaction future
            // Send for every lifetime (sqlx's executor bounds), which a spawned task needs.
            let (store, runtime) = (self.clone(), tokio::runtime::Handle::current());
            let attempt =
                tokio::task::spawn_blocking(move || runtime.block_on(migrations::run(&store)))
                    .await
                    .unwrap_or_else(|_| Err(StoreError::Corrupt("the migration panicked".into())));
            match attempt {
                Ok(()) => return,
                Err(err) => tracing::warn!(%err, "the store is still unreachable; retrying"),
            }
            tokio::time::sleep(every).await;
        }
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
        let sql = "INSERT INTO virtual_keys (name, secret_hash, prefix, end_user, trusted_user_field, created_at, \
                   expires_at, allowed_models, allowed_endpoints) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
        let result = on_pool!(self, pool => sqlx::query(sql)
            .bind(&key.name)
            .bind(hash_hex(&key.secret_hash))
            .bind(&key.prefix)
            .bind(key.end_user.as_str())
            .bind(key.trusted_user_field)
            .bind(key.created_at)
            .bind(key.expires_at)
            .bind(key.allowed_models.as_ref().map(|m| m.join(",")))
            .bind(key.allowed_endpoints.as_ref().map(|e| e.join(",")))
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
        let sql = "SELECT name, secret_hash, prefix, end_user, trusted_user_field, created_at, revoked_at, \
                   expires_at, allowed_models, allowed_endpoints, previous_hash, previous_until \
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
                        expires_at: row.try_get("expires_at")?,
                        allowed_models: list(row.try_get("allowed_models")?),
                        allowed_endpoints: list(row.try_get("allowed_endpoints")?),
                        previous_hash: row
                            .try_get::<Option<String>, _>("previous_hash")?
                            .as_deref()
                            .and_then(parse_hash_hex),
                        previous_until: row.try_get("previous_until")?,
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

    /// Gives a key a new secret; the old one keeps working until `previous_until` (unix
    /// seconds). `false` when no active key has that name.
    pub async fn rotate_key(
        &self,
        name: &str,
        new_hash: &SecretHash,
        new_prefix: &str,
        previous_until: i64,
    ) -> Result<bool, StoreError> {
        let sql = "UPDATE virtual_keys SET previous_hash = secret_hash, previous_until = $1, \
                   secret_hash = $2, prefix = $3 WHERE name = $4 AND revoked_at IS NULL";
        let done = on_pool!(self, pool => sqlx::query(sql)
            .bind(previous_until)
            .bind(hash_hex(new_hash))
            .bind(new_prefix)
            .bind(name)
            .execute(pool)
            .await?
            .rows_affected());
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

    /// Writes events outside the event log's writer (tools, one-off imports): they get a
    /// chain of their own (new chain id, genesis start, head recorded), so `warden audit
    /// verify` still checks them. The gateway's writer uses `append_chained` with its
    /// long-lived chain instead; prefer `EventLog::record` wherever a gateway runs.
    pub async fn append_events(&self, events: &[EventRecord]) -> Result<(), StoreError> {
        use crate::events::chain::{new_chain_id, Link, GENESIS};
        let chain_id = new_chain_id();
        let mut prev = GENESIS.to_owned();
        let positions: Vec<audit::ChainPosition> = events
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let seq = i as i64 + 1;
                let hash = Link::of(&chain_id, seq, e).hash(&prev);
                audit::ChainPosition {
                    seq,
                    prev_hash: std::mem::replace(&mut prev, hash.clone()),
                    hash,
                }
            })
            .collect();
        let now = crate::events::now_ms();
        let keep = crate::config::events::EventsConfig::default().excerpt_retention;
        let expires = now.saturating_add(keep.as_millis() as i64);
        self.append_chained(&chain_id, now, events, &positions, expires)
            .await
    }

    pub async fn count_events(&self) -> Result<i64, StoreError> {
        on_pool!(self, pool => {
            let row = sqlx::query("SELECT COUNT(*) AS n FROM events").fetch_one(pool).await?;
            Ok(row.try_get::<i64, _>("n")?)
        })
    }
}

/// A comma-separated column as a list; `None` when unset.
fn list(text: Option<String>) -> Option<Vec<String>> {
    text.map(|t| {
        t.split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    })
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
