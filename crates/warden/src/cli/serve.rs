//! `warden serve`: run until SIGINT or SIGTERM, then drain; SIGHUP reloads the config.

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::ProcessEnv;
use crate::server;

pub async fn run(config_path: Option<PathBuf>) -> anyhow::Result<()> {
    let config = super::load_config(config_path.as_ref())?;
    super::init_logging(&config);
    let running = match config_path {
        Some(path) => server::start_from_file(&config, path, Arc::new(ProcessEnv)).await?,
        None => server::start(&config, &ProcessEnv).await?,
    };
    // Tests and scripts read this line to learn the ports (listen = "…:0").
    println!(
        "warden listening on http://{} (admin http://{})",
        running.public_addr, running.admin_addr
    );
    tracing::info!(public = %running.public_addr, admin = %running.admin_addr, store = running.gateway.store.backend(), "warden started");
    tracing::info!("store: {}", super::announce::store(&config.storage));
    match super::announce::admin(&config, running.admin_addr) {
        Ok(where_) => tracing::info!("{where_}"),
        Err(how) => tracing::warn!("{how}"),
    }
    wait_for_signal().await;
    tracing::info!("shutting down: draining in-flight requests");
    running.shutdown().await;
    Ok(())
}

pub async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
