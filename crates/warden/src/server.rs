//! Binds the public and admin listeners and serves until shut down.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::admin;
use crate::config::{Config, EnvSource, Secrets};
use crate::gateway::Gateway;
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
    let store = Store::open(&config.storage).await?;
    let gateway = Arc::new(Gateway::build(config, &secrets, store).await?);

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
    tasks.spawn(serve_public(public, gateway.clone(), stopped.clone()));
    tasks.spawn(admin::serve(admin, gateway.clone(), stopped.clone()));
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
        self.gateway.events.flush().await;
        self.gateway.spend.flush().await;
    }
}

async fn serve_public(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .keep_alive(true);
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(err) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!(%err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let gateway = gateway.clone();
                let service = service_fn(move |request| {
                    let gateway = gateway.clone();
                    async move { Ok::<_, Infallible>(handler::handle(gateway, request, peer).await) }
                });
                let connection = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    if let Err(err) = connection.await {
                        tracing::debug!(error = %err, "connection ended with an error");
                    }
                });
            }
            _ = stopped.changed() => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(Duration::from_secs(30), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("in-flight requests still running after 30 s; closing them");
    }
}
