//! Binds the public and admin listeners and serves until shut down.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use hyper::service::service_fn;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::admin;
use crate::config::connections::ConnectionConfig;
use crate::config::{Config, EnvSource, Secrets};
use crate::gateway::Gateway;
use crate::listener::{self, gate::Gate};
use crate::proxy::handler;
use crate::store::Store;

/// A started gateway: where it listens, and how to stop it.
pub struct Running {
    pub public_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub gateway: Arc<Gateway>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

/// Like `start`, for a config read from `path`: SIGHUP, a change of the file and the
/// admin API reload it (see `reload`), with secrets read from `env` again each time.
pub async fn start_from_file(
    config: &Config,
    path: PathBuf,
    env: Arc<dyn EnvSource>,
) -> anyhow::Result<Running> {
    let mut running = start(config, env.as_ref()).await?;
    running.gateway.reloads.attach(path, env);
    let gateway = Arc::downgrade(&running.gateway);
    let mut triggers = Vec::new();
    if config.server.watch_config {
        triggers.push(crate::reload::watch::spawn(gateway.clone()));
    }
    #[cfg(unix)]
    triggers.push(crate::reload::spawn_on_sighup(gateway)?);
    let mut stopped = running.stop.subscribe();
    running.tasks.spawn(async move {
        let _ = stopped.wait_for(|s| *s).await;
        for trigger in triggers {
            trigger.abort();
        }
    });
    Ok(running)
}

/// Validates secrets, opens the store, builds the gateway and binds both listeners.
pub async fn start(config: &Config, env: &dyn EnvSource) -> anyhow::Result<Running> {
    let (secrets, problems, warnings) = Secrets::load(config, env);
    for warning in &warnings {
        tracing::warn!("{warning}");
    }
    if !problems.is_empty() {
        anyhow::bail!("the configuration cannot start:\n{problems}");
    }
    let store = Store::open_for_serving(&config.storage).await?;
    let gateway = Arc::new(Gateway::build_opened(config, &secrets, store).await?);

    let public = TcpListener::bind(config.server.listen).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot listen on {} (server.listen): {e}",
            config.server.listen
        )
    })?;
    let admin = TcpListener::bind(config.server.admin_listen)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot listen on {} (server.admin_listen): {e}",
                config.server.admin_listen
            )
        })?;
    let public_addr = public.local_addr()?;
    let admin_addr = admin.local_addr()?;

    let (stop, stopped) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let refresh = gateway.spawn_key_refresh();
    let connections = fit_to_fd_limit(config.server.connections.clone());
    {
        let (gateway, stopped, connections) =
            (gateway.clone(), stopped.clone(), connections.clone());
        tasks.spawn(async move { serve_public(public, gateway, &connections, stopped).await });
    }
    if let Some(addr) = config.notices.listen {
        let hooks = TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (openai_notices.listen): {e}"))?;
        tracing::info!(webhooks = %hooks.local_addr()?, "OpenAI webhook receiver on its own listener");
        tasks.spawn(admin::serve_router(
            hooks,
            admin::webhook_router(gateway.clone()),
            Gate::new("webhooks", connections.admin_max_connections, 64),
            settings(&connections),
            stopped.clone(),
        ));
    }
    tasks.spawn(admin::serve(
        admin,
        gateway.clone(),
        Gate::new(
            "admin",
            connections.admin_max_connections,
            connections.admin_max_connections,
        ),
        settings(&connections),
        stopped.clone(),
    ));
    tasks.spawn(async move {
        let mut stopped = stopped;
        let _ = stopped.wait_for(|s| *s).await;
        refresh.abort();
    });
    Ok(Running {
        public_addr,
        admin_addr,
        gateway,
        stop,
        tasks,
    })
}

impl Running {
    /// Stops accepting, lets in-flight requests finish (up to 30 s), flushes events.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
        self.gateway.auth_failures.flush(&self.gateway.events, true);
        self.gateway.events.flush().await;
        self.gateway.spend.flush().await;
    }
}

async fn serve_public(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    connections: &ConnectionConfig,
    stopped: watch::Receiver<bool>,
) {
    let gate = Gate::new(
        "public",
        connections.max_connections,
        connections.max_connections_per_ip,
    );
    let make = move |peer: SocketAddr| {
        let gateway = gateway.clone();
        service_fn(move |request| {
            let gateway = gateway.clone();
            async move { Ok::<_, Infallible>(handler::handle(gateway, request, peer).await) }
        })
    };
    listener::serve(listener, gate, settings(connections), make, stopped).await;
}

fn settings(connections: &ConnectionConfig) -> listener::Settings {
    listener::Settings {
        first_byte_timeout: connections.first_byte_timeout,
        idle_timeout: connections.idle_timeout,
        max_header_bytes: connections.max_header_bytes,
    }
}

/// Descriptors kept back from the public listener's cap: the admin listener's own cap,
/// plus the store, Redis, upstream connections, files and logs.
const FD_RESERVE: u64 = 256;

/// Raises the soft limit on open files to the hard one, and caps the public listener so a
/// flood on it can never use the descriptors the admin listener and the gateway need.
fn fit_to_fd_limit(mut connections: ConnectionConfig) -> ConnectionConfig {
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(err) => {
            tracing::warn!(%err, "could not read or raise the open-file limit");
            return connections;
        }
    };
    let room = limit.saturating_sub(FD_RESERVE + connections.admin_max_connections as u64);
    let room = usize::try_from(room).unwrap_or(usize::MAX).max(16);
    if connections.max_connections > room {
        tracing::warn!(
            configured = connections.max_connections,
            fd_limit = limit,
            using = room,
            "server.max_connections is above what the open-file limit allows; capping it"
        );
        connections.max_connections = room;
    }
    connections
}
