//! Upstream keys sealed under the vault's master key.

use sqlx::Row;

use super::{Store, StoreError};

#[derive(Debug, Clone, Default)]
pub struct StoredUpstreamKey {
    pub name: String,
    /// `nonce:ciphertext` (base64), opened by `vault::MasterKey`.
    pub sealed: String,
    pub organization: Option<String>,
    pub project: Option<String>,
    /// `standby`, `active` or `retired`.
    pub state: String,
    pub created_ms: i64,
    pub updated_ms: i64,
    /// The key's id in OpenAI's Admin API (`key_…`), once known.
    pub openai_key_id: Option<String>,
    /// The service account Warden created it under, if it did (deleted with the key).
    pub openai_service_account: Option<String>,
    /// Rotate through the Admin API when the key is this many days old.
    pub rotate_every_days: Option<i64>,
    /// The name of the first key of a rotation chain (rotated keys are named after it).
    pub lineage: Option<String>,
    /// A rotated-out key is deleted upstream once this passes.
    pub delete_after_ms: Option<i64>,
    pub deleted_upstream_ms: Option<i64>,
}

const COLUMNS: &str = "name, sealed, organization, project, state, created_ms, updated_ms, \
    openai_key_id, openai_service_account, rotate_every_days, lineage, delete_after_ms, deleted_upstream_ms";

impl Store {
    pub async fn add_upstream_key(&self, key: &StoredUpstreamKey) -> Result<(), StoreError> {
        let sql =
            format!("INSERT INTO upstream_keys ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)");
        let done = on_pool!(self, pool => sqlx::query(&sql)
            .bind(&key.name)
            .bind(&key.sealed)
            .bind(&key.organization)
            .bind(&key.project)
            .bind(&key.state)
            .bind(key.created_ms)
            .bind(key.updated_ms)
            .bind(&key.openai_key_id)
            .bind(&key.openai_service_account)
            .bind(key.rotate_every_days)
            .bind(&key.lineage)
            .bind(key.delete_after_ms)
            .bind(key.deleted_upstream_ms)
            .execute(pool)
            .await
            .map(|_| ()));
        match done {
            Err(sqlx::Error::Database(db)) if db.is_unique_violation() => {
                Err(StoreError::DuplicateKey(key.name.clone()))
            }
            other => Ok(other?),
        }
    }

    pub async fn upstream_keys(&self) -> Result<Vec<StoredUpstreamKey>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM upstream_keys ORDER BY created_ms, name");
        on_pool!(self, pool => {
            let rows = sqlx::query(&sql).fetch_all(pool).await?;
            rows.iter().map(|row| Ok(StoredUpstreamKey {
                name: row.try_get("name")?,
                sealed: row.try_get("sealed")?,
                organization: row.try_get("organization")?,
                project: row.try_get("project")?,
                state: row.try_get("state")?,
                created_ms: row.try_get("created_ms")?,
                updated_ms: row.try_get("updated_ms")?,
                openai_key_id: row.try_get("openai_key_id")?,
                openai_service_account: row.try_get("openai_service_account")?,
                rotate_every_days: row.try_get("rotate_every_days")?,
                lineage: row.try_get("lineage")?,
                delete_after_ms: row.try_get("delete_after_ms")?,
                deleted_upstream_ms: row.try_get("deleted_upstream_ms")?,
            })).collect()
        })
    }

    pub async fn active_upstream_key(&self) -> Result<Option<StoredUpstreamKey>, StoreError> {
        Ok(self
            .upstream_keys()
            .await?
            .into_iter()
            .find(|k| k.state == "active"))
    }

    /// Makes `name` the active key and retires the one it replaces, in one transaction.
    /// `false` when no such key exists.
    pub async fn activate_upstream_key(&self, name: &str, at_ms: i64) -> Result<bool, StoreError> {
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let found = sqlx::query("UPDATE upstream_keys SET state = 'active', updated_ms = $1 WHERE name = $2")
                .bind(at_ms)
                .bind(name)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if found == 0 {
                return Ok(false);
            }
            sqlx::query("UPDATE upstream_keys SET state = 'retired', updated_ms = $1 WHERE state = 'active' AND name <> $2")
                .bind(at_ms)
                .bind(name)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(true)
        })
    }

    /// Retires a key (the active one too: the environment or file key takes over).
    pub async fn retire_upstream_key(&self, name: &str, at_ms: i64) -> Result<bool, StoreError> {
        let sql = "UPDATE upstream_keys SET state = 'retired', updated_ms = $1 WHERE name = $2 AND state <> 'retired'";
        let n = on_pool!(self, pool => sqlx::query(sql).bind(at_ms).bind(name).execute(pool).await?.rows_affected());
        Ok(n > 0)
    }
}
