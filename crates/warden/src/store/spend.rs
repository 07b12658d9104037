//! Spend counters in the store: one row per (scope, subject, period) holding nano-USD,
//! incremented in batches by the spend flusher and read back whole for the current periods.

use sqlx::Row;

use super::{Store, StoreError};
use crate::spend::{CounterKey, Scope};

impl Store {
    /// Adds each increment to its row (creating it), all in one statement per chunk.
    pub async fn add_spend(&self, rows: &[(&CounterKey, u64)]) -> Result<(), StoreError> {
        for chunk in rows.chunks(1000) {
            on_pool!(self, pool => {
                let mut insert =
                    sqlx::QueryBuilder::new("INSERT INTO spend (scope, subject, period, nano_usd) ");
                insert.push_values(chunk, |mut row, (key, nano)| {
                    row.push_bind(key.scope.as_str())
                        .push_bind(&key.subject)
                        .push_bind(&key.period)
                        .push_bind(i64::try_from(*nano).unwrap_or(i64::MAX));
                });
                insert.push(
                    " ON CONFLICT (scope, subject, period) DO UPDATE SET nano_usd = spend.nano_usd + excluded.nano_usd",
                );
                insert.build().execute(pool).await?;
            });
        }
        Ok(())
    }

    /// Every counter of the given periods.
    pub async fn load_spend(&self, periods: &[&str]) -> Result<Vec<(CounterKey, u64)>, StoreError> {
        let mut out = Vec::new();
        for period in periods {
            on_pool!(self, pool => {
                let rows = sqlx::query("SELECT scope, subject, nano_usd FROM spend WHERE period = $1")
                    .bind(*period)
                    .fetch_all(pool)
                    .await?;
                for row in rows {
                    let scope: String = row.try_get("scope")?;
                    let Some(scope) = Scope::parse(&scope) else {
                        return Err(StoreError::Corrupt(format!("spend scope '{scope}'")));
                    };
                    out.push((
                        CounterKey {
                            scope,
                            subject: row.try_get("subject")?,
                            period: (*period).to_owned(),
                        },
                        row.try_get::<i64, _>("nano_usd")?.max(0) as u64,
                    ));
                }
            });
        }
        Ok(out)
    }
}
