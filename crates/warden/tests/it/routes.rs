//! The REST routes beyond the model endpoints (issue 16), through the real binary and the
//! stand-in: batch files checked line by line, object ownership between keys, background
//! responses, streamed uploads, and the errors for bad input.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::{json, Value};

const NARROW_KEY: &str = "wk-test-narrow-0123456789abcdef";
const SHARED_KEY: &str = "wk-test-shared-0123456789abcdef";

fn start(moderation: bool) -> Warden {
    Warden::start_with(Options {
        moderation,
        server_toml: "max_body_bytes = 65536\nrequest_body_timeout_secs = 5\n".into(),
        extra_toml: r#"
[[keys]]
name = "narrow"
secret_env = "T_NARROW_KEY"
end_user = "optional"
[keys.limits]
allowed_endpoints = ["embeddings", "files.create", "files.retrieve"]

[[keys]]
name = "ops"
secret_env = "T_SHARED_KEY"
end_user = "optional"
shared_objects = true
"#
        .into(),
        extra_env: vec![
            ("T_NARROW_KEY".into(), NARROW_KEY.into()),
            ("T_SHARED_KEY".into(), SHARED_KEY.into()),
        ],
        ..Default::default()
    })
}

/// A multipart/form-data body with text fields and one file.
fn form(fields: &[(&str, &str)], file: (&str, &[u8])) -> (Vec<u8>, String) {
    let boundary = "----wardentest7MA4YWxkTrZu0gW";
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").as_bytes(),
        );
    }
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{}\"\r\nContent-Type: application/octet-stream\r\n\r\n",
            file.0
        )
        .as_bytes(),
    );
    body.extend_from_slice(file.1);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (body, format!("multipart/form-data; boundary={boundary}"))
}

async fn upload(
    w: &Warden,
    key: &str,
    purpose: &str,
    name: &str,
    content: &[u8],
) -> reqwest::Response {
    let (body, content_type) = form(&[("purpose", purpose)], (name, content));
    client()
        .post(w.url("/v1/files"))
        .bearer_auth(key)
        .header("x-warden-user", "alice")
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap()
}

fn batch_line(id: &str, text: &str) -> String {
    json!({
        "custom_id": id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]},
    })
    .to_string()
}

fn uploads_seen(w: &Warden) -> usize {
    w.standin
        .requests()
        .iter()
        .filter(|r| r.path == "/v1/files" && r.method == "POST")
        .count()
}

#[tokio::test]
async fn a_batch_file_with_one_flagged_line_is_refused_with_its_line_number() {
    let w = start(true);
    let file = [
        batch_line("a", "What is the capital of France?"),
        batch_line("b", "Tell me FLAG:violence how to hurt someone"),
        batch_line("c", "Write a haiku about rain"),
    ]
    .join("\n");
    let error = expect_error(
        upload(&w, APP_KEY, "batch", "b.jsonl", file.as_bytes()).await,
        400,
    )
    .await;
    assert_eq!(error["code"], "file_lines_refused");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("Line 2"), "{message}");
    assert!(
        !message.contains("Line 1") && !message.contains("Line 3"),
        "{message}"
    );
    assert!(message.contains("violence"), "{message}");
    assert_eq!(uploads_seen(&w), 0, "nothing may be uploaded");
}

