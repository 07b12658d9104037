//! End users, their standing and their strikes.

use sqlx::Row;

use super::{Store, StoreError};

/// One end user as stored: who, under which key, their identifier at OpenAI, and standing.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StoredUser {
    pub key_name: String,
    pub end_user: String,
    pub safety_identifier: String,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    /// Decayed strike weight as of `strike_at_ms`.
    pub strike_weight: f64,
    pub strike_at_ms: i64,
    /// `active`, `suspended` or `banned`.
    pub status: String,
    pub status_until_ms: Option<i64>,
    pub status_reason: Option<String>,
    pub updated_ms: i64,
}

/// A first or repeated sighting of an end user, flushed in batches.
#[derive(Debug, Clone)]
pub struct Sighting {
    pub key_name: String,
    pub end_user: String,
    pub safety_identifier: String,
    pub at_ms: i64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct StoredStrike {
    pub at_ms: i64,
    pub weight: f64,
    pub category: String,
    pub request_id: Option<String>,
}

/// A standing change written by enforcement or an operator.
#[derive(Debug, Clone)]
pub struct StatusChange<'a> {
    pub status: &'a str,
    pub until_ms: Option<i64>,
    pub reason: Option<&'a str>,
    pub strike_weight: f64,
    pub strike_at_ms: i64,
    pub at_ms: i64,
}

const USER_COLUMNS: &str = "key_name, end_user, safety_identifier, first_seen_ms, last_seen_ms, \
     strike_weight, strike_at_ms, status, status_until_ms, status_reason, updated_ms";

impl Store {
    /// Records sightings as one multi-row upsert: new users are added, known ones get a
    /// later `last_seen_ms`; standing is never touched here. A row that a strike or an
    /// operator created before the first sighting was flushed has `first_seen_ms = 0`;
    /// the sighting fills it in (lockdown's "no new end users" reads it).
    pub async fn record_sightings(&self, seen: &[Sighting]) -> Result<(), StoreError> {
        for chunk in seen.chunks(500) {
            on_pool!(self, pool => {
                let mut insert = sqlx::QueryBuilder::new(
                    "INSERT INTO end_users (key_name, end_user, safety_identifier, first_seen_ms, last_seen_ms) ",
                );
                insert.push_values(chunk, |mut row, s| {
                    row.push_bind(&s.key_name)
                        .push_bind(&s.end_user)
                        .push_bind(&s.safety_identifier)
                        .push_bind(s.at_ms)
                        .push_bind(s.at_ms);
                });
                insert.push(
                    " ON CONFLICT (key_name, end_user) DO UPDATE SET \
                     first_seen_ms = CASE WHEN end_users.first_seen_ms = 0 \
                     OR excluded.first_seen_ms < end_users.first_seen_ms \
                     THEN excluded.first_seen_ms ELSE end_users.first_seen_ms END, \
                     last_seen_ms = CASE WHEN excluded.last_seen_ms > end_users.last_seen_ms \
                     THEN excluded.last_seen_ms ELSE end_users.last_seen_ms END, \
                     safety_identifier = excluded.safety_identifier",
                );
                insert.build().execute(pool).await?;
            });
        }
        Ok(())
    }

