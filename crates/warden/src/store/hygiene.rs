//! Key hygiene in the store: what Warden sent on each upstream key per minute, and each
//! vault key's OpenAI identity, rotation schedule and upstream deletion.

use sqlx::Row;

use super::{Store, StoreError};

/// What Warden sent on one upstream key in one minute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MinuteCounts {
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

impl MinuteCounts {
    pub fn add(&mut self, other: MinuteCounts) {
        self.requests += other.requests;
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
    }

    pub fn tokens(&self) -> u64 {
        self.input_tokens + self.output_tokens
    }
}

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Store {
    /// Adds each (key, minute start in Unix seconds) increment to its row.
    pub async fn add_upstream_usage(
        &self,
        rows: &[(String, i64, MinuteCounts)],
    ) -> Result<(), StoreError> {
        for chunk in rows.chunks(500) {
            on_pool!(self, pool => {
                let mut insert = sqlx::QueryBuilder::new(
                    "INSERT INTO upstream_usage (key_name, minute, requests, input_tokens, output_tokens) ",
                );
                insert.push_values(chunk, |mut row, (key, minute, c)| {
                    row.push_bind(key)
                        .push_bind(*minute)
                        .push_bind(int(c.requests))
                        .push_bind(int(c.input_tokens))
                        .push_bind(int(c.output_tokens));
                });
                insert.push(
                    " ON CONFLICT (key_name, minute) DO UPDATE SET \
                     requests = upstream_usage.requests + excluded.requests, \
                     input_tokens = upstream_usage.input_tokens + excluded.input_tokens, \
                     output_tokens = upstream_usage.output_tokens + excluded.output_tokens",
                );
                insert.build().execute(pool).await?;
            });
        }
        Ok(())
    }

    /// Every row with `from <= minute < to` (Unix seconds).
    pub async fn upstream_usage(
        &self,
        from: i64,
        to: i64,
    ) -> Result<Vec<(String, i64, MinuteCounts)>, StoreError> {
        let sql =
            "SELECT key_name, minute, requests, input_tokens, output_tokens FROM upstream_usage \
                   WHERE minute >= $1 AND minute < $2";
        on_pool!(self, pool => {
            let rows = sqlx::query(sql).bind(from).bind(to).fetch_all(pool).await?;
            rows.iter().map(|row| {
                let n = |c: &str| row.try_get::<i64, _>(c).map(|v| v.max(0) as u64);
                Ok((row.try_get("key_name")?, row.try_get("minute")?, MinuteCounts {
                    requests: n("requests")?,
                    input_tokens: n("input_tokens")?,
                    output_tokens: n("output_tokens")?,
                }))
            }).collect()
        })
    }

    /// Forgets rows older than `before` (Unix seconds).
    pub async fn prune_upstream_usage(&self, before: i64) -> Result<(), StoreError> {
        on_pool!(self, pool => sqlx::query("DELETE FROM upstream_usage WHERE minute < $1")
            .bind(before).execute(pool).await.map(|_| ()))?;
        Ok(())
    }

    /// Records which OpenAI key (and service account) a vault key is.
    pub async fn set_upstream_key_identity(
        &self,
        name: &str,
        key_id: &str,
        service_account: Option<&str>,
    ) -> Result<(), StoreError> {
        let sql = "UPDATE upstream_keys SET openai_key_id = $1, \
                   openai_service_account = COALESCE($2, openai_service_account) WHERE name = $3";
        on_pool!(self, pool => sqlx::query(sql).bind(key_id).bind(service_account).bind(name)
            .execute(pool).await.map(|_| ()))?;
        Ok(())
    }

    /// Sets (or with `None` clears) a key's rotation period; `false` when no such key.
    pub async fn set_upstream_rotation(
        &self,
        name: &str,
        every_days: Option<i64>,
    ) -> Result<bool, StoreError> {
        let sql = "UPDATE upstream_keys SET rotate_every_days = $1 WHERE name = $2";
        let n = on_pool!(self, pool => sqlx::query(sql).bind(every_days).bind(name)
            .execute(pool).await?.rows_affected());
        Ok(n > 0)
    }

    /// Schedules a rotated-out key's upstream deletion.
    pub async fn schedule_upstream_deletion(
        &self,
        name: &str,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        let sql = "UPDATE upstream_keys SET delete_after_ms = $1 WHERE name = $2";
        on_pool!(self, pool => sqlx::query(sql).bind(at_ms).bind(name).execute(pool).await.map(|_| ()))?;
        Ok(())
    }

    pub async fn mark_deleted_upstream(&self, name: &str, at_ms: i64) -> Result<(), StoreError> {
        let sql = "UPDATE upstream_keys SET deleted_upstream_ms = $1 WHERE name = $2";
        on_pool!(self, pool => sqlx::query(sql).bind(at_ms).bind(name).execute(pool).await.map(|_| ()))?;
        Ok(())
    }

    /// Claims the right to rotate `name` (one replica at a time); a claim older than
    /// `stale_ms` is taken over (its holder died). `false`: someone else holds it.
    pub async fn claim_rotation(
        &self,
        name: &str,
        now_ms: i64,
        stale_ms: i64,
    ) -> Result<bool, StoreError> {
        let sql = "UPDATE upstream_keys SET rotating_ms = $1 WHERE name = $2 \
                   AND (rotating_ms IS NULL OR rotating_ms < $3)";
        let n = on_pool!(self, pool => sqlx::query(sql).bind(now_ms).bind(name).bind(now_ms - stale_ms)
            .execute(pool).await?.rows_affected());
        Ok(n > 0)
    }

    pub async fn release_rotation(&self, name: &str) -> Result<(), StoreError> {
        let sql = "UPDATE upstream_keys SET rotating_ms = NULL WHERE name = $1";
        on_pool!(self, pool => sqlx::query(sql).bind(name).execute(pool).await.map(|_| ()))?;
        Ok(())
    }
}

impl Store {
    /// A named value in `settings`, if set.
    pub async fn setting(&self, name: &str) -> Result<Option<String>, StoreError> {
        on_pool!(self, pool => {
            let row = sqlx::query("SELECT value FROM settings WHERE name = $1")
                .bind(name).fetch_optional(pool).await?;
            Ok(row.map(|r| r.try_get::<String, _>("value")).transpose()?)
        })
    }

    /// Deletes the `settings` rows named `prefix…` whose value sorts before `before`.
    pub async fn prune_settings(&self, prefix: &str, before: &str) -> Result<(), StoreError> {
        let sql = "DELETE FROM settings WHERE name LIKE $1 AND value < $2";
        let pattern = format!("{prefix}%");
        on_pool!(self, pool => sqlx::query(sql).bind(&pattern).bind(before).execute(pool).await.map(|_| ()))?;
        Ok(())
    }

    /// Sets a named value in `settings`, replacing what was there.
    pub async fn set_setting(&self, name: &str, value: &str) -> Result<(), StoreError> {
        let sql = "INSERT INTO settings (name, value) VALUES ($1, $2) \
                   ON CONFLICT (name) DO UPDATE SET value = excluded.value";
        on_pool!(self, pool => sqlx::query(sql).bind(name).bind(value).execute(pool).await.map(|_| ()))?;
        Ok(())
    }
}
