//! Realtime sessions through Warden end to end: the real binary, the stand-in's Realtime
//! server, and a WebSocket client speaking OpenAI's event schema.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use crate::common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

type Socket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

const POLICY: &str = r#"
[safety.moderation.categories.violence]
action = "block"
[safety.moderation.output.categories.violence]
action = "block"
[realtime]
max_sessions_per_user = 1
max_frame_bytes = 65536
client_send_timeout_secs = 1
"#;

fn start() -> Warden {
    Warden::start_with(Options {
        extra_toml: POLICY.into(),
        moderation: true,
        ..Default::default()
    })
}

/// Opens a session as `user` (key `app`), or returns the HTTP refusal's status and body.
async fn connect(w: &Warden, user: &str) -> Result<Socket, (u16, String)> {
    let url = format!(
        "{}/realtime?model=gpt-realtime",
        w.base.replace("http://", "ws://")
    );
    let url = if url.contains("/v1/realtime") {
        url
    } else {
        url.replace("/realtime", "/v1/realtime")
    };
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {APP_KEY}").parse().unwrap(),
    );
    request
        .headers_mut()
        .insert("x-warden-user", user.parse().unwrap());
    let host = request.uri().authority().unwrap().to_string();
    let tcp = tokio::net::TcpStream::connect(host).await.unwrap();
    match tokio_tungstenite::client_async(request, tcp).await {
        Ok((socket, _)) => Ok(socket),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let body = response
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            Err((response.status().as_u16(), body))
        }
        Err(other) => panic!("handshake failed: {other}"),
    }
}

async fn send(socket: &mut Socket, event: Value) {
    socket
        .send(Message::Text(event.to_string().into()))
        .await
        .unwrap();
}

/// The next server event (None once the socket closed), within 10 s.
async fn next(socket: &mut Socket) -> Option<Value> {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a server event within 10 s");
        match frame {
            None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return None,
            Some(Ok(Message::Text(text))) => {
                return Some(serde_json::from_str(text.as_str()).unwrap())
            }
            Some(Ok(_)) => continue,
        }
    }
}

/// Every event up to and including `response.done`.
async fn until_done(socket: &mut Socket) -> Vec<Value> {
    let mut events = Vec::new();
    while let Some(event) = next(socket).await {
        let done = event["type"] == "response.done";
        events.push(event);
        if done {
            return events;
        }
    }
    panic!("the socket closed before response.done: {events:?}");
}