#[tokio::test]
async fn a_clean_batch_is_uploaded_with_a_safety_identifier_on_every_line_and_runs() {
    let w = start(true);
    let file = [
        batch_line("a", "What is the capital of France?"),
        batch_line("b", "Write a haiku about rain"),
    ]
    .join("\n")
        + "\n";
    let response = upload(&w, APP_KEY, "batch", "batch.jsonl", file.as_bytes()).await;
    assert_eq!(response.status(), 200);
    let created: Value = response.json().await.unwrap();
    assert_eq!(created["object"], "file");
    let file_id = created["id"].as_str().unwrap().to_owned();

    let sent = w
        .standin
        .requests()
        .into_iter()
        .find(|r| r.path == "/v1/files" && r.method == "POST")
        .unwrap();
    assert!(!sent.body_text.contains(APP_KEY));
    let lines: Vec<Value> = sent
        .body_text
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{}", sent.body_text);
    let ids: Vec<&str> = lines
        .iter()
        .map(|l| l["body"]["safety_identifier"].as_str().unwrap())
        .collect();
    assert!(ids[0].len() > 8 && ids[0] == ids[1], "{ids:?}");

    let batch: Value = post(&w, "/v1/batches", Some("alice"), &json!({"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(batch["status"], "validating", "{batch}");
    let batch_id = batch["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    let done = loop {
        let now: Value = get(&w, APP_KEY, &format!("/v1/batches/{batch_id}"))
            .await
            .json()
            .await
            .unwrap();
        if now["status"] == "completed" {
            break now;
        }
        assert!(Instant::now() < deadline, "batch never completed: {now}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let output = done["output_file_id"].as_str().unwrap();
    let content = get(&w, APP_KEY, &format!("/v1/files/{output}/content")).await;
    assert_eq!(content.status(), 200);
    let text = content.text().await.unwrap();
    assert_eq!(text.lines().count(), 2, "{text}");
    // Another key cannot read the output.
    let other = get(&w, OPTIONAL_KEY, &format!("/v1/files/{output}/content")).await;
    assert_eq!(expect_error(other, 404).await["code"], "object_not_found");
}

async fn get(w: &Warden, key: &str, path: &str) -> reqwest::Response {
    client()
        .get(w.url(path))
        .bearer_auth(key)
        .header("x-warden-user", "alice")
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_file_of_key_a_is_invisible_to_key_b() {
    let w = start(false);
    let created: Value = upload(&w, APP_KEY, "user_data", "notes.txt", b"private notes")
        .await
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    let b_created: Value = upload(&w, OPTIONAL_KEY, "user_data", "b.txt", b"b's own")
        .await
        .json()
        .await
        .unwrap();

    let error = expect_error(get(&w, OPTIONAL_KEY, &format!("/v1/files/{id}")).await, 404).await;
    assert_eq!(error["code"], "object_not_found");
    assert!(error["message"].as_str().unwrap().contains(&id));
    let listed: Value = get(&w, OPTIONAL_KEY, "/v1/files")
        .await
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![b_created["id"].as_str().unwrap()]);
    let deleted = client()
        .delete(w.url(&format!("/v1/files/{id}")))
        .bearer_auth(OPTIONAL_KEY)
        .send()
        .await
        .unwrap();
    expect_error(deleted, 404).await;
    let deletes_upstream = w
        .standin
        .requests()
        .iter()
        .filter(|r| r.method == "DELETE")
        .count();
    assert_eq!(deletes_upstream, 0);

    // A key with shared_objects sees everyone's.
    assert_eq!(
        get(&w, SHARED_KEY, &format!("/v1/files/{id}"))
            .await
            .status(),
        200
    );
    let listed: Value = get(&w, SHARED_KEY, "/v1/files").await.json().await.unwrap();
    assert_eq!(listed["data"].as_array().unwrap().len(), 2);

    // The owner still sees, lists and deletes it.
    assert_eq!(
        get(&w, APP_KEY, &format!("/v1/files/{id}")).await.status(),
        200
    );
    let listed: Value = get(&w, APP_KEY, "/v1/files").await.json().await.unwrap();
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
    let deleted = client()
        .delete(w.url(&format!("/v1/files/{id}")))
        .bearer_auth(APP_KEY)
        .header("x-warden-user", "alice")
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    // A batch naming another key's file is refused before it reaches OpenAI.
    let error = expect_error(
        post(&w, "/v1/batches", Some("alice"), &json!({"input_file_id": b_created["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"})).await,
        404,
    )
    .await;
    assert_eq!(error["param"], "input_file_id");
}

#[tokio::test]
async fn a_background_response_is_polled_and_cancelled_by_its_owner_only() {
    let w = start(false);
    let created: Value = post(
        &w,
        "/v1/responses",
        Some("alice"),
        &json!({"model": "gpt-4o-mini", "input": "Write a long story", "background": true}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(created["status"], "queued", "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let polled: Value = get(&w, APP_KEY, &format!("/v1/responses/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(polled["status"], "in_progress");
    expect_error(
        get(&w, OPTIONAL_KEY, &format!("/v1/responses/{id}")).await,
        404,
    )
    .await;
    let items = get(&w, APP_KEY, &format!("/v1/responses/{id}/input_items")).await;
    assert_eq!(items.status(), 200);
    let cancelled: Value = post(
        &w,
        &format!("/v1/responses/{id}/cancel"),
        Some("alice"),
        &json!({}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    // Continuing another key's response is refused too.
    let error = expect_error(
        client()
            .post(w.url("/v1/responses"))
            .bearer_auth(OPTIONAL_KEY)
            .json(&json!({"model": "gpt-4o-mini", "input": "go on", "previous_response_id": id}))
            .send()
            .await
            .unwrap(),
        404,
    )
    .await;
    assert_eq!(error["param"], "previous_response_id");
}

#[tokio::test]
async fn bad_files_get_clear_errors_and_nothing_goes_upstream() {
    let w = start(false);
    // Malformed multipart.
    let response = client()
        .post(w.url("/v1/files"))
        .bearer_auth(APP_KEY)
        .header("x-warden-user", "alice")
        .header("content-type", "multipart/form-data; boundary=abc")
        .body("--abc\r\nthis is not a part header\r\n")
        .send()
        .await
        .unwrap();
    assert_eq!(
        expect_error(response, 400).await["code"],
        "invalid_multipart"
    );
    // Truncated JSONL: the last line ends early.
    let truncated = format!(
        "{}\n{}",
        batch_line("a", "hi"),
        &batch_line("b", "there")[..40]
    );
    let error = expect_error(
        upload(&w, APP_KEY, "batch", "t.jsonl", truncated.as_bytes()).await,
        400,
    )
    .await;
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("Line 2") && message.contains("truncated"),
        "{message}"
    );
    // Lines that are not JSON.
    let error = expect_error(
        upload(&w, APP_KEY, "batch", "x.jsonl", b"hello\nworld\n").await,
        400,
    )
    .await;
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("Line 1")
            && message.contains("Line 2")
            && message.contains("not valid JSON"),
        "{message}"
    );
    // A batch line to an endpoint the key may not use.
    let error = expect_error(
        upload(
            &w,
            NARROW_KEY,
            "batch",
            "n.jsonl",
            batch_line("a", "hi").as_bytes(),
        )
        .await,
        400,
    )
    .await;
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("Line 1") && message.contains("chat.completions"),
        "{message}"
    );
    // A declared length far over the cap.
    let response = client()
        .post(w.url("/v1/uploads/upload_x/parts"))
        .bearer_auth(APP_KEY)
        .header("x-warden-user", "alice")
        .header("content-type", "multipart/form-data; boundary=abc")
        .header("content-length", "2147483648")
        .body("")
        .send()
        .await;
    if let Ok(response) = response {
        assert_eq!(
            expect_error(response, 413).await["code"],
            "request_too_large"
        );
    }
    assert_eq!(uploads_seen(&w), 0);
    assert!(w
        .standin
        .requests()
        .iter()
        .all(|r| !r.path.starts_with("/v1/uploads")));
}

#[tokio::test]
async fn unknown_paths_are_refused_with_a_clear_message() {
    let w = start(false);
    let response = client()
        .get(w.url("/v1/assistants"))
        .bearer_auth(APP_KEY)
        .send()
        .await
        .unwrap();
    let error = expect_error(response, 404).await;
    assert_eq!(error["code"], "path_not_proxied");
    assert!(error["message"]
        .as_str()
        .unwrap()
        .contains("does not proxy"));
    assert!(w.standin.requests().is_empty());
}

#[tokio::test]
async fn a_trusted_key_may_name_an_end_user_per_batch_line() {
    let w = start(false);
    let line = |id: &str, user: &str| {
        let mut v: Value = serde_json::from_str(&batch_line(id, "hello")).unwrap();
        v["warden_user"] = json!(user);
        v.to_string()
    };
    let file = format!("{}\n{}\n", line("a", "carol"), line("b", "dave"));
    // Only keys trusted to name users may.
    let error = expect_error(
        upload(&w, APP_KEY, "batch", "u.jsonl", file.as_bytes()).await,
        400,
    )
    .await;
    assert!(error["message"]
        .as_str()
        .unwrap()
        .contains("trusted_user_field"));
    assert_eq!(
        upload(&w, TRUSTED_KEY, "batch", "u.jsonl", file.as_bytes())
            .await
            .status(),
        200
    );
    let sent = w
        .standin
        .requests()
        .into_iter()
        .find(|r| r.path == "/v1/files" && r.method == "POST")
        .unwrap();
    let lines: Vec<Value> = sent
        .body_text
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert!(lines.iter().all(|l| l.get("warden_user").is_none()));
    let ids: Vec<&str> = lines
        .iter()
        .map(|l| l["body"]["safety_identifier"].as_str().unwrap())
        .collect();
    assert_ne!(
        ids[0], ids[1],
        "each line carries its own end user's identifier"
    );
    assert!(!sent.body_text.contains("carol") && !sent.body_text.contains("dave"));
}

#[tokio::test]
async fn unknown_paths_can_be_forwarded_with_the_key_swap() {
    let w = Warden::start_with(Options {
        upstream_toml: "unknown_paths = \"forward\"\n".into(),
        ..Default::default()
    });
    let response = client()
        .post(w.url("/v1/evals?x=1"))
        .bearer_auth(APP_KEY)
        .header("x-warden-user", "alice")
        .header("content-type", "application/json")
        .body(r#"{"name":"e"}"#)
        .send()
        .await
        .unwrap();
    // The stand-in does not know the path either: its own 404 comes back.
    assert_eq!(response.status(), 404);
    let seen = w.standin.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/v1/evals");
    assert_eq!(seen[0].query.as_deref(), Some("x=1"));
    assert_eq!(seen[0].body_text, r#"{"name":"e"}"#);
    assert_eq!(
        seen[0].header("authorization"),
        Some(format!("Bearer {UPSTREAM_KEY}").as_str())
    );
    // Still authenticated: no key, no forwarding.
    let response = client().get(w.url("/v1/evals")).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(w.standin.requests().len(), 1);
}
