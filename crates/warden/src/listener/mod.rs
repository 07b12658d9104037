//! Serves one listener, public or admin, with the same defences: connections are admitted
//! through a [`gate::Gate`] (caps in all and per client IP), must send their first byte
//! within `first_byte_timeout`, are closed after `idle_timeout` with no request in flight,
//! carry bounded headers, and h2 connections are pinged so dead peers go away. On shutdown
//! it stops accepting and lets requests in flight finish (up to 30 s).

pub mod gate;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;

use self::gate::Gate;

/// How one listener treats its connections.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub first_byte_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_header_bytes: usize,
}

/// Accepts until `stopped`, then drains.
pub async fn serve<M, S, B>(
    listener: TcpListener,
    gate: Arc<Gate>,
    settings: Settings,
    make_service: M,
    stopped: watch::Receiver<bool>,
) where
    M: Fn(SocketAddr) -> S,
    S: Service<Request<Incoming>, Response = Response<B>> + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.first_byte_timeout.max(Duration::from_secs(1)))
        .max_buf_size(settings.max_header_bytes.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(20)))
        .keep_alive_timeout(Duration::from_secs(20))
        .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX));
    let mut stop_accepting = stopped.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(err) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!(%err, listener = gate.name(), "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let admitted = match gate.admit(peer.ip()) {
                    Ok(admitted) => admitted,
                    Err(full) => {
                        tracing::debug!(listener = gate.name(), ip = %peer.ip(), ?full, "connection refused");
                        tokio::spawn(gate::refuse(stream, full));
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let activity = Activity::new();
                let admitted = Arc::new(admitted);
                let service = Tracking {
                    inner: make_service(peer),
                    activity: activity.clone(),
                    admitted: admitted.clone(),
                };
                let builder = builder.clone();
                let mut stop = stopped.clone();
                tokio::spawn(async move {
                    let _admitted = admitted;
                    // A connection that never speaks holds a descriptor for nothing.
                    let mut first = [0u8; 1];
                    match tokio::time::timeout(settings.first_byte_timeout, stream.peek(&mut first))
                        .await
                    {
                        Ok(Ok(n)) if n > 0 => {}
                        _ => return,
                    }
                    let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    let connection = connection.into_owned();
                    tokio::pin!(connection);
                    let idle = activity.idle_for(settings.idle_timeout);
                    tokio::pin!(idle);
                    let grace = tokio::select! {
                        result = &mut connection => {
                            if let Err(err) = result {
                                tracing::debug!(error = %err, "connection ended with an error");
                            }
                            return;
                        }
                        () = &mut idle => Duration::from_secs(5),
                        () = stopping(&mut stop) => DRAIN,
                    };
                    // Close (http1) or send GOAWAY (h2); requests in flight finish first.
                    connection.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(grace, connection).await;
                });
            }
            // The wait's guard must not be held across the accept branch's awaits.
            () = stopping(&mut stop_accepting) => break,
        }
    }
    drop(listener);
    let deadline = Instant::now() + DRAIN;
    while gate.open() > 0 {
        if Instant::now() >= deadline {
            tracing::warn!(
                listener = gate.name(),
                open = gate.open(),
                "in-flight requests still running after 30 s; closing them"
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn stopping(stopped: &mut watch::Receiver<bool>) {
    let _ = stopped.wait_for(|s| *s).await;
}

/// How long requests in flight may take to finish once the listener stops.
const DRAIN: Duration = Duration::from_secs(30);

/// Requests in flight on one connection, and since when it has had none.
struct Activity {
    in_flight: AtomicUsize,
    started: Instant,
    idle_since_ms: AtomicU64,
}

impl Activity {
    fn new() -> Arc<Activity> {
        Arc::new(Activity {
            in_flight: AtomicUsize::new(0),
            started: Instant::now(),
            idle_since_ms: AtomicU64::new(0),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Resolves once the connection has had no request in flight for `limit`.
    async fn idle_for(self: &Arc<Self>, limit: Duration) {
        let tick = (limit / 4).max(Duration::from_millis(100));
        loop {
            tokio::time::sleep(tick).await;
            if self.in_flight.load(Ordering::Acquire) > 0 {
                continue;
            }
            let since = self.idle_since_ms.load(Ordering::Acquire);
            if self.now_ms().saturating_sub(since) >= limit.as_millis() as u64 {
                return;
            }
        }
    }
}

/// Held from a request's arrival until its response body is done or dropped.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: &Arc<Activity>) -> InFlight {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0
            .idle_since_ms
            .store(self.0.now_ms(), Ordering::Release);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

struct Tracking<S> {
    inner: S,
    activity: Arc<Activity>,
    admitted: Arc<gate::Admitted>,
}

/// The connection's place under the listener's caps, in every request's extensions: a
/// request that takes the connection over (a WebSocket upgrade) keeps it, so the caps
/// still count the connection after hyper lets go of it.
#[derive(Clone)]
pub struct ConnectionPlace(pub Arc<gate::Admitted>);

type Boxed<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> Service<Request<Incoming>> for Tracking<S>
where
    S: Service<Request<Incoming>, Response = Response<B>>,
    S::Future: Send + 'static,
{
    type Response = Response<Tracked<B>>;
    type Error = S::Error;
    type Future = Boxed<Result<Self::Response, S::Error>>;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        request
            .extensions_mut()
            .insert(ConnectionPlace(self.admitted.clone()));
        let in_flight = InFlight::start(&self.activity);
        let answer = self.inner.call(request);
        Box::pin(async move {
            answer.await.map(|response| {
                response.map(|inner| Tracked {
                    inner,
                    _in_flight: in_flight,
                })
            })
        })
    }
}

/// A response body that keeps its request counted as in flight until it is sent.
pub struct Tracked<B> {
    inner: B,
    _in_flight: InFlight,
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
