//! Connections and resources (issue 12, section 3), against the real binary: silent and
//! idle connections are closed, connection caps refuse cleanly, a flood of idle sockets
//! does not lock real clients or health checks out, and forwarding headers stay behind.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use crate::common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn gateway(server: &str) -> Warden {
    Warden::start_with(Options {
        server_toml: format!("max_body_bytes = 65536\nrequest_body_timeout_secs = 2\n{server}"),
        ..Default::default()
    })
}

fn addr(url: &str) -> String {
    url.trim_start_matches("http://").to_owned()
}

/// Reads until the peer closes (or `limit` passes); returns what arrived.
async fn read_to_close(stream: &mut TcpStream, limit: Duration) -> Option<String> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(String::from_utf8_lossy(&out).into_owned()),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return None,
        }
    }
}

#[tokio::test]
async fn a_connection_that_never_speaks_is_closed() {
    let w = gateway("first_byte_timeout_secs = 1\n");
    for listener in [&w.base, &w.admin] {
        let mut silent = TcpStream::connect(addr(listener)).await.unwrap();
        let started = Instant::now();
        let closed = read_to_close(&mut silent, Duration::from_secs(5)).await;
        assert!(closed.is_some(), "{listener}: still open after 5 s");
        assert!(started.elapsed() < Duration::from_secs(3), "{listener}");
    }
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let w = gateway("idle_timeout_secs = 1\n");
    let mut stream = TcpStream::connect(addr(&w.admin)).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // Kept alive after the answer, then closed once idle.
    let closed = read_to_close(&mut stream, Duration::from_secs(5)).await;
    assert!(closed.is_some(), "the idle connection stayed open");
}

#[tokio::test]
async fn a_client_over_its_connection_cap_gets_a_clean_503() {
    let w = gateway("max_connections_per_ip = 3\n");
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(addr(&w.base)).await.unwrap());
    }
    // Accepts are asynchronous: give the gate a moment to count the three.
    let mut refused = String::new();
    for _ in 0..50 {
        let mut extra = TcpStream::connect(addr(&w.base)).await.unwrap();
        if let Some(answer) = read_to_close(&mut extra, Duration::from_millis(300)).await {
            refused = answer;
            break;
        }
    }
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    let body = refused.split("\r\n\r\n").nth(1).unwrap();
    let error: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(error["error"]["code"], "too_many_connections");
    for key in ["message", "type", "param"] {
        assert!(error["error"].get(key).is_some(), "{key}");
    }
    drop(held);
    // Places free up when connections close.
    eventually(
        "a connection is admitted again",
        Duration::from_secs(5),
        || {
            std::net::TcpStream::connect(addr(&w.base))
                .map(|mut s| {
                    use std::io::{Read, Write};
                    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                    s.write_all(b"GET /v1/models HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                        .unwrap();
                    let mut text = String::new();
                    let _ = s.read_to_string(&mut text);
                    text.starts_with("HTTP/1.1 401")
                })
                .unwrap_or(false)
        },
    )
    .await;
}

/// 5,000 sockets that connect and say nothing must not keep a real request or a health
/// check waiting.
#[tokio::test]
async fn a_flood_of_idle_connections_does_not_lock_anyone_out() {
    const FLOOD: usize = 5_000;
    // This process holds the flood's client ends: make room for them.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    // All from one address here: let the flood in, so it fills the listener rather than
    // hitting the per-IP cap (which a_client_over_its_connection_cap… covers).
    let w = gateway("max_connections_per_ip = 100000\n");
    let mut flood = Vec::with_capacity(FLOOD);
    for _ in 0..FLOOD {
        match TcpStream::connect(addr(&w.base)).await {
            Ok(stream) => flood.push(stream),
            Err(err) => panic!("connection {} failed: {err}", flood.len()),
        }
    }
    let client = client();
    // One warm-up each (the first request pays for pools and lazy tables).
    let chat = || {
        client
            .post(w.url("/v1/chat/completions"))
            .bearer_auth(APP_KEY)
            .header("x-warden-user", "alice")
            .json(&chat_body())
            .send()
    };
    let health = || client.get(format!("{}/healthz", w.admin)).send();
    assert_eq!(chat().await.unwrap().status(), 200);
    assert_eq!(health().await.unwrap().status(), 200);
    let mut worst = (Duration::ZERO, Duration::ZERO);
    for _ in 0..5 {
        let started = Instant::now();
        assert_eq!(chat().await.unwrap().status(), 200);
        worst.0 = worst.0.max(started.elapsed());
        let started = Instant::now();
        assert_eq!(health().await.unwrap().status(), 200);
        worst.1 = worst.1.max(started.elapsed());
    }
    eprintln!(
        "with {} idle connections open: chat {:?}, health {:?} (worst of 5)",
        flood.len(),
        worst.0,
        worst.1
    );
    assert!(
        worst.0 < Duration::from_millis(100),
        "chat took {:?}",
        worst.0
    );
    assert!(
        worst.1 < Duration::from_millis(100),
        "healthz took {:?}",
        worst.1
    );
}

#[tokio::test]
async fn forwarding_and_beta_headers_stay_behind() {
    let w = gateway("");
    let response = client()
        .post(w.url("/v1/chat/completions"))
        .bearer_auth(APP_KEY)
        .header("x-warden-user", "alice")
        .header("forwarded", "for=203.0.113.7")
        .header("x-forwarded-host", "evil.example")
        .header("x-real-ip", "203.0.113.7")
        .header("openai-beta", "assistants=v2")
        .header("x-long", "a".repeat(9_000))
        .json(&chat_body())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let received = &w.standin.requests()[0];
    for name in [
        "forwarded",
        "x-forwarded-host",
        "x-real-ip",
        "openai-beta",
        "x-long",
    ] {
        assert!(received.header(name).is_none(), "{name} was forwarded");
    }
}

#[tokio::test]
async fn oversized_request_headers_are_refused() {
    let w = gateway("max_header_bytes = 16384\n");
    let mut stream = TcpStream::connect(addr(&w.base)).await.unwrap();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nx-pad: {}\r\n\r\n",
        "a".repeat(40_000)
    );
    let _ = stream.write_all(request.as_bytes()).await;
    let answer = read_to_close(&mut stream, Duration::from_secs(5))
        .await
        .unwrap_or_default();
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "{answer}"
    );
    assert!(w.standin.requests().is_empty());
}
