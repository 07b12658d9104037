//! In-process tests of the stand-in over real HTTP: wire shapes, streams, faults, recording, auth.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// What came back from one call; `body` is an error when the connection broke mid-body.
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Result<Bytes, String>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(self.body.as_ref().expect("complete body")).expect("JSON body")
    }

    fn text(&self) -> String {
        String::from_utf8(self.body.as_ref().expect("complete body").to_vec()).unwrap()
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("header {name} missing"))
            .to_str()
            .unwrap()
    }
}

async fn send(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string())
        .header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map(|collected| collected.to_bytes())
        .map_err(|error| error.to_string());
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

async fn post(addr: SocketAddr, path: &str, body: Value) -> Reply {
    send(addr, Method::POST, path, &[], &body.to_string()).await
}

async fn get(addr: SocketAddr, path: &str) -> Reply {
    send(addr, Method::GET, path, &[], "").await
}

/// The `data:` payloads of a data-only SSE body.
fn data_lines(body: &str) -> Vec<&str> {
    body.split("\n\n")
        .filter(|event| !event.is_empty())
        .map(|event| event.strip_prefix("data: ").expect("data-only event"))
        .collect()
}

fn chat_body(stream: bool) -> Value {
    json!({
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "What is the capital of France, and why is it Paris of all places?"}
        ],
        "stream": stream,
    })
}

fn spawn() -> standin::Handle {
    standin::spawn(standin::Options::default()).unwrap()
}

fn assert_envelope(reply: &Reply, status: u16, code: Value) -> Value {
    assert_eq!(reply.status.as_u16(), status, "{:?}", reply.body);
    let body = reply.json();
    let error = body["error"].as_object().expect("error envelope");
    for key in ["message", "type", "param", "code"] {
        assert!(error.contains_key(key), "envelope lacks {key}: {body}");
    }
    assert_eq!(body["error"]["code"], code);
    body
}

#[tokio::test]
async fn chat_completion_has_openai_shape() {
    let standin = spawn();
    let mut body = chat_body(false);
    body["n"] = json!(2);
    let reply = post(standin.addr(), "/v1/chat/completions", body).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("content-type"), "application/json");
    assert!(reply.header("x-request-id").starts_with("req_"));
    assert_eq!(reply.header("x-ratelimit-remaining-requests"), "9999");
    let completion = reply.json();
    assert!(completion["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(completion["object"], "chat.completion");
    assert_eq!(completion["model"], "gpt-4o-mini");
    assert!(completion["created"].as_u64().unwrap() > 1_700_000_000);
    assert_eq!(completion["system_fingerprint"], "fp_standin");
    let choices = completion["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 2);
    assert_eq!(choices[1]["index"], 1);
    assert_eq!(
        choices[0]["message"],
        json!({
            "role": "assistant",
            "content": "Hello from the stand-in. You said: What is the capital of France, and why i",
            "refusal": null,
            "annotations": []
        })
    );
    assert_eq!(choices[0]["logprobs"], Value::Null);
    assert_eq!(choices[0]["finish_reason"], "stop");
    let usage = &completion["usage"];
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
    );
    assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 0);
    assert_eq!(usage["completion_tokens_details"]["reasoning_tokens"], 0);
}

