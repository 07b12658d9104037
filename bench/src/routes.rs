//! `warden-bench routes`: the REST routes' costs (issue 16). A large upload sent through
//! `uploads/{id}/parts` (streamed: bytes/s against the stand-in directly, and Warden's peak
//! RSS), and a batch file of many lines checked before upload (lines/s, Moderation calls).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use serde_json::{json, Value};

use crate::proc_stats::{rss_kib, RssSampler};
use crate::procs::{start_standin, start_warden_with, Scratch};
use crate::workload::{UPSTREAM_KEY, VIRTUAL_KEY};

pub struct Options {
    pub bin_dir: PathBuf,
    pub upload_mib: u64,
    pub part_mib: u64,
    pub batch_lines: usize,
}

/// A multipart body of `size` zero bytes in a `data` file part, generated as it is sent.
struct Zeros {
    head: Option<Bytes>,
    left: u64,
    chunk: Bytes,
    tail: Option<Bytes>,
    len: u64,
}

const BOUNDARY: &str = "benchboundary7MA4YWxkTrZu0gW";

impl Zeros {
    fn new(size: u64) -> Zeros {
        let head = Bytes::from(format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"data\"; filename=\"part\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        ));
        let tail = Bytes::from(format!("\r\n--{BOUNDARY}--\r\n"));
        let len = head.len() as u64 + size + tail.len() as u64;
        Zeros {
            head: Some(head),
            left: size,
            chunk: Bytes::from(vec![0u8; 256 * 1024]),
            tail: Some(tail),
            len,
        }
    }
}

impl Body for Zeros {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(head) = self.head.take() {
            return Poll::Ready(Some(Ok(Frame::data(head))));
        }
        if self.left > 0 {
            let n = self.left.min(self.chunk.len() as u64);
            self.left -= n;
            let data = self.chunk.slice(..n as usize);
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        Poll::Ready(self.tail.take().map(|t| Ok(Frame::data(t))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len)
    }
}

type Either = http_body_util::Either<http_body_util::Full<Bytes>, Zeros>;

async fn send(
    addr: SocketAddr,
    method: http::Method,
    path: &str,
    key: &str,
    content_type: &str,
    body: Either,
) -> anyhow::Result<(u16, Bytes)> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string())
        .header("authorization", format!("Bearer {key}"))
        .header("x-warden-user", "bench-user")
        .header("content-type", content_type)
        .body(body)?;
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await?.to_bytes();
    Ok((status, bytes))
}

fn json_body(value: &Value) -> Either {
    http_body_util::Either::Left(http_body_util::Full::new(Bytes::from(value.to_string())))
}

/// Sends `total` bytes in parts of `part` through `addr`; returns the seconds it took.
async fn upload(addr: SocketAddr, key: &str, total: u64, part: u64) -> anyhow::Result<f64> {
    let create = json!({"bytes": total, "filename": "big.bin", "mime_type": "application/octet-stream", "purpose": "user_data"});
    let (status, body) = send(
        addr,
        http::Method::POST,
        "/v1/uploads",
        key,
        "application/json",
        json_body(&create),
    )
    .await?;
    anyhow::ensure!(
        status == 200,
        "uploads.create: {status} {}",
        String::from_utf8_lossy(&body)
    );
    let id = serde_json::from_slice::<Value>(&body)?["id"]
        .as_str()
        .context("upload id")?
        .to_owned();
    let started = Instant::now();
    let mut sent = 0;
    while sent < total {
        let size = part.min(total - sent);
        let (status, body) = send(
            addr,
            http::Method::POST,
            &format!("/v1/uploads/{id}/parts"),
            key,
            &format!("multipart/form-data; boundary={BOUNDARY}"),
            http_body_util::Either::Right(Zeros::new(size)),
        )
        .await?;
        anyhow::ensure!(
            status == 200,
            "uploads.parts: {status} {}",
            String::from_utf8_lossy(&body)
        );
        sent += size;
    }
    Ok(started.elapsed().as_secs_f64())
}

