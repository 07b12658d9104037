//! Schema versions, applied in order at start-up, each exactly once. One DDL text serves
//! both engines; `{id}` stands for each engine's auto-increment key.

use sqlx::Row;

use super::{Store, StoreError};

/// (version, DDL). Append only; never edit an applied step. Steps do not depend on each
/// other's order beyond 1 coming first, so each is applied once whatever else was applied.
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
        // Event log: content digest, the audit hash chain (one chain per writer process),
        // chain heads and retention checkpoints, and opt-in excerpts kept outside the chain.
        2,
        "ALTER TABLE events ADD COLUMN content_sha256 TEXT;
    ALTER TABLE events ADD COLUMN content_len BIGINT;
    ALTER TABLE events ADD COLUMN chain_id TEXT;
    ALTER TABLE events ADD COLUMN chain_seq BIGINT;
    ALTER TABLE events ADD COLUMN prev_hash TEXT;
    ALTER TABLE events ADD COLUMN hash TEXT;
    CREATE UNIQUE INDEX events_chain ON events (chain_id, chain_seq);
    CREATE INDEX events_kind_at ON events (kind, at_ms);
    CREATE TABLE audit_chains (
        chain_id TEXT PRIMARY KEY,
        started_at BIGINT NOT NULL,
        last_seq BIGINT NOT NULL,
        last_hash TEXT NOT NULL
    );
    CREATE TABLE audit_checkpoints (
        chain_id TEXT NOT NULL,
        seq BIGINT NOT NULL,
        hash TEXT NOT NULL,
        cut_at BIGINT NOT NULL,
        events_deleted BIGINT NOT NULL,
        PRIMARY KEY (chain_id, seq)
    );
    CREATE TABLE event_excerpts (
        id {id},
        request_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        at_ms BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        excerpt TEXT NOT NULL
    );
    CREATE INDEX event_excerpts_request ON event_excerpts (request_id);
    CREATE INDEX event_excerpts_expiry ON event_excerpts (expires_at);",
    ),
    (
        3,
        // End users Warden has seen (the safety_identifier -> user map OpenAI's notices
        // need), their standing, and the strikes behind it. Strikes are append-only rows
        // so replicas adding strikes at once never lose one.
        "CREATE TABLE end_users (
        key_name TEXT NOT NULL,
        end_user TEXT NOT NULL,
        safety_identifier TEXT NOT NULL,
        first_seen_ms BIGINT NOT NULL,
        last_seen_ms BIGINT NOT NULL,
        strike_weight DOUBLE PRECISION NOT NULL DEFAULT 0,
        strike_at_ms BIGINT NOT NULL DEFAULT 0,
        status TEXT NOT NULL DEFAULT 'active',
        status_until_ms BIGINT,
        status_reason TEXT,
        updated_ms BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (key_name, end_user)
    );
    CREATE INDEX end_users_sid ON end_users (safety_identifier);
    CREATE INDEX end_users_updated ON end_users (updated_ms);
    CREATE TABLE strikes (
        id {id},
        key_name TEXT NOT NULL,
        end_user TEXT NOT NULL,
        at_ms BIGINT NOT NULL,
        weight DOUBLE PRECISION NOT NULL,
        category TEXT NOT NULL,
        request_id TEXT
    );
    CREATE INDEX strikes_user ON strikes (key_name, end_user, at_ms);",
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
    (
        5,
        // Abuse detection: the client's country on each request event (geo policy).
        "ALTER TABLE events ADD COLUMN country TEXT;",
    ),
    (
        6,
        // OpenAI's safety notices (the delivery queue and the cases acted on) and the
        // virtual-key lifecycle (expiry, scopes, rotation overlap).
        "CREATE TABLE notice_deliveries (
        webhook_id TEXT PRIMARY KEY,
        received_ms BIGINT NOT NULL,
        event_type TEXT NOT NULL,
        case_id TEXT,
        state TEXT NOT NULL,
        attempts BIGINT NOT NULL DEFAULT 0,
        next_attempt_ms BIGINT NOT NULL,
        last_error TEXT,
        done_ms BIGINT
    );
    CREATE INDEX notice_deliveries_due ON notice_deliveries (state, next_attempt_ms);
    CREATE TABLE safety_cases (
        case_id TEXT PRIMARY KEY,
        notice_type TEXT NOT NULL,
        reason TEXT,
        safety_identifier TEXT,
        key_name TEXT,
        end_user TEXT,
        action TEXT NOT NULL,
        received_ms BIGINT NOT NULL,
        acted_ms BIGINT NOT NULL,
        webhook_id TEXT NOT NULL
    );
    ALTER TABLE virtual_keys ADD COLUMN expires_at BIGINT;
    ALTER TABLE virtual_keys ADD COLUMN allowed_models TEXT;
    ALTER TABLE virtual_keys ADD COLUMN allowed_endpoints TEXT;
    ALTER TABLE virtual_keys ADD COLUMN previous_hash TEXT;
    ALTER TABLE virtual_keys ADD COLUMN previous_until BIGINT;",
    ),
    (
        7,
        // Upstream keys sealed under the vault's master key (AES-256-GCM).
        "CREATE TABLE upstream_keys (
        name TEXT PRIMARY KEY,
        sealed TEXT NOT NULL,
        organization TEXT,
        project TEXT,
        state TEXT NOT NULL,
        created_ms BIGINT NOT NULL,
        updated_ms BIGINT NOT NULL
    );",
    ),
    (
        9,
        // Leak response: the countries each virtual key has been used from.
        "CREATE TABLE key_countries (
        key_name TEXT NOT NULL,
        country TEXT NOT NULL,
        first_seen_ms BIGINT NOT NULL,
        PRIMARY KEY (key_name, country)
    );",
    ),
    (
        // Issue 16's number, so steps other branches append meanwhile do not collide.
        // Who created each object made through Warden (files, batches, stored responses…).
        16,
        "CREATE TABLE owned_objects (
        object_id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        key_name TEXT NOT NULL,
        end_user TEXT,
        created_ms BIGINT NOT NULL
    );
    CREATE INDEX owned_objects_key ON owned_objects (key_name, kind);",
    ),
    (
        17,
        // Key hygiene: what Warden sent on each upstream key per minute (compared with
        // OpenAI's Usage API), and each vault key's OpenAI identity and rotation state.
        "CREATE TABLE upstream_usage (
        key_name TEXT NOT NULL,
        minute BIGINT NOT NULL,
        requests BIGINT NOT NULL,
        input_tokens BIGINT NOT NULL,
        output_tokens BIGINT NOT NULL,
        PRIMARY KEY (key_name, minute)
    );
    ALTER TABLE upstream_keys ADD COLUMN openai_key_id TEXT;
    ALTER TABLE upstream_keys ADD COLUMN openai_service_account TEXT;
    ALTER TABLE upstream_keys ADD COLUMN rotate_every_days BIGINT;
    ALTER TABLE upstream_keys ADD COLUMN lineage TEXT;
    ALTER TABLE upstream_keys ADD COLUMN delete_after_ms BIGINT;
    ALTER TABLE upstream_keys ADD COLUMN deleted_upstream_ms BIGINT;
    ALTER TABLE upstream_keys ADD COLUMN rotating_ms BIGINT;",
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
        let applied: Vec<i64> = sqlx::query("SELECT version FROM warden_schema")
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|row| row.try_get::<i64, _>("version"))
            .collect::<Result<_, _>>()?;
        // Every missing version, not just those above the highest: steps are developed
        // on parallel branches, so a database may have 3 applied before 2 exists.
        for (version, ddl) in STEPS.iter().filter(|s| !applied.contains(&s.0)) {
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