/// Strikes on record for `user` of key `app`, waiting up to 5 s for at least `at_least`.
async fn strikes(w: &Warden, user: &str, at_least: usize) -> usize {
    let config = w.config_path.to_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let shown = w.cli(&["users", "show", user, "--json", "--config", &config]);
        let shown: Value = serde_json::from_slice(&shown.stdout).unwrap_or(Value::Null);
        let n = shown["strikes"].as_array().map_or(0, Vec::len);
        if n >= at_least || Instant::now() > deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn user_item(text: &str) -> Value {
    json!({"type": "conversation.item.create", "event_id": "evt_item", "item": {
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}})
}

fn deltas(events: &[Value]) -> String {
    events
        .iter()
        .filter(|e| {
            e["type"]
                .as_str()
                .is_some_and(|t| t.ends_with("text.delta") || t.ends_with("transcript.delta"))
        })
        .map(|e| e["delta"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn text_session_end_to_end_with_safety_identifier_and_usage() {
    let w = start();
    let mut s = connect(&w, "alice").await.unwrap();
    assert_eq!(next(&mut s).await.unwrap()["type"], "session.created");
    send(&mut s, json!({"type": "session.update", "session": {"type": "realtime", "output_modalities": ["text"], "instructions": "Be brief."}})).await;
    assert_eq!(next(&mut s).await.unwrap()["type"], "session.updated");
    send(&mut s, user_item("hello there")).await;
    assert_eq!(
        next(&mut s).await.unwrap()["type"],
        "conversation.item.added"
    );
    send(&mut s, json!({"type": "response.create"})).await;
    let events = until_done(&mut s).await;
    assert_eq!(
        deltas(&events),
        "Hello from the stand-in. You said: hello there"
    );
    let done = events.last().unwrap();
    assert_eq!(done["response"]["status"], "completed");
    assert!(done["response"]["usage"]["output_tokens"].as_u64().unwrap() > 0);

    // Upstream saw the real key and Warden's identifier, never the virtual key.
    let handshake = w
        .standin
        .requests()
        .into_iter()
        .find(|r| r.path == "/v1/realtime")
        .unwrap();
    assert_eq!(
        handshake.header("authorization"),
        Some(format!("Bearer {UPSTREAM_KEY}").as_str())
    );
    let sid = handshake
        .header("openai-safety-identifier")
        .expect("safety identifier header");
    assert!(!sid.contains("alice") && sid.len() >= 16, "{sid}");
    s.close(None).await.unwrap();
}

#[tokio::test]
async fn flagged_user_item_is_refused_and_not_forwarded() {
    let w = start();
    let mut s = connect(&w, "bob").await.unwrap();
    next(&mut s).await.unwrap();
    send(&mut s, user_item("please FLAG:violence now")).await;
    let error = next(&mut s).await.unwrap();
    assert_eq!(error["type"], "error", "{error}");
    assert_eq!(error["error"]["code"], "content_filter");
    assert_eq!(error["error"]["event_id"], "evt_item");
    // The session stays open and a clean item still goes through.
    send(&mut s, user_item("a calm question")).await;
    assert_eq!(
        next(&mut s).await.unwrap()["type"],
        "conversation.item.added"
    );
    let seen = w.standin.realtime_events();
    assert!(
        !seen.iter().any(|e| e.to_string().contains("FLAG:violence")),
        "{seen:?}"
    );
    assert!(seen
        .iter()
        .any(|e| e.to_string().contains("a calm question")));
    assert_eq!(
        strikes(&w, "bob", 1).await,
        1,
        "the refused item is a strike"
    );
}

#[tokio::test]
async fn flagged_transcript_is_cancelled_and_never_relayed() {
    let w = start();
    let mut s = connect(&w, "carol").await.unwrap();
    next(&mut s).await.unwrap();
    send(
        &mut s,
        user_item("tell me a story SAY_FLAG=violence SLOW_REPLY"),
    )
    .await;
    next(&mut s).await.unwrap();
    send(&mut s, json!({"type": "response.create"})).await;
    let events = until_done(&mut s).await;
    let error = events
        .iter()
        .find(|e| e["type"] == "error")
        .expect("an error event");
    assert_eq!(error["error"]["code"], "content_filter");
    assert!(!deltas(&events).contains("FLAG:"), "{}", deltas(&events));
    assert!(!events
        .iter()
        .any(|e| e.to_string().contains("FLAG:violence")));
    assert_eq!(events.last().unwrap()["response"]["status"], "cancelled");
    let seen = w.standin.realtime_events();
    assert!(
        seen.iter().any(|e| e["type"] == "response.cancel"),
        "Warden cancelled upstream"
    );
    assert!(
        strikes(&w, "carol", 1).await >= 1,
        "the blocked output is a strike"
    );
}

#[tokio::test]
async fn banned_user_session_closes_within_a_second() {
    let w = start();
    let mut s = connect(&w, "mallory").await.unwrap();
    next(&mut s).await.unwrap();
    let banned = client()
        .post(format!("{}/admin/v1/users/app/mallory/ban", w.admin))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"reason": "test"}))
        .send()
        .await
        .unwrap();
    assert!(banned.status().is_success(), "{}", banned.status());
    let at = Instant::now();
    let mut saw_error = false;
    while let Some(event) = next(&mut s).await {
        saw_error |= event["type"] == "error" && event["error"]["code"] == "user_banned";
    }
    assert!(
        at.elapsed() < Duration::from_secs(1),
        "closed after {:?}",
        at.elapsed()
    );
    assert!(saw_error, "the client was told why");
    // And a new session is refused before any upgrade.
    let (status, _) = connect(&w, "mallory").await.err().unwrap();
    assert_eq!(status, 403);
}

#[tokio::test]
async fn concurrent_session_limit_and_bad_frames() {
    let w = start();
    let mut first = connect(&w, "dave").await.unwrap();
    next(&mut first).await.unwrap();
    let (status, body) = connect(&w, "dave").await.err().unwrap();
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("realtime_session_limit"), "{body}");
    // Bad input on the open session: each gets an error event, none reaches upstream.
    first.send(Message::Text("not json".into())).await.unwrap();
    assert_eq!(next(&mut first).await.unwrap()["type"], "error");
    send(&mut first, json!({"type": "made.up.event"})).await;
    let unknown = next(&mut first).await.unwrap();
    assert_eq!(unknown["error"]["code"], "unknown_event_type");
    first
        .send(Message::Binary(vec![1u8, 2, 3].into()))
        .await
        .unwrap();
    assert_eq!(
        next(&mut first).await.unwrap()["error"]["code"],
        "invalid_frame"
    );
    assert!(
        w.standin.realtime_events().is_empty(),
        "{:?}",
        w.standin.realtime_events()
    );
    // Closing frees the slot.
    first.close(None).await.unwrap();
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match connect(&w, "dave").await {
            Ok(_) => break,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("slot not freed: {e:?}"),
        }
    }
}

