//! Helpers for the event-log tests: a fresh PostgreSQL database per test, and raw SQL on
//! a test's store (to read what was written, and to tamper with it).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use sqlx::Row;
use warden::config::StorageConfig;
use warden::store::Store;

use crate::common::postgres_url;

/// A fresh PostgreSQL database for one test, so chains and tampering of other tests (and
/// other branches' schemas) never mix in. Dropped by `drop_database`.
pub async fn fresh_postgres() -> (String, String) {
    let admin = postgres_url();
    let name = format!("warden_audit_{:016x}", fastrand_u64());
    let pool = sqlx::PgPool::connect(&admin).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&pool)
        .await
        .unwrap();
    let url = match admin.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => panic!("unexpected postgres url {admin}"),
    };
    (url, name)
}

pub async fn drop_database(name: &str) {
    let pool = sqlx::PgPool::connect(&postgres_url()).await.unwrap();
    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&pool)
        .await;
}

fn fastrand_u64() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    nanos ^ (u64::from(std::process::id()) << 32)
}

/// Runs SQL against the test's store (SQLite file or PostgreSQL URL).
pub struct Db(pub Store);

macro_rules! on {
    ($db:expr, $pool:ident => $body:expr) => {
        match &$db.0 {
            Store::Sqlite($pool) => $body,
            Store::Postgres($pool) => $body,
        }
    };
}

impl Db {
    pub async fn open(url: &str) -> Db {
        let config = match url.strip_prefix("sqlite://") {
            Some(path) => StorageConfig::Sqlite { path: path.into() },
            None => StorageConfig::Postgres { url: url.into() },
        };
        Db(Store::open(&config).await.unwrap())
    }

    pub async fn exec(&self, sql: &str) -> u64 {
        on!(self, pool => sqlx::query(sql).execute(pool).await.unwrap().rows_affected())
    }

    pub async fn ids(&self, sql: &str) -> Vec<i64> {
        on!(self, pool => sqlx::query(sql)
            .fetch_all(pool)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<i64, _>(0))
            .collect())
    }

    pub async fn strings(&self, sql: &str) -> Vec<String> {
        on!(self, pool => sqlx::query(sql)
            .fetch_all(pool)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<String, _>(0))
            .collect())
    }
}
