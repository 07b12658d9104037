//! The stand-in upstream: an in-process or standalone server that speaks OpenAI's wire format,
//! records what it receives and misbehaves on cue (see `docs/standin.md`).
//!
//! Beyond the contract in `docs/standin.md`:
//! - a fault spec may combine faults: `delay_ms=50,chunk_delay_ms=5,cut_after=3` (separated by
//!   `,`, `;`, `&` or spaces); a bad spec is a 400 with code `invalid_standin_fault`;
//! - a queued fault and the header combine, the header winning field by field; queued faults
//!   are used up only by calls that passed the API-key check;
//! - `POST /_standin/faults` takes an optional `"path"` prefix (e.g. `"/v1/safety/cases"`): only
//!   calls under it use the fault up; `DELETE /_standin/faults` and `DELETE /_standin/cases`
//!   forget them;
//! - `cut_after=N` counts SSE events (chat's role chunk is the first); a cut is not counted as a
//!   cancelled stream; `cut_after` and `chunk_delay_ms` do nothing to non-streaming answers;
//! - recorded requests also carry `"query"` (the query string or `null`); the log keeps the
//!   latest 10,000 requests (and at most 256 MiB of bodies); control calls are not recorded;
//! - `FLAG:<category>` markers also count inside an `image_url` URL of a moderation input.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! let standin = standin::spawn(standin::Options::default())?;
//! let base_url = standin.base_url(); // http://127.0.0.1:PORT/v1
//! # let _ = base_url;
//! let seen = standin.requests();
//! # let _ = seen;
//! # Ok(())
//! # }
//! ```

mod admin;
mod cases;
mod chat;
mod completions;
mod control;
mod embeddings;
mod errors;
mod faults;
mod images;
mod models;
mod moderations;
mod org;
mod realtime;
mod record;
mod responses;
mod rest;
mod routes;
mod sse;
mod state;
mod text;

pub use org::{DEFAULT_KEY_ID, DEFAULT_PROJECT};
pub use record::{RecordedRequest, Stats};

use anyhow::Context as _;
use axum::serve::ListenerExt as _;
use serde_json::Value;
use state::App;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::oneshot;

/// Worker threads of the runtime a spawned stand-in runs on.
const WORKER_THREADS: usize = 2;
/// How long dropping a [`Handle`] waits for open connections to be torn down.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// How to run a stand-in.
#[derive(Clone)]
pub struct Options {
    /// Address to bind; port 0 picks a free port.
    pub listen: SocketAddr,
    /// When set, every `/v1` call must carry `Authorization: Bearer KEY` (or another live
    /// key of the organization, e.g. one made through the Admin API).
    pub api_key: Option<String>,
    /// When set, `/v1/organization/…` (Admin, Usage, Costs) calls must carry it.
    pub admin_key: Option<String>,
}

impl Default for Options {
    /// `127.0.0.1:0`, no API key.
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            api_key: None,
            admin_key: None,
        }
    }
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Options")
            .field("listen", &self.listen)
            .field("api_key", &self.api_key.as_ref().map(|_| "***"))
            .field("admin_key", &self.admin_key.as_ref().map(|_| "***"))
            .finish()
    }
}

/// A running stand-in. It serves on its own runtime thread, so it works from sync and async
/// callers alike, and stops (closing its port and connections) when the handle is dropped.
pub struct Handle {
    addr: SocketAddr,
    app: Arc<App>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// Binds `options.listen` and serves on a background thread with its own multi-threaded runtime.
///
/// Errors when the address cannot be bound or the runtime cannot start.
pub fn spawn(options: Options) -> anyhow::Result<Handle> {
    let listener = std::net::TcpListener::bind(options.listen)
        .with_context(|| format!("binding the stand-in to {}", options.listen))?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let app = Arc::new(App::new(options.api_key, options.admin_key));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKER_THREADS)
        .thread_name("standin-worker")
        .enable_all()
        .build()
        .context("starting the stand-in's runtime")?;
    let (stop, stopped) = oneshot::channel::<()>();
    let served = app.clone();
    let thread = std::thread::Builder::new()
        .name(format!("standin-{}", addr.port()))
        .spawn(move || {
            runtime.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(listener) => listener,
                    Err(error) => {
                        tracing::error!(%error, "stand-in could not adopt its listener");
                        return;
                    }
                };
                tokio::select! {
                    result = serve_app(listener, served) => {
                        if let Err(error) = result {
                            tracing::error!(%error, "stand-in stopped serving");
                        }
                    }
                    // Sent or dropped: either way the handle is gone.
                    _ = stopped => {}
                }
            });
            runtime.shutdown_timeout(SHUTDOWN_GRACE);
        })
        .context("starting the stand-in's thread")?;
    Ok(Handle {
        addr,
        app,
        stop: Some(stop),
        thread: Some(thread),
    })
}

