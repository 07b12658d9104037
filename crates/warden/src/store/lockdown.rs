//! Lockdown state in the `settings` table, so every replica sharing the store sees it.

use sqlx::Row;

use super::{Store, StoreError};

const LOCKDOWN_SETTING: &str = "lockdown";

impl Store {
    /// The stored lockdown state (JSON), if it was ever set.
    pub async fn lockdown_state(&self) -> Result<Option<String>, StoreError> {
        let sql = "SELECT value FROM settings WHERE name = $1";
        on_pool!(self, pool => {
            let row = sqlx::query(sql).bind(LOCKDOWN_SETTING).fetch_optional(pool).await?;
            Ok(match row {
                Some(row) => Some(row.try_get::<String, _>("value")?),
                None => None,
            })
        })
    }

    pub async fn set_lockdown_state(&self, value: &str) -> Result<(), StoreError> {
        let sql = "INSERT INTO settings (name, value) VALUES ($1, $2) \
                   ON CONFLICT (name) DO UPDATE SET value = excluded.value";
        on_pool!(self, pool => {
            sqlx::query(sql).bind(LOCKDOWN_SETTING).bind(value).execute(pool).await?;
        });
        Ok(())
    }
}
