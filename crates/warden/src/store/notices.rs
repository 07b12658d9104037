//! OpenAI safety notices: the durable queue of webhook deliveries and the cases acted on.

use sqlx::Row;

use super::{Store, StoreError};

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Delivery {
    pub webhook_id: String,
    pub received_ms: i64,
    pub event_type: String,
    pub case_id: Option<String>,
    /// `pending`, `done`, `failed` or `ignored`.
    pub state: String,
    pub attempts: i64,
    pub next_attempt_ms: i64,
    pub last_error: Option<String>,
    pub done_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SafetyCase {
    pub case_id: String,
    /// `warning` or `deactivation`.
    pub notice_type: String,
    pub reason: Option<String>,
    pub safety_identifier: Option<String>,
    /// Empty when Warden has no record of the identifier.
    pub key_name: Option<String>,
    pub end_user: Option<String>,
    /// What Warden did: `suspend`, `ban`, `none` or `unmapped`.
    pub action: String,
    pub received_ms: i64,
    pub acted_ms: i64,
    pub webhook_id: String,
}

const DELIVERY_COLUMNS: &str = "webhook_id, received_ms, event_type, case_id, state, attempts, \
     next_attempt_ms, last_error, done_ms";
const CASE_COLUMNS: &str = "case_id, notice_type, reason, safety_identifier, key_name, end_user, \
     action, received_ms, acted_ms, webhook_id";

impl Store {
    /// Queues a delivery; `false` when this webhook id was already received (a replay).
    pub async fn enqueue_delivery(&self, d: &Delivery) -> Result<bool, StoreError> {
        let sql = format!(
            "INSERT INTO notice_deliveries ({DELIVERY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (webhook_id) DO NOTHING"
        );
        let inserted = on_pool!(self, pool => sqlx::query(&sql)
            .bind(&d.webhook_id)
            .bind(d.received_ms)
            .bind(&d.event_type)
            .bind(&d.case_id)
            .bind(&d.state)
            .bind(d.attempts)
            .bind(d.next_attempt_ms)
            .bind(&d.last_error)
            .bind(d.done_ms)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(inserted == 1)
    }

    /// Pending deliveries whose next attempt is due, oldest first.
    pub async fn due_deliveries(
        &self,
        now_ms: i64,
        limit: i64,
    ) -> Result<Vec<Delivery>, StoreError> {
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM notice_deliveries \
             WHERE state = 'pending' AND next_attempt_ms <= $1 ORDER BY received_ms LIMIT $2"
        );
        on_pool!(self, pool => {
            let rows = sqlx::query(&sql).bind(now_ms).bind(limit).fetch_all(pool).await?;
            rows.iter().map(delivery_from).collect()
        })
    }

    /// Claims a due delivery for one attempt: bumps its attempt count and pushes its next
    /// attempt past `lease_until_ms`. `false` when another replica claimed it first.
    pub async fn claim_delivery(
        &self,
        webhook_id: &str,
        now_ms: i64,
        lease_until_ms: i64,
    ) -> Result<bool, StoreError> {
        let sql = "UPDATE notice_deliveries SET attempts = attempts + 1, next_attempt_ms = $1 \
                   WHERE webhook_id = $2 AND state = 'pending' AND next_attempt_ms <= $3";
        let claimed = on_pool!(self, pool => sqlx::query(sql)
            .bind(lease_until_ms)
            .bind(webhook_id)
            .bind(now_ms)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(claimed == 1)
    }

    /// Ends or reschedules a delivery.
    pub async fn settle_delivery(
        &self,
        webhook_id: &str,
        state: &str,
        next_attempt_ms: i64,
        last_error: Option<&str>,
        done_ms: Option<i64>,
    ) -> Result<(), StoreError> {
        let sql = "UPDATE notice_deliveries SET state = $1, next_attempt_ms = $2, last_error = $3, done_ms = $4 \
                   WHERE webhook_id = $5";
        on_pool!(self, pool => {
            sqlx::query(sql)
                .bind(state)
                .bind(next_attempt_ms)
                .bind(last_error)
                .bind(done_ms)
                .bind(webhook_id)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Records a case; `false` when it was already recorded (acted on before).
    pub async fn record_case(&self, c: &SafetyCase) -> Result<bool, StoreError> {
        let sql = format!(
            "INSERT INTO safety_cases ({CASE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (case_id) DO NOTHING"
        );
        let inserted = on_pool!(self, pool => sqlx::query(&sql)
            .bind(&c.case_id)
            .bind(&c.notice_type)
            .bind(&c.reason)
            .bind(&c.safety_identifier)
            .bind(&c.key_name)
            .bind(&c.end_user)
            .bind(&c.action)
            .bind(c.received_ms)
            .bind(c.acted_ms)
            .bind(&c.webhook_id)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(inserted == 1)
    }

    pub async fn case(&self, case_id: &str) -> Result<Option<SafetyCase>, StoreError> {
        let sql = format!("SELECT {CASE_COLUMNS} FROM safety_cases WHERE case_id = $1");
        on_pool!(self, pool => {
            let row = sqlx::query(&sql).bind(case_id).fetch_optional(pool).await?;
            row.as_ref().map(case_from).transpose()
        })
    }

    /// Cases, newest first.
    pub async fn list_cases(&self, limit: i64) -> Result<Vec<SafetyCase>, StoreError> {
        let sql = format!(
            "SELECT {CASE_COLUMNS} FROM safety_cases ORDER BY received_ms DESC, case_id LIMIT $1"
        );
        on_pool!(self, pool => {
            let rows = sqlx::query(&sql).bind(limit).fetch_all(pool).await?;
            rows.iter().map(case_from).collect()
        })
    }

    /// Deliveries that have not been acted on (pending or failed), oldest first.
    pub async fn unsettled_deliveries(&self, limit: i64) -> Result<Vec<Delivery>, StoreError> {
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM notice_deliveries WHERE state IN ('pending', 'failed') \
             ORDER BY received_ms LIMIT $1"
        );
        on_pool!(self, pool => {
            let rows = sqlx::query(&sql).bind(limit).fetch_all(pool).await?;
            rows.iter().map(delivery_from).collect()
        })
    }
}

fn delivery_from<R>(row: &R) -> Result<Delivery, StoreError>
where
    R: Row,
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database>,
    for<'r> Option<i64>: sqlx::Decode<'r, R::Database>,
{
    Ok(Delivery {
        webhook_id: row.try_get("webhook_id")?,
        received_ms: row.try_get("received_ms")?,
        event_type: row.try_get("event_type")?,
        case_id: row.try_get("case_id")?,
        state: row.try_get("state")?,
        attempts: row.try_get("attempts")?,
        next_attempt_ms: row.try_get("next_attempt_ms")?,
        last_error: row.try_get("last_error")?,
        done_ms: row.try_get("done_ms")?,
    })
}

fn case_from<R>(row: &R) -> Result<SafetyCase, StoreError>
where
    R: Row,
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database>,
{
    Ok(SafetyCase {
        case_id: row.try_get("case_id")?,
        notice_type: row.try_get("notice_type")?,
        reason: row.try_get("reason")?,
        safety_identifier: row.try_get("safety_identifier")?,
        key_name: row.try_get("key_name")?,
        end_user: row.try_get("end_user")?,
        action: row.try_get("action")?,
        received_ms: row.try_get("received_ms")?,
        acted_ms: row.try_get("acted_ms")?,
        webhook_id: row.try_get("webhook_id")?,
    })
}
