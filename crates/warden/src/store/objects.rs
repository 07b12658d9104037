//! Who created each object made through Warden (`owned_objects`, migration 16): the
//! virtual key and end user behind a file, batch, stored response or conversation, so
//! another key's requests for it are refused. Shared by replicas through the store.

use std::collections::HashSet;

use sqlx::Row;

use super::{Store, StoreError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectOwner {
    pub kind: String,
    pub key_name: String,
    pub end_user: Option<String>,
}

impl Store {
    /// Records the creator of `object_id`; a second record of the same id keeps the first.
    pub async fn record_object(
        &self,
        object_id: &str,
        kind: &str,
        key_name: &str,
        end_user: Option<&str>,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        let sql = "INSERT INTO owned_objects (object_id, kind, key_name, end_user, created_ms) \
                   VALUES ($1, $2, $3, $4, $5) ON CONFLICT (object_id) DO NOTHING";
        on_pool!(self, pool => {
            sqlx::query(sql)
                .bind(object_id)
                .bind(kind)
                .bind(key_name)
                .bind(end_user)
                .bind(at_ms)
                .execute(pool)
                .await?;
            Ok(())
        })
    }

    /// The creator of `object_id`, if it was made through Warden.
    pub async fn object_owner(&self, object_id: &str) -> Result<Option<ObjectOwner>, StoreError> {
        let sql = "SELECT kind, key_name, end_user FROM owned_objects WHERE object_id = $1";
        on_pool!(self, pool => {
            let row = sqlx::query(sql).bind(object_id).fetch_optional(pool).await?;
            row.map(|row| {
                Ok(ObjectOwner {
                    kind: row.try_get("kind")?,
                    key_name: row.try_get("key_name")?,
                    end_user: row.try_get("end_user")?,
                })
            })
            .transpose()
        })
    }

    /// Which of `ids` `key_name` created (one query for a list page).
    pub async fn owned_by(
        &self,
        key_name: &str,
        ids: &[&str],
    ) -> Result<HashSet<String>, StoreError> {
        if ids.is_empty() {
            return Ok(HashSet::new());
        }
        let mut found = HashSet::with_capacity(ids.len());
        // Pages are at most 100 items; chunks keep the statement within any engine's limits.
        for chunk in ids.chunks(200) {
            let marks: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 2)).collect();
            let sql = format!(
                "SELECT object_id FROM owned_objects WHERE key_name = $1 AND object_id IN ({})",
                marks.join(", ")
            );
            on_pool!(self, pool => {
                let mut query = sqlx::query(&sql).bind(key_name);
                for id in chunk {
                    query = query.bind(*id);
                }
                for row in query.fetch_all(pool).await? {
                    found.insert(row.try_get::<String, _>("object_id")?);
                }
            });
        }
        Ok(found)
    }
}
