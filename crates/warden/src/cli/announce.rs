//! What `serve` tells the operator at start-up: which store it uses and where the admin
//! API and dashboard are (or how to turn them on).

use std::net::SocketAddr;

use crate::config::{Config, StorageConfig};

/// The store as a person can find it: a SQLite file by absolute path (a relative URL is
/// relative to the working directory, which is easy to get wrong), PostgreSQL without
/// its password.
pub fn store(storage: &StorageConfig) -> String {
    match storage {
        StorageConfig::Sqlite { path } => {
            let path = std::path::absolute(path).unwrap_or_else(|_| path.clone());
            format!("SQLite file {}", path.display())
        }
        StorageConfig::SqliteMemory => "SQLite in memory (nothing is kept)".into(),
        StorageConfig::Postgres { url } => format!("PostgreSQL {}", without_password(url)),
    }
}

/// `postgres://user:secret@host/db` → `postgres://user:****@host/db`.
fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.into();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:****@{host}"),
            None => url.into(),
        },
        None => url.into(),
    }
}

/// Where the dashboard is when an admin token is configured; otherwise how to enable it
/// (the error is the message: the admin API answers 403 admin_api_disabled until then).
pub fn admin(config: &Config, admin_addr: SocketAddr) -> Result<String, String> {
    let admin = &config.admin;
    if admin.token_env.is_none() && admin.token_sha256.is_empty() {
        return Err(format!(
            "the admin API and dashboard (http://{admin_addr}/dashboard) are off: no admin token is configured. \
             Add [admin] token_env = \"WARDEN_ADMIN_TOKEN\" to a config file and start `warden serve --config FILE`; \
             setting WARDEN_ADMIN_TOKEN alone does not turn them on"
        ));
    }
    let source = match &admin.token_env {
        Some(var) => format!("the token in ${var}"),
        None => "a token matching [admin] token_sha256".into(),
    };
    Ok(format!(
        "dashboard: http://{admin_addr}/dashboard, admin API: http://{admin_addr}/admin/v1 (send {source}); /metrics, /healthz, /readyz need no token"
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a test fails loudly")]
mod tests {
    use super::*;

    #[test]
    fn a_relative_sqlite_path_is_shown_absolute() {
        let shown = store(&StorageConfig::Sqlite {
            path: "warden-data/warden.db".into(),
        });
        let cwd = std::env::current_dir().unwrap();
        assert!(
            shown.contains(&cwd.join("warden-data/warden.db").display().to_string()),
            "{shown}"
        );
    }

    #[test]
    fn a_postgres_password_is_masked() {
        let shown = store(&StorageConfig::Postgres {
            url: "postgres://warden:hunter22@db:5432/w".into(),
        });
        assert_eq!(shown, "PostgreSQL postgres://warden:****@db:5432/w");
    }

    /// Regression: with no [admin] token the dashboard was silently unreachable (403).
    #[test]
    fn serve_says_how_to_enable_the_admin_api_or_where_it_is() {
        let addr: SocketAddr = "127.0.0.1:8081".parse().unwrap();
        let off = admin(&Config::from_toml("").unwrap(), addr).unwrap_err();
        assert!(
            off.contains("token_env = \"WARDEN_ADMIN_TOKEN\"") && off.contains("/dashboard"),
            "{off}"
        );
        let on = Config::from_toml("[admin]\ntoken_env = \"WARDEN_ADMIN_TOKEN\"\n").unwrap();
        let on = admin(&on, addr).unwrap();
        assert!(
            on.contains("http://127.0.0.1:8081/dashboard") && on.contains("$WARDEN_ADMIN_TOKEN"),
            "{on}"
        );
    }
}