/// Serves a stand-in on `listener` until the future is dropped; what the `standin` binary runs.
pub async fn serve(
    listener: tokio::net::TcpListener,
    api_key: Option<String>,
) -> anyhow::Result<()> {
    serve_app(listener, Arc::new(App::new(api_key, None))).await
}

async fn serve_app(listener: tokio::net::TcpListener, app: Arc<App>) -> anyhow::Result<()> {
    let listener = listener.tap_io(|stream| {
        // Small SSE chunks must leave at once, not wait for Nagle.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
    });
    axum::serve(listener, routes::router(app))
        .await
        .context("serving the stand-in")
}

impl Handle {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR/v1`, what an OpenAI client takes as its base URL.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Every recorded `/v1` request (the most recent 10,000), oldest first.
    /// Accepts `key` too from now on, besides the configured one (an upstream key
    /// rotation, as OpenAI accepts old and new keys until the old one is revoked).
    pub fn accept_also(&self, key: &str) {
        self.app.accept_also(key);
    }

    /// Counts traffic on `key` (its value) that did not come through the caller: a leaked
    /// key used elsewhere, as the Usage and Costs APIs will report it.
    pub fn add_outside_usage(
        &self,
        key: &str,
        requests: u64,
        input_tokens: u64,
        output_tokens: u64,
    ) -> anyhow::Result<()> {
        self.add_usage_at(key, text::now(), requests, input_tokens, output_tokens)
    }

    /// Counts usage on `key` at `at` (Unix seconds), e.g. to replay a day of history.
    pub fn add_usage_at(
        &self,
        key: &str,
        at: u64,
        requests: u64,
        input_tokens: u64,
        output_tokens: u64,
    ) -> anyhow::Result<()> {
        let (id, project) = self
            .app
            .org
            .key_for(key)
            .ok_or_else(|| anyhow::anyhow!("no live key with that value"))?;
        let served = org::Served {
            kind: org::UsageKind::Completions,
            model: "gpt-4o-mini".into(),
            input_tokens,
            output_tokens,
        };
        self.app.org.count(&id, &project, at, &served, requests);
        Ok(())
    }

    /// Adds a key made by a user in the dashboard (not through the Admin API): for the
    /// caller, an unmanaged key. Returns its id and value.
    pub fn add_user_key(&self, project: &str, name: &str) -> (String, String) {
        let value = format!("sk-proj-{}", text::id("").trim_start_matches('_'));
        let id = self.app.org.add_key(project, name, &value, true);
        (id, value)
    }

    /// Whether a key with this value is live (not deleted through the Admin API).
    pub fn key_is_live(&self, key: &str) -> bool {
        self.app.org.key_for(key).is_some()
    }

    /// The ids of the live keys of a project.
    pub fn key_ids(&self, project: &str) -> Vec<String> {
        self.app.org.key_ids(project)
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.app.recorder.requests()
    }

    /// Forgets the recorded requests (the counters in [`Handle::stats`] keep counting).
    pub fn clear(&self) {
        self.app.recorder.clear();
    }

    /// Every client event received on realtime sockets (a non-JSON frame as a string),
    /// oldest first, like `GET /_standin/realtime`.
    pub fn realtime_events(&self) -> Vec<Value> {
        self.app.realtime_events()
    }

    /// What `GET /_standin/stats` reports.
    pub fn stats(&self) -> Stats {
        self.app.recorder.stats()
    }

    /// Queues a fault spec (e.g. `status=429`) for the next `count` `/v1` calls, like
    /// `POST /_standin/faults`.
    pub fn queue_fault(&self, fault: &str, count: u32) -> anyhow::Result<()> {
        self.queue(fault, count, None)
    }

    /// Queues a fault spec for the next `count` `/v1` calls whose path starts with `path_prefix`.
    pub fn queue_fault_for(
        &self,
        path_prefix: &str,
        fault: &str,
        count: u32,
    ) -> anyhow::Result<()> {
        self.queue(fault, count, Some(path_prefix.to_owned()))
    }

    fn queue(&self, fault: &str, count: u32, path_prefix: Option<String>) -> anyhow::Result<()> {
        let fault = faults::Fault::parse(fault).map_err(anyhow::Error::msg)?;
        self.app
            .faults
            .push(fault, count, path_prefix)
            .map_err(anyhow::Error::msg)
    }

    /// Registers a safety case (a JSON object with a string `id`), like `POST /_standin/cases`.
    pub fn add_case(&self, case: Value) -> anyhow::Result<()> {
        let Value::Object(case) = case else {
            anyhow::bail!("a safety case must be a JSON object");
        };
        self.app
            .cases
            .register(case)
            .map(|_| ())
            .map_err(|error| anyhow::anyhow!("{error:?}"))
    }
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle").field("addr", &self.addr).finish()
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Wait until the port is closed, so "upstream down" is true once the handle is gone.
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
