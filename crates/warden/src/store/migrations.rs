//! Schema versions, applied in order at start-up, each exactly once. One DDL text serves
//! both engines; `{id}` stands for each engine's auto-increment key.

use sqlx::Row;

use super::{Store, StoreError};

/// (version, DDL). Append only; never edit an applied step.
const STEPS: &[(i64, &str)] = &[
    (
        1,
        "CREATE TABLE virtual_keys (
        name TEXT PRIMARY KEY,
        secret_hash TEXT NOT NULL UNIQUE,
        prefix TEXT NOT NULL,
        end_user TEXT NOT NULL,
        trusted_user_field BOOLEAN NOT NULL,
        created_at BIGINT NOT NULL,
        revoked_at BIGINT
    );
    CREATE TABLE settings (name TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE events (
        id {id},
        request_id TEXT NOT NULL,
        at_ms BIGINT NOT NULL,
        kind TEXT NOT NULL,
        key_name TEXT,
        end_user TEXT,
        safety_identifier TEXT,
        client_ip TEXT,
        endpoint TEXT,
        model TEXT,
        stream BOOLEAN NOT NULL,
        status INTEGER NOT NULL,
        outcome TEXT NOT NULL,
        reason TEXT,
        latency_us BIGINT NOT NULL,
        upstream_us BIGINT,
        detail TEXT
    );
    CREATE INDEX events_at ON events (at_ms);
    CREATE INDEX events_user ON events (key_name, end_user);",
    ),
    (
        4,
        // Spend per (org | key | user, subject, UTC day or month), in nano-USD.
        "CREATE TABLE spend (
        scope TEXT NOT NULL,
        subject TEXT NOT NULL,
        period TEXT NOT NULL,
        nano_usd BIGINT NOT NULL,
        PRIMARY KEY (scope, subject, period)
    );",
    ),
];

/// Arbitrary constant naming Warden's migration lock in PostgreSQL.
const PG_LOCK_ID: i64 = 0x5741_5244_454e;

pub(super) async fn run(store: &Store) -> Result<(), StoreError> {
    let id_column = match store {
        Store::Sqlite(_) => "INTEGER PRIMARY KEY AUTOINCREMENT",
        Store::Postgres(_) => "BIGSERIAL PRIMARY KEY",
    };
    on_pool!(store, pool => {
        let mut tx = pool.begin().await?;
        if matches!(store, Store::Postgres(_)) {
            // Replicas starting together: one migrates, the others wait and find it done.
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(PG_LOCK_ID)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::raw_sql("CREATE TABLE IF NOT EXISTS warden_schema (version BIGINT PRIMARY KEY)")
            .execute(&mut *tx)
            .await?;
        let row = sqlx::query("SELECT MAX(version) AS v FROM warden_schema")
            .fetch_one(&mut *tx)
            .await?;
        let applied = row.try_get::<Option<i64>, _>("v")?.unwrap_or(0);
        for (version, ddl) in STEPS.iter().filter(|s| s.0 > applied) {
            sqlx::raw_sql(&ddl.replace("{id}", id_column))
                .execute(&mut *tx)
                .await?;
            sqlx::query("INSERT INTO warden_schema (version) VALUES ($1)")
                .bind(version)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
    });
    Ok(())
}