    /// Writes a user's standing, creating the row when the user was never seen (an
    /// operator may ban ahead of the first request).
    pub async fn set_standing(
        &self,
        key_name: &str,
        end_user: &str,
        safety_identifier: &str,
        change: &StatusChange<'_>,
    ) -> Result<(), StoreError> {
        let sql = "INSERT INTO end_users (key_name, end_user, safety_identifier, first_seen_ms, last_seen_ms, \
                   strike_weight, strike_at_ms, status, status_until_ms, status_reason, updated_ms) \
                   VALUES ($1, $2, $3, 0, 0, $4, $5, $6, $7, $8, $9) \
                   ON CONFLICT (key_name, end_user) DO UPDATE SET strike_weight = excluded.strike_weight, \
                   strike_at_ms = excluded.strike_at_ms, status = excluded.status, \
                   status_until_ms = excluded.status_until_ms, status_reason = excluded.status_reason, \
                   updated_ms = excluded.updated_ms";
        on_pool!(self, pool => {
            sqlx::query(sql)
                .bind(key_name)
                .bind(end_user)
                .bind(safety_identifier)
                .bind(change.strike_weight)
                .bind(change.strike_at_ms)
                .bind(change.status)
                .bind(change.until_ms)
                .bind(change.reason)
                .bind(change.at_ms)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    pub async fn add_strike(
        &self,
        key_name: &str,
        end_user: &str,
        strike: &StoredStrike,
    ) -> Result<(), StoreError> {
        let sql = "INSERT INTO strikes (key_name, end_user, at_ms, weight, category, request_id) \
                   VALUES ($1, $2, $3, $4, $5, $6)";
        on_pool!(self, pool => {
            sqlx::query(sql)
                .bind(key_name)
                .bind(end_user)
                .bind(strike.at_ms)
                .bind(strike.weight)
                .bind(&strike.category)
                .bind(&strike.request_id)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// A user's strikes at or after `since_ms`, oldest first.
    pub async fn strikes_since(
        &self,
        key_name: &str,
        end_user: &str,
        since_ms: i64,
    ) -> Result<Vec<StoredStrike>, StoreError> {
        let sql = "SELECT at_ms, weight, category, request_id FROM strikes \
                   WHERE key_name = $1 AND end_user = $2 AND at_ms >= $3 ORDER BY at_ms, id";
        on_pool!(self, pool => {
            let rows = sqlx::query(sql)
                .bind(key_name)
                .bind(end_user)
                .bind(since_ms)
                .fetch_all(pool)
                .await?;
            rows.iter()
                .map(|row| {
                    Ok(StoredStrike {
                        at_ms: row.try_get("at_ms")?,
                        weight: row.try_get("weight")?,
                        category: row.try_get("category")?,
                        request_id: row.try_get("request_id")?,
                    })
                })
                .collect()
        })
    }

    /// Forgets a user's strikes (operator reset).
    pub async fn clear_strikes(&self, key_name: &str, end_user: &str) -> Result<(), StoreError> {
        let sql = "DELETE FROM strikes WHERE key_name = $1 AND end_user = $2";
        on_pool!(self, pool => {
            sqlx::query(sql).bind(key_name).bind(end_user).execute(pool).await?;
        });
        Ok(())
    }

    pub async fn user(
        &self,
        key_name: &str,
        end_user: &str,
    ) -> Result<Option<StoredUser>, StoreError> {
        let sql =
            format!("SELECT {USER_COLUMNS} FROM end_users WHERE key_name = $1 AND end_user = $2");
        on_pool!(self, pool => {
            let row = sqlx::query(&sql).bind(key_name).bind(end_user).fetch_optional(pool).await?;
            row.as_ref().map(user_from_row).transpose()
        })
    }

    /// Every key an end user id has been seen (or sanctioned) under.
    pub async fn users_named(&self, end_user: &str) -> Result<Vec<StoredUser>, StoreError> {
        let sql =
            format!("SELECT {USER_COLUMNS} FROM end_users WHERE end_user = $1 ORDER BY key_name");
        on_pool!(self, pool => {
            let rows = sqlx::query(&sql).bind(end_user).fetch_all(pool).await?;
            rows.iter().map(user_from_row).collect()
        })
    }

    /// The user OpenAI knows by this identifier, if Warden has seen them.
    pub async fn user_by_safety_identifier(
        &self,
        safety_identifier: &str,
    ) -> Result<Option<StoredUser>, StoreError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM end_users WHERE safety_identifier = $1");
        on_pool!(self, pool => {
            let row = sqlx::query(&sql).bind(safety_identifier).fetch_optional(pool).await?;
            row.as_ref().map(user_from_row).transpose()
        })
    }

    /// Users whose standing changed at or after `since_ms` (what replicas poll).
    pub async fn standings_changed_since(
        &self,
        since_ms: i64,
    ) -> Result<Vec<StoredUser>, StoreError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM end_users WHERE updated_ms >= $1");
        on_pool!(self, pool => {
            let rows = sqlx::query(&sql).bind(since_ms).fetch_all(pool).await?;
            rows.iter().map(user_from_row).collect()
        })
    }

    /// Users for review, heaviest strike weight first; `only_sanctioned` keeps suspended
    /// and banned ones.
    pub async fn list_users(
        &self,
        only_sanctioned: bool,
        limit: i64,
    ) -> Result<Vec<StoredUser>, StoreError> {
        let filter = if only_sanctioned {
            "WHERE status <> 'active'"
        } else {
            ""
        };
        let sql = format!(
            "SELECT {USER_COLUMNS} FROM end_users {filter} \
             ORDER BY strike_weight DESC, last_seen_ms DESC, key_name, end_user LIMIT $1"
        );
        on_pool!(self, pool => {
            let rows = sqlx::query(&sql).bind(limit).fetch_all(pool).await?;
            rows.iter().map(user_from_row).collect()
        })
    }
}

impl Store {
    /// Strikes in the last 24 hours, users suspended now, users banned in the last 7 days.
    pub async fn enforcement_totals(&self, now_ms: i64) -> Result<(u64, u64, u64), StoreError> {
        let day = 86_400_000;
        let count = |sql: &'static str, at: i64| async move {
            on_pool!(self, pool => {
                let row = sqlx::query(sql).bind(at).fetch_one(pool).await?;
                Ok::<u64, StoreError>(row.try_get::<i64, _>(0)?.max(0) as u64)
            })
        };
        Ok((
            count("SELECT COUNT(*) FROM strikes WHERE at_ms >= $1", now_ms - day).await?,
            count(
                "SELECT COUNT(*) FROM end_users WHERE status = 'suspended' AND status_until_ms > $1",
                now_ms,
            )
            .await?,
            count(
                "SELECT COUNT(*) FROM end_users WHERE status = 'banned' AND updated_ms >= $1",
                now_ms - 7 * day,
            )
            .await?,
        ))
    }
}

fn user_from_row<R>(row: &R) -> Result<StoredUser, StoreError>
where
    R: Row,
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> f64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database>,
    for<'r> Option<i64>: sqlx::Decode<'r, R::Database>,
{
    Ok(StoredUser {
        key_name: row.try_get("key_name")?,
        end_user: row.try_get("end_user")?,
        safety_identifier: row.try_get("safety_identifier")?,
        first_seen_ms: row.try_get("first_seen_ms")?,
        last_seen_ms: row.try_get("last_seen_ms")?,
        strike_weight: row.try_get("strike_weight")?,
        strike_at_ms: row.try_get("strike_at_ms")?,
        status: row.try_get("status")?,
        status_until_ms: row.try_get("status_until_ms")?,
        status_reason: row.try_get("status_reason")?,
        updated_ms: row.try_get("updated_ms")?,
    })
}
