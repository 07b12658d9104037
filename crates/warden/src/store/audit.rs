//! Store queries of the event log's durable side: chained appends (events, chain head and
//! excerpts in one transaction), reading chains back for `warden audit verify`, and the
//! retention sweeps.

use sqlx::Row;

use super::{Store, StoreError};
use crate::events::EventRecord;

/// Where one event sits in its chain.
#[derive(Debug, Clone)]
pub struct ChainPosition {
    pub seq: i64,
    pub prev_hash: String,
    pub hash: String,
}

/// A chain's head as recorded in `audit_chains`.
#[derive(Debug, Clone)]
pub struct ChainHead {
    pub chain_id: String,
    pub started_at: i64,
    pub last_seq: i64,
    pub last_hash: String,
}

/// A retention cut: every event of the chain up to `seq` was deleted; `hash` was the
/// hash of event `seq`, so the first remaining event must link to it.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub seq: i64,
    pub hash: String,
    pub cut_at: i64,
    pub events_deleted: i64,
}

/// A stored event with everything its hash covers.
#[derive(Debug, Clone, Default)]
pub struct StoredEvent {
    pub id: i64,
    pub chain_id: Option<String>,
    pub chain_seq: Option<i64>,
    pub prev_hash: Option<String>,
    pub hash: Option<String>,
    pub request_id: String,
    pub at_ms: i64,
    pub kind: String,
    pub key_name: Option<String>,
    pub end_user: Option<String>,
    pub safety_identifier: Option<String>,
    pub client_ip: Option<String>,
    pub endpoint: Option<String>,
    pub model: Option<String>,
    pub stream: bool,
    pub status: i64,
    pub outcome: String,
    pub reason: Option<String>,
    pub latency_us: i64,
    pub upstream_us: Option<i64>,
    pub detail: Option<String>,
    pub content_sha256: Option<String>,
    pub content_len: Option<i64>,
    pub country: Option<String>,
}

const EVENT_COLUMNS: &str =
    "id, chain_id, chain_seq, prev_hash, hash, request_id, at_ms, kind, key_name, \
     end_user, safety_identifier, client_ip, endpoint, model, stream, status, outcome, reason, \
     latency_us, upstream_us, detail, content_sha256, content_len, country";

/// Rows per INSERT: 23 binds each, under both engines' bind-parameter limits.
const INSERT_ROWS: usize = 500;

macro_rules! stored_event {
    ($row:expr) => {{
        let row = $row;
        let status: i32 = row.try_get("status")?;
        StoredEvent {
            id: row.try_get("id")?,
            chain_id: row.try_get("chain_id")?,
            chain_seq: row.try_get("chain_seq")?,
            prev_hash: row.try_get("prev_hash")?,
            hash: row.try_get("hash")?,
            request_id: row.try_get("request_id")?,
            at_ms: row.try_get("at_ms")?,
            kind: row.try_get("kind")?,
            key_name: row.try_get("key_name")?,
            end_user: row.try_get("end_user")?,
            safety_identifier: row.try_get("safety_identifier")?,
            client_ip: row.try_get("client_ip")?,
            endpoint: row.try_get("endpoint")?,
            model: row.try_get("model")?,
            stream: row.try_get("stream")?,
            status: i64::from(status),
            outcome: row.try_get("outcome")?,
            reason: row.try_get("reason")?,
            latency_us: row.try_get("latency_us")?,
            upstream_us: row.try_get("upstream_us")?,
            detail: row.try_get("detail")?,
            content_sha256: row.try_get("content_sha256")?,
            content_len: row.try_get("content_len")?,
            country: row.try_get("country")?,
        }
    }};
}

