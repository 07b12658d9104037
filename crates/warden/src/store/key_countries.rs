//! The countries each virtual key has been used from (`key_countries`, migration 9):
//! shared by replicas, so a key's first request from a new country is noticed once.

use sqlx::Row;

use super::{Store, StoreError};

/// One country a key was used from, and when it was first seen there.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeyCountry {
    pub key_name: String,
    pub country: String,
    pub first_seen_ms: i64,
}

impl Store {
    /// Every (key, country) pair, oldest sighting first.
    pub async fn key_countries(&self) -> Result<Vec<KeyCountry>, StoreError> {
        let sql = "SELECT key_name, country, first_seen_ms FROM key_countries \
                   ORDER BY first_seen_ms, key_name, country";
        on_pool!(self, pool => {
            let rows = sqlx::query(sql).fetch_all(pool).await?;
            rows.iter()
                .map(|row| {
                    Ok(KeyCountry {
                        key_name: row.try_get("key_name")?,
                        country: row.try_get("country")?,
                        first_seen_ms: row.try_get("first_seen_ms")?,
                    })
                })
                .collect()
        })
    }

    /// Records a sighting. `Some(earlier)` when this call stored it (no replica had
    /// before), with the countries the key was seen from before it; `None` when it was
    /// already known.
    pub async fn add_key_country(
        &self,
        key_name: &str,
        country: &str,
        at_ms: i64,
    ) -> Result<Option<Vec<String>>, StoreError> {
        let insert = "INSERT INTO key_countries (key_name, country, first_seen_ms) \
                      VALUES ($1, $2, $3) ON CONFLICT (key_name, country) DO NOTHING";
        let others = "SELECT country FROM key_countries WHERE key_name = $1 AND country <> $2 \
                      ORDER BY first_seen_ms, country";
        on_pool!(self, pool => {
            let inserted = sqlx::query(insert)
                .bind(key_name)
                .bind(country)
                .bind(at_ms)
                .execute(pool)
                .await?
                .rows_affected();
            if inserted == 0 {
                return Ok(None);
            }
            let rows = sqlx::query(others).bind(key_name).bind(country).fetch_all(pool).await?;
            Ok(Some(
                rows.iter()
                    .map(|row| row.try_get::<String, _>("country"))
                    .collect::<Result<_, _>>()?,
            ))
        })
    }
}