#[tokio::test]
async fn chat_stream_sends_chunks_and_done() {
    let standin = spawn();
    let reply = post(standin.addr(), "/v1/chat/completions", chat_body(true)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("content-type"), "text/event-stream");
    let text = reply.text();
    assert!(text.ends_with("data: [DONE]\n\n"));
    let lines = data_lines(&text);
    assert!(lines.len() > 5, "several chunks: {lines:?}");
    let chunks: Vec<Value> = lines[..lines.len() - 1]
        .iter()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let id = &chunks[0]["id"];
    for chunk in &chunks {
        assert_eq!(&chunk["id"], id);
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert!(
            chunk.get("usage").is_none(),
            "no usage key without include_usage"
        );
    }
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": "", "refusal": null})
    );
    let content: String = chunks
        .iter()
        .filter_map(|chunk| chunk["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert!(content.starts_with("Hello from the stand-in. You said: What is"));
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    assert_eq!(last["choices"][0]["delta"], json!({}));
    assert!(chunks[..chunks.len() - 1]
        .iter()
        .all(|chunk| chunk["choices"][0]["finish_reason"].is_null()));
    assert_eq!(standin.stats().cancelled_streams, 0);
}

#[tokio::test]
async fn chat_stream_include_usage_adds_usage_chunk() {
    let standin = spawn();
    let mut body = chat_body(true);
    body["stream_options"] = json!({"include_usage": true});
    let reply = post(standin.addr(), "/v1/chat/completions", body).await;
    let text = reply.text();
    let lines = data_lines(&text);
    assert_eq!(*lines.last().unwrap(), "[DONE]");
    let usage_chunk: Value = serde_json::from_str(lines[lines.len() - 2]).unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    assert!(usage_chunk["usage"]["total_tokens"].as_u64().unwrap() > 0);
    let first: Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(first["usage"], Value::Null);
    assert!(first.as_object().unwrap().contains_key("usage"));
}

#[tokio::test]
async fn responses_plain_and_stream() {
    let standin = spawn();
    let body = json!({"model": "gpt-4.1", "input": "hi there", "instructions": "be nice"});
    let response = post(standin.addr(), "/v1/responses", body).await.json();
    assert_eq!(response["object"], "response");
    assert_eq!(response["status"], "completed");
    assert_eq!(response["instructions"], "be nice");
    assert_eq!(
        response["output"][0]["content"][0]["text"],
        "Hello from the stand-in. You said: hi there"
    );
    assert_eq!(response["output"][0]["content"][0]["type"], "output_text");

    let body = json!({"model": "gpt-4.1", "input": [{"role": "user", "content": "streamed"}], "stream": true});
    let reply = post(standin.addr(), "/v1/responses", body).await;
    assert_eq!(reply.header("content-type"), "text/event-stream");
    let text = reply.text();
    assert!(!text.contains("[DONE]"));
    let mut kinds = Vec::new();
    let mut deltas = String::new();
    for (n, event) in text.split("\n\n").filter(|e| !e.is_empty()).enumerate() {
        let (kind_line, data_line) = event.split_once('\n').unwrap();
        let kind = kind_line.strip_prefix("event: ").unwrap();
        let data: Value = serde_json::from_str(data_line.strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(data["type"], kind);
        assert_eq!(data["sequence_number"], n);
        if kind == "response.output_text.delta" {
            deltas.push_str(data["delta"].as_str().unwrap());
            assert_eq!(data["logprobs"], json!([]));
            assert!(data["item_id"].as_str().unwrap().starts_with("msg_"));
        }
        if kind == "response.completed" {
            assert_eq!(data["response"]["status"], "completed");
        }
        if kinds.last() != Some(&kind.to_owned()) {
            kinds.push(kind.to_owned());
        }
    }
    assert_eq!(
        kinds,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    assert_eq!(deltas, "Hello from the stand-in. You said: streamed");
}

#[tokio::test]
async fn fault_429_carries_retry_and_rate_limit_headers() {
    let standin = spawn();
    let reply = send(
        standin.addr(),
        Method::POST,
        "/v1/chat/completions",
        &[("x-standin-fault", "status=429")],
        &chat_body(false).to_string(),
    )
    .await;
    let body = assert_envelope(&reply, 429, json!("rate_limit_exceeded"));
    assert_eq!(body["error"]["type"], "requests");
    assert_eq!(reply.header("retry-after-ms"), "50");
    assert_eq!(reply.header("retry-after"), "1");
    assert_eq!(reply.header("x-ratelimit-remaining-requests"), "0");
    assert_eq!(reply.header("x-ratelimit-limit-requests"), "10000");
    assert!(reply.header("x-request-id").starts_with("req_"));
}

#[tokio::test]
async fn queued_faults_apply_to_the_next_calls() {
    let standin = spawn();
    let queued = post(
        standin.addr(),
        "/_standin/faults",
        json!({"fault": "status=503", "count": 2}),
    )
    .await;
    assert_eq!(queued.status, StatusCode::OK);
    for _ in 0..2 {
        let reply = get(standin.addr(), "/v1/models").await;
        let body = assert_envelope(&reply, 503, Value::Null);
        assert_eq!(body["error"]["type"], "server_error");
    }
    assert_eq!(
        get(standin.addr(), "/v1/models").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn safety_case_fetch_fails_twice_then_succeeds() {
    let standin = spawn();
    let case = json!({
        "id": "C-123", "object": "safety.case", "created_at": 1_750_000_000,
        "entity_identifier": "user-hash", "reason": "cyber_abuse", "notice": {"type": "warning"}
    });
    assert_eq!(
        post(standin.addr(), "/_standin/cases", case.clone())
            .await
            .status,
        StatusCode::OK
    );
    let queued = json!({"fault": "status=500", "count": 2, "path": "/v1/safety/cases"});
    post(standin.addr(), "/_standin/faults", queued).await;
    // A call elsewhere does not use up the case fault.
    assert_eq!(
        get(standin.addr(), "/v1/models").await.status,
        StatusCode::OK
    );
    assert_eq!(
        get(standin.addr(), "/v1/safety/cases/C-123").await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(
        get(standin.addr(), "/v1/safety/cases/C-123").await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(
        get(standin.addr(), "/v1/safety/cases/C-123").await.json(),
        case
    );
    let missing = get(standin.addr(), "/v1/safety/cases/C-404").await;
    assert_envelope(&missing, 404, Value::Null);
}

#[tokio::test]
async fn cut_after_drops_the_connection_mid_stream() {
    let standin = spawn();
    let reply = send(
        standin.addr(),
        Method::POST,
        "/v1/chat/completions",
        &[("x-standin-fault", "cut_after=3")],
        &chat_body(true).to_string(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.body.is_err(), "body must break, got {:?}", reply.body);
    assert_eq!(
        standin.stats().cancelled_streams,
        0,
        "a cut is not a cancel"
    );

    // The chunks before the cut do arrive: read them frame by frame.
    let stream = TcpStream::connect(standin.addr()).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let request = Request::post("/v1/chat/completions")
        .header("host", "standin")
        .header("x-standin-fault", "cut_after=2")
        .body(Full::new(Bytes::from(chat_body(true).to_string())))
        .unwrap();
    let mut body = sender.send_request(request).await.unwrap().into_body();
    let mut received = Vec::new();
    let broke = loop {
        match body.frame().await {
            Some(Ok(frame)) => received.extend_from_slice(frame.data_ref().unwrap()),
            Some(Err(_)) => break true,
            None => break false,
        }
    };
    assert!(broke);
    let received = String::from_utf8(received).unwrap();
    assert_eq!(data_lines(&received).len(), 2, "{received}");
    assert!(!received.contains("[DONE]"));
}

#[tokio::test]
async fn delay_and_chunk_delay_slow_the_answer() {
    let standin = spawn();
    let started = Instant::now();
    let reply = send(
        standin.addr(),
        Method::POST,
        "/v1/chat/completions",
        &[("x-standin-fault", "delay_ms=120")],
        &chat_body(false).to_string(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(120));

    let started = Instant::now();
    let reply = send(
        standin.addr(),
        Method::POST,
        "/v1/chat/completions",
        &[("x-standin-fault", "chunk_delay_ms=10")],
        &chat_body(true).to_string(),
    )
    .await;
    let chunks = data_lines(&reply.text()).len() as u32;
    assert!(started.elapsed() >= Duration::from_millis(10) * (chunks - 1));
}

#[tokio::test]
async fn client_going_away_counts_as_cancelled() {
    let standin = spawn();
    let stream = TcpStream::connect(standin.addr()).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let connection = tokio::spawn(async move {
        let _ = connection.await;
    });
    let request = Request::post("/v1/chat/completions")
        .header("host", "standin")
        .header("x-standin-fault", "chunk_delay_ms=30")
        .body(Full::new(Bytes::from(chat_body(true).to_string())))
        .unwrap();
    let mut body = sender.send_request(request).await.unwrap().into_body();
    body.frame().await.unwrap().unwrap();
    connection.abort();
    drop(body);
    drop(sender);
    let deadline = Instant::now() + Duration::from_secs(5);
    while standin.stats().cancelled_streams == 0 {
        assert!(Instant::now() < deadline, "cancel never noticed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats = get(standin.addr(), "/_standin/stats").await.json();
    assert_eq!(
        stats,
        json!({"requests": 1, "cancelled_streams": 1, "cancelled_requests": 0})
    );
}

#[tokio::test]
async fn requests_are_recorded_including_faulted_ones() {
    let standin = spawn();
    send(
        standin.addr(),
        Method::POST,
        "/v1/chat/completions?trace=1",
        &[
            ("X-Custom", "one"),
            ("x-custom", "two"),
            ("x-standin-fault", "status=400"),
        ],
        &chat_body(false).to_string(),
    )
    .await;
    send(
        standin.addr(),
        Method::POST,
        "/v1/embeddings",
        &[],
        "not json",
    )
    .await;
    get(standin.addr(), "/_standin/stats").await;

    let recorded = standin.requests();
    assert_eq!(recorded.len(), 2, "control calls are not recorded");
    assert_eq!(recorded[0].method, "POST");
    assert_eq!(recorded[0].path, "/v1/chat/completions");
    assert_eq!(recorded[0].query.as_deref(), Some("trace=1"));
    assert_eq!(recorded[0].header("x-custom"), Some("one, two"));
    assert_eq!(recorded[0].body["model"], "gpt-4o-mini");
    assert_eq!(recorded[1].body, Value::Null);
    assert_eq!(recorded[1].body_text, "not json");

    let listed = get(standin.addr(), "/_standin/requests").await.json();
    assert_eq!(listed.as_array().unwrap().len(), 2);
    assert_eq!(listed[0]["headers"]["x-standin-fault"], "status=400");
    assert_eq!(listed[0]["body_text"], chat_body(false).to_string());

    let cleared = send(
        standin.addr(),
        Method::DELETE,
        "/_standin/requests",
        &[],
        "",
    )
    .await;
    assert_eq!(cleared.status, StatusCode::NO_CONTENT);
    assert!(standin.requests().is_empty());
    assert_eq!(standin.stats().requests, 2);
}

#[tokio::test]
async fn api_key_is_enforced() {
    let standin = standin::spawn(standin::Options {
        api_key: Some("sk-standin-secret".into()),
        ..standin::Options::default()
    })
    .unwrap();
    let missing = get(standin.addr(), "/v1/models").await;
    assert_envelope(&missing, 401, json!("invalid_api_key"));
    let wrong = send(
        standin.addr(),
        Method::GET,
        "/v1/models",
        &[("authorization", "Bearer sk-wrong-key-123")],
        "",
    )
    .await;
    let body = assert_envelope(&wrong, 401, json!("invalid_api_key"));
    assert!(
        !body.to_string().contains("sk-wrong-key-123"),
        "key is masked"
    );
    let right = send(
        standin.addr(),
        Method::GET,
        "/v1/models",
        &[("authorization", "Bearer sk-standin-secret")],
        "",
    )
    .await;
    assert_eq!(right.status, StatusCode::OK);
    assert_eq!(
        standin.requests().len(),
        3,
        "unauthenticated calls are recorded too"
    );
    assert_eq!(
        get(standin.addr(), "/_standin/stats").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn errors_come_back_in_openai_envelopes() {
    let standin = spawn();
    let addr = standin.addr();
    let malformed = send(addr, Method::POST, "/v1/chat/completions", &[], "{not json").await;
    let body = assert_envelope(&malformed, 400, Value::Null);
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_envelope(&get(addr, "/v1/nope").await, 404, Value::Null);
    assert_envelope(&get(addr, "/v1/embeddings").await, 405, Value::Null);
    assert_envelope(
        &get(addr, "/v1/models/gpt-9000").await,
        404,
        json!("model_not_found"),
    );
    let bad_n = post(
        addr,
        "/v1/chat/completions",
        json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 0}),
    )
    .await;
    assert_envelope(&bad_n, 400, json!("integer_below_min_value"));
    let bad_fault = send(
        addr,
        Method::GET,
        "/v1/models",
        &[("x-standin-fault", "explode=1")],
        "",
    )
    .await;
    assert_envelope(&bad_fault, 400, json!("invalid_standin_fault"));
}

#[tokio::test]
async fn other_endpoints_answer_in_shape() {
    let standin = spawn();
    let addr = standin.addr();

    let completion = post(
        addr,
        "/v1/completions",
        json!({"model": "gpt-3.5-turbo-instruct", "prompt": ["a", "b"], "n": 2}),
    )
    .await
    .json();
    assert_eq!(completion["object"], "text_completion");
    assert_eq!(completion["choices"].as_array().unwrap().len(), 4);
    assert_eq!(
        completion["choices"][3]["text"],
        "Hello from the stand-in. You said: b"
    );
    let streamed = post(
        addr,
        "/v1/completions",
        json!({"model": "m", "prompt": "p", "stream": true}),
    )
    .await
    .text();
    assert!(streamed.ends_with("data: [DONE]\n\n"));

    let embeddings = post(
        addr,
        "/v1/embeddings",
        json!({"model": "text-embedding-3-small", "input": ["a", "b"], "dimensions": 4}),
    )
    .await
    .json();
    assert_eq!(embeddings["object"], "list");
    assert_eq!(embeddings["data"][1]["index"], 1);
    assert_eq!(
        embeddings["data"][0]["embedding"].as_array().unwrap().len(),
        4
    );
    let encoded = post(
        addr,
        "/v1/embeddings",
        json!({"model": "m", "input": "a", "encoding_format": "base64"}),
    )
    .await
    .json();
    let b64 = encoded["data"][0]["embedding"].as_str().unwrap();
    assert_eq!(b64.len(), 44, "8 f32 values = 32 bytes = 44 base64 chars");

    let moderation = post(
        addr,
        "/v1/moderations",
        json!({"input": ["fine", "FLAG:violence and FLAG:sexual/minors"]}),
    )
    .await
    .json();
    assert_eq!(moderation["model"], "omni-moderation-latest");
    let results = moderation["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["flagged"], false);
    assert_eq!(results[1]["flagged"], true);
    assert_eq!(results[1]["categories"]["violence"], true);
    assert_eq!(results[1]["categories"]["sexual/minors"], true);
    assert_eq!(results[1]["category_scores"]["violence"], 0.97);
    let parts = json!({"input": [{"type": "text", "text": "x"}, {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]});
    let moderation = post(addr, "/v1/moderations", parts).await.json();
    assert_eq!(moderation["results"].as_array().unwrap().len(), 1);
    assert_eq!(
        moderation["results"][0]["category_applied_input_types"]["sexual"],
        json!(["text", "image"])
    );

    let images = post(
        addr,
        "/v1/images/generations",
        json!({"prompt": "a cat", "n": 3}),
    )
    .await
    .json();
    assert_eq!(images["data"].as_array().unwrap().len(), 3);
    assert!(images["data"][0]["b64_json"]
        .as_str()
        .unwrap()
        .starts_with("iVBORw0KGgo"));

    let models = get(addr, "/v1/models").await.json();
    assert_eq!(models["object"], "list");
    assert!(models["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["id"] == "gpt-4o-mini"));
    assert_eq!(
        get(addr, "/v1/models/gpt-4o-mini").await.json()["object"],
        "model"
    );
}

#[tokio::test]
async fn dropping_the_handle_closes_the_port() {
    let standin = spawn();
    let addr = standin.addr();
    assert_eq!(get(addr, "/v1/models").await.status, StatusCode::OK);
    drop(standin);
    assert!(TcpStream::connect(addr).await.is_err());
}

#[test]
fn binary_announces_its_address() {
    use std::io::BufRead as _;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_standin"))
        .args(["--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let result = (|| {
        let url = line
            .trim_end()
            .strip_prefix("standin listening on http://")?;
        let addr: SocketAddr = url.parse().ok()?;
        std::net::TcpStream::connect(addr).ok()
    })();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(result.is_some(), "unexpected first line: {line:?}");
}