impl Store {
    /// Appends a batch to chain `chain_id`: the events with their chain positions, the new
    /// chain head and any excerpts, in one transaction (one commit per batch).
    pub async fn append_chained(
        &self,
        chain_id: &str,
        started_at: i64,
        events: &[EventRecord],
        positions: &[ChainPosition],
        excerpt_expires_at: i64,
    ) -> Result<(), StoreError> {
        let Some(last) = positions.last() else {
            return Ok(());
        };
        let head = "INSERT INTO audit_chains (chain_id, started_at, last_seq, last_hash) VALUES ($1, $2, $3, $4) \
                    ON CONFLICT (chain_id) DO UPDATE SET last_seq = excluded.last_seq, last_hash = excluded.last_hash";
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let rows: Vec<(&EventRecord, &ChainPosition)> = events.iter().zip(positions).collect();
            for chunk in rows.chunks(INSERT_ROWS) {
                let mut insert = sqlx::QueryBuilder::new(
                    "INSERT INTO events (request_id, at_ms, kind, key_name, end_user, safety_identifier, \
                     client_ip, endpoint, model, stream, status, outcome, reason, latency_us, upstream_us, detail, \
                     content_sha256, content_len, chain_id, chain_seq, prev_hash, hash, country) ",
                );
                insert.push_values(chunk, |mut row, (e, p)| {
                    row.push_bind(&e.request_id)
                        .push_bind(e.at_ms)
                        .push_bind(e.kind)
                        .push_bind(&e.key_name)
                        .push_bind(&e.end_user)
                        .push_bind(&e.safety_identifier)
                        .push_bind(&e.client_ip)
                        .push_bind(e.endpoint)
                        .push_bind(&e.model)
                        .push_bind(e.stream)
                        .push_bind(i32::from(e.status))
                        .push_bind(e.outcome)
                        .push_bind(&e.reason)
                        .push_bind(e.latency_us)
                        .push_bind(e.upstream_us)
                        .push_bind(&e.detail)
                        .push_bind(&e.content_sha256)
                        .push_bind(e.content_len)
                        .push_bind(chain_id)
                        .push_bind(p.seq)
                        .push_bind(&p.prev_hash)
                        .push_bind(&p.hash)
                        .push_bind(&e.country);
                });
                insert.build().execute(&mut *tx).await?;
            }
            sqlx::query(head)
                .bind(chain_id)
                .bind(started_at)
                .bind(last.seq)
                .bind(&last.hash)
                .execute(&mut *tx)
                .await?;
            let excerpts: Vec<&EventRecord> = events.iter().filter(|e| e.excerpt.is_some()).collect();
            if !excerpts.is_empty() {
                let mut insert = sqlx::QueryBuilder::new(
                    "INSERT INTO event_excerpts (request_id, kind, at_ms, expires_at, excerpt) ",
                );
                insert.push_values(excerpts, |mut row, e| {
                    row.push_bind(&e.request_id)
                        .push_bind(e.kind)
                        .push_bind(e.at_ms)
                        .push_bind(excerpt_expires_at)
                        .push_bind(&e.excerpt);
                });
                insert.build().execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Every chain: those with a recorded head, and any that only has events left.
    pub async fn audit_chains(&self) -> Result<Vec<ChainHead>, StoreError> {
        let heads = "SELECT chain_id, started_at, last_seq, last_hash FROM audit_chains ORDER BY started_at, chain_id";
        let orphans = "SELECT DISTINCT chain_id FROM events WHERE chain_id IS NOT NULL \
                       AND chain_id NOT IN (SELECT chain_id FROM audit_chains)";
        on_pool!(self, pool => {
            let mut out = Vec::new();
            for row in sqlx::query(heads).fetch_all(pool).await? {
                out.push(ChainHead {
                    chain_id: row.try_get("chain_id")?,
                    started_at: row.try_get("started_at")?,
                    last_seq: row.try_get("last_seq")?,
                    last_hash: row.try_get("last_hash")?,
                });
            }
            for row in sqlx::query(orphans).fetch_all(pool).await? {
                // No head: the verifier reports it; -1 marks "unknown".
                out.push(ChainHead {
                    chain_id: row.try_get("chain_id")?,
                    started_at: 0,
                    last_seq: -1,
                    last_hash: String::new(),
                });
            }
            Ok(out)
        })
    }

    /// The latest retention cut of a chain, if any.
    pub async fn audit_checkpoint(&self, chain_id: &str) -> Result<Option<Checkpoint>, StoreError> {
        let sql =
            "SELECT seq, hash, cut_at, events_deleted FROM audit_checkpoints WHERE chain_id = $1 \
                   ORDER BY seq DESC LIMIT 1";
        on_pool!(self, pool => {
            let Some(row) = sqlx::query(sql).bind(chain_id).fetch_optional(pool).await? else {
                return Ok(None);
            };
            Ok(Some(Checkpoint {
                seq: row.try_get("seq")?,
                hash: row.try_get("hash")?,
                cut_at: row.try_get("cut_at")?,
                events_deleted: row.try_get("events_deleted")?,
            }))
        })
    }

    /// Up to `limit` events of a chain with `after < seq <= until`, in chain order.
    pub async fn chain_events(
        &self,
        chain_id: &str,
        after: i64,
        until: i64,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE chain_id = $1 AND chain_seq > $2 AND chain_seq <= $3 \
             ORDER BY chain_seq LIMIT $4"
        );
        on_pool!(self, pool => {
            let rows = sqlx::query(&sql)
                .bind(chain_id)
                .bind(after)
                .bind(until)
                .bind(limit)
                .fetch_all(pool)
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in &rows {
                out.push(stored_event!(row));
            }
            Ok(out)
        })
    }

    /// The first event written outside the chained writer (no chain position), if any.
    pub async fn first_unchained_event(&self) -> Result<Option<i64>, StoreError> {
        let sql = "SELECT MIN(id) AS id FROM events WHERE chain_id IS NULL OR chain_seq IS NULL OR hash IS NULL";
        on_pool!(self, pool => {
            let row = sqlx::query(sql).fetch_one(pool).await?;
            Ok(row.try_get::<Option<i64>, _>("id")?)
        })
    }

    /// Events with `id > after_id` and `since <= at_ms < until`, oldest id first.
    pub async fn events_between(
        &self,
        since: i64,
        until: i64,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE at_ms >= $1 AND at_ms < $2 AND id > $3 ORDER BY id LIMIT $4"
        );
        on_pool!(self, pool => {
            let rows = sqlx::query(&sql)
                .bind(since)
                .bind(until)
                .bind(after_id)
                .bind(limit)
                .fetch_all(pool)
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in &rows {
                out.push(stored_event!(row));
            }
            Ok(out)
        })
    }