async fn standin_requests(standin: SocketAddr) -> anyhow::Result<u64> {
    let (status, body) = send(
        standin,
        http::Method::GET,
        "/_standin/stats",
        UPSTREAM_KEY,
        "application/json",
        json_body(&Value::Null),
    )
    .await?;
    anyhow::ensure!(status == 200, "stand-in stats: {status}");
    Ok(serde_json::from_slice::<Value>(&body)?["requests"]
        .as_u64()
        .unwrap_or(0))
}

fn batch_file(lines: usize) -> Vec<u8> {
    let mut out = String::with_capacity(lines * 200);
    for i in 0..lines {
        let line = json!({
            "custom_id": format!("req-{i}"),
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "gpt-4o-mini", "messages": [
                {"role": "system", "content": "You answer arithmetic questions briefly."},
                {"role": "user", "content": format!("Question {i}: what is {i} plus {} ?", i * 7 + 3)},
            ]},
        });
        out.push_str(&line.to_string());
        out.push('\n');
    }
    out.into_bytes()
}

fn file_form(content: &[u8]) -> Bytes {
    let mut body = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"batch.jsonl\"\r\nContent-Type: application/jsonl\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(content);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    Bytes::from(body)
}

pub fn run(options: &Options) -> anyhow::Result<Value> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let scratch = Scratch::create()?;
    let (_standin, standin) = start_standin(&options.bin_dir, &scratch)?;
    let db = scratch.path().join("warden.db");
    // Every stage at its defaults: local filters and moderation (against the stand-in) on.
    let config = crate::config::warden_config(crate::config::Pipeline::Full, standin, &db);
    let (warden_proc, warden) = start_warden_with(&options.bin_dir, &scratch, "warden", &config)?;
    let pid = warden_proc.pid();
    runtime.block_on(async {
        let total = options.upload_mib * 1024 * 1024;
        let part = options.part_mib * 1024 * 1024;
        let idle_kib = rss_kib(pid).unwrap_or(0);
        let direct_s = upload(standin, UPSTREAM_KEY, total, part).await?;
        let sampler = RssSampler::start(pid)?;
        let warden_s = upload(warden, VIRTUAL_KEY, total, part).await?;
        let peak_kib = sampler.peak();
        drop(sampler);
        let mib = options.upload_mib as f64;

        let file = batch_file(options.batch_lines);
        let body = file_form(&file);
        let before = standin_requests(standin).await?;
        let started = Instant::now();
        let (status, answer) = send(
            warden,
            http::Method::POST,
            "/v1/files",
            VIRTUAL_KEY,
            &format!("multipart/form-data; boundary={BOUNDARY}"),
            http_body_util::Either::Left(http_body_util::Full::new(body.clone())),
        )
        .await?;
        let batch_s = started.elapsed().as_secs_f64();
        anyhow::ensure!(
            status == 200,
            "files.create: {status} {}",
            String::from_utf8_lossy(&answer)
        );
        let moderation_calls = standin_requests(standin).await? - before - 1;
        let started = Instant::now();
        let (status, _) = send(
            standin,
            http::Method::POST,
            "/v1/files",
            UPSTREAM_KEY,
            &format!("multipart/form-data; boundary={BOUNDARY}"),
            http_body_util::Either::Left(http_body_util::Full::new(body)),
        )
        .await?;
        let batch_direct_s = started.elapsed().as_secs_f64();
        anyhow::ensure!(status == 200, "direct files.create: {status}");
        let _ = Duration::ZERO;
        Ok(json!({
            "upload": {
                "mib": options.upload_mib,
                "part_mib": options.part_mib,
                "direct_mib_per_s": mib / direct_s,
                "warden_mib_per_s": mib / warden_s,
                "added_seconds": warden_s - direct_s,
                "warden_rss_idle_mib": idle_kib as f64 / 1024.0,
                "warden_rss_peak_mib": peak_kib as f64 / 1024.0,
            },
            "batch_check": {
                "lines": options.batch_lines,
                "file_mib": file.len() as f64 / (1024.0 * 1024.0),
                "warden_seconds": batch_s,
                "direct_seconds": batch_direct_s,
                "lines_per_s": options.batch_lines as f64 / batch_s,
                "moderation_calls": moderation_calls,
            },
        }))
    })
}
