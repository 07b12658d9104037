//! A fixed set of keep-alive HTTP/1.1 connections to one loopback address; a request waits for a free one.

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub type Sender = SendRequest<Full<Bytes>>;

/// At most `size` requests in flight; the rest queue (fairly, first come first served) for a
/// connection, and that wait counts in their latency.
#[derive(Debug)]
pub struct Pool {
    addr: SocketAddr,
    permits: Arc<Semaphore>,
    /// Free connections, used round-robin (oldest first) so none sits idle long enough for
    /// a server's keep-alive or header-read timeout to close it mid-run.
    idle: Mutex<VecDeque<Sender>>,
    /// Connections opened after the initial set (a broken or timed-out one is replaced).
    reconnects: AtomicU64,
}

/// One connection, held for one request.
pub struct Lease {
    pool: Arc<Pool>,
    sender: Sender,
    _permit: OwnedSemaphorePermit,
}

impl Pool {
    /// Opens all `size` connections up front so no measured request pays for a handshake.
    pub async fn open(addr: SocketAddr, size: usize) -> anyhow::Result<Arc<Pool>> {
        anyhow::ensure!(
            addr.ip().is_loopback(),
            "refusing to load {addr}: not loopback"
        );
        anyhow::ensure!(size > 0, "the pool needs at least one connection");
        let mut idle = VecDeque::with_capacity(size);
        for _ in 0..size {
            idle.push_back(connect(addr).await?);
        }
        Ok(Arc::new(Pool {
            addr,
            permits: Arc::new(Semaphore::new(size)),
            idle: Mutex::new(idle),
            reconnects: AtomicU64::new(0),
        }))
    }

    /// Waits for a free connection; replaces it first if it has gone away.
    pub async fn checkout(self: &Arc<Self>) -> anyhow::Result<Lease> {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .context("pool closed")?;
        let reusable = self.lock_idle().pop_front().filter(|s| !s.is_closed());
        let mut sender = match reusable {
            Some(sender) => sender,
            None => self.reconnect().await?,
        };
        if sender.ready().await.is_err() {
            sender = self.reconnect().await?;
            sender.ready().await.context("fresh connection not ready")?;
        }
        Ok(Lease {
            pool: Arc::clone(self),
            sender,
            _permit: permit,
        })
    }

    pub fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::Relaxed)
    }

    async fn reconnect(&self) -> anyhow::Result<Sender> {
        self.reconnects.fetch_add(1, Ordering::Relaxed);
        connect(self.addr).await
    }

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, VecDeque<Sender>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Lease {
    pub fn sender(&mut self) -> &mut Sender {
        &mut self.sender
    }

    /// Puts the connection back after a response was read to the end. A lease dropped
    /// without this (error, timeout) discards its connection; the next checkout replaces it.
    pub fn release(self) {
        let Lease { pool, sender, .. } = self;
        pool.lock_idle().push_back(sender);
    }
}

/// One GET on a fresh connection (for the stand-in's control API); the body as text.
pub async fn get_text(addr: SocketAddr, path: &'static str) -> anyhow::Result<String> {
    anyhow::ensure!(
        addr.ip().is_loopback(),
        "refusing to call {addr}: not loopback"
    );
    let mut sender = connect(addr).await?;
    let mut request = http::Request::new(Full::new(Bytes::new()));
    *request.uri_mut() = http::Uri::from_static(path);
    request.headers_mut().insert(
        http::header::HOST,
        http::HeaderValue::from_str(&addr.to_string())?,
    );
    let response = sender.send_request(request).await?;
    anyhow::ensure!(
        response.status().is_success(),
        "GET {path}: {}",
        response.status()
    );
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await?
        .to_bytes();
    Ok(String::from_utf8_lossy(&body).into_owned())
}

async fn connect(addr: SocketAddr) -> anyhow::Result<Sender> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .with_context(|| format!("HTTP/1.1 handshake with {addr}"))?;
    // Drives the connection until the sender is dropped or the peer closes.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}