    /// Deletes excerpts past their retention; returns how many.
    pub async fn delete_expired_excerpts(&self, now_ms: i64) -> Result<u64, StoreError> {
        let sql = "DELETE FROM event_excerpts WHERE expires_at <= $1";
        on_pool!(self, pool => Ok(sqlx::query(sql).bind(now_ms).execute(pool).await?.rows_affected()))
    }

    /// The excerpts kept for a request (review of a flagged item).
    pub async fn excerpts_of(&self, request_id: &str) -> Result<Vec<String>, StoreError> {
        let sql = "SELECT excerpt FROM event_excerpts WHERE request_id = $1 ORDER BY id";
        on_pool!(self, pool => {
            let rows = sqlx::query(sql).bind(request_id).fetch_all(pool).await?;
            rows.iter().map(|r| Ok(r.try_get::<String, _>("excerpt")?)).collect()
        })
    }

    /// Retention of events: for each chain, deletes the prefix of events up to the last
    /// one recorded before `cutoff_ms`, leaving a checkpoint (that event's sequence number
    /// and hash) in the same transaction so the chain still verifies from the cut.
    /// Returns the number of events deleted.
    pub async fn cut_events_before(&self, cutoff_ms: i64, now_ms: i64) -> Result<u64, StoreError> {
        let cuts = "SELECT chain_id, MAX(chain_seq) AS seq FROM events WHERE at_ms < $1 AND chain_id IS NOT NULL GROUP BY chain_id";
        let hash = "SELECT hash FROM events WHERE chain_id = $1 AND chain_seq = $2";
        let checkpoint = "INSERT INTO audit_checkpoints (chain_id, seq, hash, cut_at, events_deleted) VALUES ($1, $2, $3, $4, $5)";
        let delete = "DELETE FROM events WHERE chain_id = $1 AND chain_seq <= $2";
        let mut total = 0u64;
        on_pool!(self, pool => {
            let targets = sqlx::query(cuts).bind(cutoff_ms).fetch_all(pool).await?;
            for target in targets {
                let chain_id: String = target.try_get("chain_id")?;
                let seq: i64 = target.try_get("seq")?;
                let mut tx = pool.begin().await?;
                let row = sqlx::query(hash).bind(&chain_id).bind(seq).fetch_one(&mut *tx).await?;
                let at: Option<String> = row.try_get("hash")?;
                let deleted = sqlx::query(delete).bind(&chain_id).bind(seq).execute(&mut *tx).await?.rows_affected();
                sqlx::query(checkpoint)
                    .bind(&chain_id)
                    .bind(seq)
                    .bind(at.unwrap_or_default())
                    .bind(now_ms)
                    .bind(deleted as i64)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                total += deleted;
            }
        });
        Ok(total)
    }
}
