//! Aggregates over the event log for the operator's views (admin API, dashboard).

use sqlx::Row;

use super::{Store, StoreError};

#[derive(Debug, Clone, serde::Serialize)]
pub struct Count {
    pub name: String,
    pub count: i64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Bucket {
    pub start_ms: i64,
    pub outcome: String,
    pub count: i64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyUsage {
    pub key_name: String,
    pub requests: i64,
    pub blocked: i64,
    pub last_seen_ms: i64,
    pub client_ips: i64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct EventRow {
    pub id: i64,
    pub request_id: String,
    pub at_ms: i64,
    pub kind: String,
    pub key_name: Option<String>,
    pub end_user: Option<String>,
    pub client_ip: Option<String>,
    pub endpoint: Option<String>,
    pub model: Option<String>,
    pub status: i64,
    pub outcome: String,
    pub reason: Option<String>,
    pub detail: Option<String>,
}

/// Which events to list; every field narrows.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct EventFilter {
    pub kind: Option<String>,
    pub outcome: Option<String>,
    pub key: Option<String>,
    pub user: Option<String>,
    pub reason: Option<String>,
    pub since_ms: Option<i64>,
    pub limit: Option<i64>,
}

impl Store {
    /// `(name, count)` for a GROUP BY over request events since `since_ms`.
    async fn grouped(&self, sql: &str, since_ms: i64) -> Result<Vec<Count>, StoreError> {
        on_pool!(self, pool => {
            let rows = sqlx::query(sql).bind(since_ms).fetch_all(pool).await?;
            rows.iter()
                .map(|row| {
                    Ok(Count {
                        name: row.try_get::<Option<String>, _>(0)?.unwrap_or_default(),
                        count: row.try_get(1)?,
                    })
                })
                .collect()
        })
    }

    pub async fn outcomes_since(&self, since_ms: i64) -> Result<Vec<Count>, StoreError> {
        self.grouped(
            "SELECT outcome, COUNT(*) FROM events WHERE kind = 'request' AND at_ms >= $1 \
             GROUP BY outcome ORDER BY 2 DESC",
            since_ms,
        )
        .await
    }

    pub async fn refusals_since(&self, since_ms: i64) -> Result<Vec<Count>, StoreError> {
        self.grouped(
            "SELECT reason, COUNT(*) FROM events WHERE kind = 'request' AND outcome = 'blocked' \
             AND at_ms >= $1 GROUP BY reason ORDER BY 2 DESC",
            since_ms,
        )
        .await
    }

    /// Strikes by category: what end users were flagged or blocked for.
    pub async fn strike_categories_since(&self, since_ms: i64) -> Result<Vec<Count>, StoreError> {
        self.grouped(
            "SELECT category, COUNT(*) FROM strikes WHERE at_ms >= $1 GROUP BY category ORDER BY 2 DESC",
            since_ms,
        )
        .await
    }

    /// Requests where moderation failed open (allowed without a verdict).
    pub async fn fail_opens_since(&self, since_ms: i64) -> Result<i64, StoreError> {
        let sql = "SELECT COUNT(*) FROM events WHERE kind = 'request' AND at_ms >= $1 \
                   AND detail LIKE '%fail_open%'";
        on_pool!(self, pool => {
            let row = sqlx::query(sql).bind(since_ms).fetch_one(pool).await?;
            Ok(row.try_get::<i64, _>(0)?)
        })
    }

    /// Request counts per `bucket_ms` interval and outcome, oldest first.
    pub async fn timeline(&self, since_ms: i64, bucket_ms: i64) -> Result<Vec<Bucket>, StoreError> {
        let sql = "SELECT (at_ms / $1) * $1 AS start_ms, outcome, COUNT(*) AS n FROM events \
                   WHERE kind = 'request' AND at_ms >= $2 GROUP BY 1, 2 ORDER BY 1";
        on_pool!(self, pool => {
            let rows = sqlx::query(sql).bind(bucket_ms).bind(since_ms).fetch_all(pool).await?;
            rows.iter()
                .map(|row| {
                    Ok(Bucket {
                        start_ms: row.try_get("start_ms")?,
                        outcome: row.try_get("outcome")?,
                        count: row.try_get("n")?,
                    })
                })
                .collect()
        })
    }

    pub async fn key_usage_since(&self, since_ms: i64) -> Result<Vec<KeyUsage>, StoreError> {
        let sql = "SELECT key_name, COUNT(*) AS requests, \
                   SUM(CASE WHEN outcome = 'blocked' THEN 1 ELSE 0 END) AS blocked, \
                   MAX(at_ms) AS last_seen, COUNT(DISTINCT client_ip) AS ips \
                   FROM events WHERE kind = 'request' AND key_name IS NOT NULL AND at_ms >= $1 \
                   GROUP BY key_name ORDER BY 2 DESC";
        on_pool!(self, pool => {
            let rows = sqlx::query(sql).bind(since_ms).fetch_all(pool).await?;
            rows.iter()
                .map(|row| {
                    Ok(KeyUsage {
                        key_name: row.try_get("key_name")?,
                        requests: row.try_get("requests")?,
                        blocked: row.try_get::<Option<i64>, _>("blocked")?.unwrap_or(0),
                        last_seen_ms: row.try_get("last_seen")?,
                        client_ips: row.try_get("ips")?,
                    })
                })
                .collect()
        })
    }

    /// Events matching the filter, newest first.
    pub async fn events(&self, f: &EventFilter) -> Result<Vec<EventRow>, StoreError> {
        let limit = f.limit.unwrap_or(100).clamp(1, 1000);
        on_pool!(self, pool => {
            let mut q = sqlx::QueryBuilder::new(
                "SELECT id, request_id, at_ms, kind, key_name, end_user, client_ip, endpoint, model, \
                 status, outcome, reason, detail FROM events WHERE 1 = 1",
            );
            if let Some(v) = &f.kind { q.push(" AND kind = ").push_bind(v); }
            if let Some(v) = &f.outcome { q.push(" AND outcome = ").push_bind(v); }
            if let Some(v) = &f.key { q.push(" AND key_name = ").push_bind(v); }
            if let Some(v) = &f.user { q.push(" AND end_user = ").push_bind(v); }
            if let Some(v) = &f.reason { q.push(" AND reason = ").push_bind(v); }
            if let Some(v) = f.since_ms { q.push(" AND at_ms >= ").push_bind(v); }
            q.push(" ORDER BY id DESC LIMIT ").push_bind(limit);
            let rows = q.build().fetch_all(pool).await?;
            rows.iter()
                .map(|row| {
                    Ok(EventRow {
                        id: row.try_get("id")?,
                        request_id: row.try_get("request_id")?,
                        at_ms: row.try_get("at_ms")?,
                        kind: row.try_get("kind")?,
                        key_name: row.try_get("key_name")?,
                        end_user: row.try_get("end_user")?,
                        client_ip: row.try_get("client_ip")?,
                        endpoint: row.try_get("endpoint")?,
                        model: row.try_get("model")?,
                        status: i64::from(row.try_get::<i32, _>("status")?),
                        outcome: row.try_get("outcome")?,
                        reason: row.try_get("reason")?,
                        detail: row.try_get("detail")?,
                    })
                })
                .collect()
        })
    }
}