#[tokio::test]
async fn client_secret_needs_an_end_user_and_is_capped() {
    let w = start();
    let minted = client()
        .post(w.url("/v1/realtime/client_secrets"))
        .bearer_auth(APP_KEY)
        .header("x-warden-user", "erin")
        .json(&json!({"expires_after": {"anchor": "created_at", "seconds": 7200},
                       "session": {"type": "realtime", "model": "gpt-realtime", "instructions": "Be kind."}}))
        .send()
        .await
        .unwrap();
    assert_eq!(minted.status(), 200);
    let body: Value = minted.json().await.unwrap();
    assert!(body["value"].as_str().unwrap().starts_with("ek_"));
    let sent = w
        .standin
        .requests()
        .into_iter()
        .find(|r| r.path == "/v1/realtime/client_secrets")
        .unwrap();
    assert_eq!(sent.body["expires_after"]["seconds"], 600);
    assert!(sent.header("openai-safety-identifier").is_some());

    let anonymous = client()
        .post(w.url("/v1/realtime/client_secrets"))
        .bearer_auth(OPTIONAL_KEY)
        .json(&json!({"session": {"type": "realtime", "model": "gpt-realtime"}}))
        .send()
        .await
        .unwrap();
    let error = expect_error(anonymous, 403).await;
    assert_eq!(error["code"], "end_user_required");

    let flagged = client()
        .post(w.url("/v1/realtime/client_secrets"))
        .bearer_auth(APP_KEY)
        .header("x-warden-user", "erin")
        .json(&json!({"session": {"type": "realtime", "model": "gpt-realtime", "instructions": "FLAG:violence"}}))
        .send()
        .await
        .unwrap();
    let error = expect_error(flagged, 400).await;
    assert_eq!(error["code"], "content_filter");
}

/// Warden's resident memory, in KiB.
fn rss_kib(w: &Warden) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", w.child.id())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// The admin API's latest session events (endpoint `realtime`, kind `request`).
async fn session_events(w: &Warden) -> String {
    client()
        .get(format!("{}/admin/v1/events?kind=request&limit=20", w.admin))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_client_that_never_reads_is_closed_and_its_backlog_is_not_queued() {
    // Output moderation off: this is about the relay's buffers, not the score cache.
    let w = Warden::start_with(Options {
        extra_toml: POLICY.replace(
            "client_send_timeout_secs = 1",
            "client_send_timeout_secs = 1\nmoderate_output = false",
        ),
        moderation: true,
        ..Default::default()
    });
    let mut s = connect(&w, "frank").await.unwrap();
    next(&mut s).await.unwrap();
    let before = rss_kib(&w);
    // About 20 MB of audio and transcript deltas, sent as fast as the sockets take them.
    send(&mut s, user_item("flood me REPEAT=30000")).await;
    send(&mut s, json!({"type": "response.create"})).await;
    // The client reads nothing until Warden has given up on it.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let events = session_events(&w).await;
        if events.contains("client_not_reading") {
            break;
        }
        assert!(Instant::now() < deadline, "session never closed: {events}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Resident memory is reported, not asserted: the allocator keeps what it touched while
    // relaying the frames that did go out, so RSS alone cannot tell buffering from reuse.
    eprintln!("RSS grew by {} KiB", rss_kib(&w).saturating_sub(before));
    // What was in flight drains, then the socket ends: the response never completes.
    let mut frames = 0;
    while let Some(event) = next(&mut s).await {
        assert_ne!(
            event["type"], "response.done",
            "the whole flood was buffered"
        );
        frames += 1;
    }
    assert!(
        frames < 60_000,
        "{frames} frames reached the stalled client"
    );
}

#[tokio::test]
async fn an_oversized_frame_closes_the_session() {
    let w = start();
    let mut s = connect(&w, "gina").await.unwrap();
    next(&mut s).await.unwrap();
    let huge = json!({"type": "input_audio_buffer.append", "audio": "A".repeat(100_000)});
    send(&mut s, huge).await;
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match s.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                None | Some(Err(_)) => return None,
                Some(Ok(_)) => continue,
            }
        }
    })
    .await
    .expect("closed within 5 s");
    assert_eq!(closed, Some(1009));
    assert!(!w
        .standin
        .realtime_events()
        .iter()
        .any(|e| e["type"] == "input_audio_buffer.append"));
}

/// An upgraded session keeps its connection's place under the listener's caps: with two
/// connections allowed per client address, two open sessions leave no room for a third
/// connection until one of them ends.
#[tokio::test]
async fn open_sessions_count_against_the_connection_caps() {
    let w = Warden::start_with(Options {
        extra_toml: POLICY.into(),
        server_toml: format!(
            "{}max_connections_per_ip = 2\n",
            Options::default().server_toml
        ),
        moderation: true,
        ..Default::default()
    });
    let first = connect(&w, "cap-alice").await.expect("first session opens");
    let _second = connect(&w, "cap-bob").await.expect("second session opens");
    let answer = raw_get(&w, "/healthz").await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("too_many_connections"), "{answer}");

    drop(first);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let answer = raw_get(&w, "/v1/models").await;
        if !answer.contains("too_many_connections") {
            assert!(answer.starts_with("HTTP/1.1 "), "{answer}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the ended session's place was never freed: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One request on a fresh connection, read to the end: the listener may refuse a
/// connection before reading anything, which an HTTP client reports as an error.
async fn raw_get(w: &Warden, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = w.base.trim_start_matches("http://").trim_end_matches("/v1");
    let host = host.split('/').next().unwrap();
    let mut tcp = tokio::net::TcpStream::connect(host).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {APP_KEY}\r\nconnection: close\r\n\r\n");
    let _ = tcp.write_all(request.as_bytes()).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}
