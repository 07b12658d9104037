//! The stored-object APIs in OpenAI's shapes: files (multipart upload, content), uploads
//! and parts, batches (`validating → in_progress → completed`, one step per retrieve, with
//! an output file), stored responses (retrieve, cancel, input items, `background`),
//! stored chat completions, conversations and items, vector stores, videos, fine-tuning
//! jobs, audio speech/transcriptions/translations and image edits/variations. Objects
//! live in memory for the stand-in's lifetime.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderValue, Method};
use serde_json::{json, Map, Value};

use crate::errors::{parse, ApiError};
use crate::routes::json;
use crate::state::App;
use crate::text;

/// Every stored object by id, with a file's bytes beside its JSON.
#[derive(Default)]
pub(crate) struct Objects {
    inner: Mutex<Store>,
}

#[derive(Default)]
struct Store {
    objects: HashMap<String, Value>,
    /// Creation order, for lists (newest first, as OpenAI lists).
    order: Vec<String>,
    contents: HashMap<String, Bytes>,
    /// Conversation id → its items; response id → its input items.
    items: HashMap<String, Vec<Value>>,
}

impl Objects {
    fn with<T>(&self, f: impl FnOnce(&mut Store) -> T) -> Option<T> {
        self.inner.lock().ok().map(|mut s| f(&mut s))
    }

    fn put(&self, object: Value) -> Value {
        let id = object["id"].as_str().unwrap_or_default().to_owned();
        self.with(|s| {
            if s.objects.insert(id.clone(), object.clone()).is_none() {
                s.order.push(id);
            }
        });
        object
    }

    fn get(&self, id: &str) -> Option<Value> {
        self.with(|s| s.objects.get(id).cloned()).flatten()
    }

    /// Stores a response (and its input items) so it can be retrieved later.
    pub(crate) fn put_response(&self, response: &Value, input: &Value) {
        let id = response["id"].as_str().unwrap_or_default().to_owned();
        let items = match input {
            Value::String(text) => vec![
                json!({"id": text::id("msg_"), "type": "message", "role": "user", "status": "completed", "content": [{"type": "input_text", "text": text}]}),
            ],
            Value::Array(items) => items.clone(),
            _ => Vec::new(),
        };
        self.with(|s| s.items.insert(id, items));
        self.put(response.clone());
    }

    /// Stores a chat completion created with `store: true`.
    pub(crate) fn put_completion(&self, completion: &Value, messages: &Value) {
        let id = completion["id"].as_str().unwrap_or_default().to_owned();
        let items = messages.as_array().cloned().unwrap_or_default();
        self.with(|s| s.items.insert(id, items));
        self.put(completion.clone());
    }
}

/// Answers a call to one of these APIs, or `None` when the path is not one of them.
pub(crate) async fn handle(
    app: &App,
    method: &Method,
    path: &str,
    query: Option<&str>,
    content_type: Option<&str>,
    body: &Bytes,
) -> Option<Result<Response, ApiError>> {
    let route = path.strip_prefix("/v1")?;
    let segs: Vec<&str> = route.trim_matches('/').split('/').collect();
    let objects = &app.objects;
    let m = method.as_str();
    let answer = match (m, segs.as_slice()) {
        ("POST", ["files"]) => create_file(objects, content_type, body).await,
        ("GET", ["files"]) => Ok(list(objects, "file", query)),
        ("GET", ["files", id]) => found(objects, id, "File"),
        ("DELETE", ["files", id]) => delete(objects, id, "File", "file"),
        ("GET", ["files", id, "content"]) => file_content(objects, id),
        ("POST", ["uploads"]) => create_upload(objects, body),
        ("POST", ["uploads", id, "parts"]) => add_part(objects, id, body),
        ("POST", ["uploads", id, "complete"]) => complete_upload(objects, id),
        ("POST", ["uploads", id, "cancel"]) => set_status(objects, id, "Upload", "cancelled"),
        ("POST", ["batches"]) => create_batch(objects, body),
        ("GET", ["batches"]) => Ok(list(objects, "batch", query)),
        ("GET", ["batches", id]) => advance_batch(objects, id),
        ("POST", ["batches", id, "cancel"]) => set_status(objects, id, "Batch", "cancelled"),
        ("GET", ["responses", id]) => advance_response(objects, id),
        ("DELETE", ["responses", id]) => delete(objects, id, "Response", "response"),
        ("POST", ["responses", id, "cancel"]) => cancel_response(objects, id),
        ("GET", ["responses", id, "input_items"]) => items(objects, id, "Response"),
        ("GET", ["chat", "completions"]) => Ok(list(objects, "chat.completion", query)),
        ("GET", ["chat", "completions", id]) => found(objects, id, "ChatCompletion"),
        ("DELETE", ["chat", "completions", id]) => {
            delete(objects, id, "ChatCompletion", "chat.completion")
        }
        ("GET", ["chat", "completions", id, "messages"]) => items(objects, id, "ChatCompletion"),
        ("POST", ["conversations"]) => create_conversation(objects, body),
        ("GET", ["conversations", id]) => found(objects, id, "Conversation"),
        ("DELETE", ["conversations", id]) => delete(objects, id, "Conversation", "conversation"),
        ("POST", ["conversations", id, "items"]) => add_items(objects, id, body),
        ("GET", ["conversations", id, "items"]) => items(objects, id, "Conversation"),
        ("POST", ["vector_stores"]) => create_simple(objects, body, "vs_", "vector_store"),
        ("GET", ["vector_stores"]) => Ok(list(objects, "vector_store", query)),
        ("GET", ["vector_stores", id]) => found(objects, id, "VectorStore"),
        ("DELETE", ["vector_stores", id]) => {
            delete(objects, id, "VectorStore", "vector_store.deleted")
        }
        ("POST", ["videos"]) => create_simple(objects, body, "video_", "video"),
        ("GET", ["videos"]) => Ok(list(objects, "video", query)),
        ("GET", ["videos", id]) => found(objects, id, "Video"),
        ("POST", ["fine_tuning", "jobs"]) => {
            create_simple(objects, body, "ftjob-", "fine_tuning.job")
        }
        ("GET", ["fine_tuning", "jobs"]) => Ok(list(objects, "fine_tuning.job", query)),
        ("GET", ["fine_tuning", "jobs", id]) => found(objects, id, "FineTuningJob"),
        ("POST", ["audio", "speech"]) => speech(body),
        ("POST", ["audio", "transcriptions" | "translations"]) => {
            transcription(content_type, body).await
        }
        ("POST", ["images", "edits" | "variations"]) => image_edit(content_type, body).await,
        _ => return None,
    };
    Some(answer)
}

fn found(objects: &Objects, id: &str, what: &str) -> Result<Response, ApiError> {
    objects
        .get(id)
        .map(|o| json(&o))
        .ok_or_else(|| ApiError::no_such(&format!("{what} object"), id))
}

fn delete(objects: &Objects, id: &str, what: &str, object: &str) -> Result<Response, ApiError> {
    let removed = objects
        .with(|s| {
            s.contents.remove(id);
            s.order.retain(|o| o != id);
            s.objects.remove(id)
        })
        .flatten();
    match removed {
        Some(_) => Ok(json(&json!({"id": id, "object": object, "deleted": true}))),
        None => Err(ApiError::no_such(&format!("{what} object"), id)),
    }
}

/// A page of one kind, newest first (`limit`, default 20; `after` an id).
fn list(objects: &Objects, kind: &str, query: Option<&str>) -> Response {
    let param = |name: &str| {
        query?
            .split('&')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .map(str::to_owned)
    };
    let limit: usize = param("limit").and_then(|l| l.parse().ok()).unwrap_or(20);
    let after = param("after");
    let data: Vec<Value> = objects
        .with(|s| {
            let mut out: Vec<Value> = s
                .order
                .iter()
                .rev()
                .filter_map(|id| s.objects.get(id))
                .filter(|o| o["object"] == kind)
                .cloned()
                .collect();
            if let Some(after) = &after {
                if let Some(at) = out.iter().position(|o| o["id"] == after.as_str()) {
                    out.drain(..=at);
                }
            }
            out
        })
        .unwrap_or_default();
    let has_more = data.len() > limit;
    let page: Vec<Value> = data.into_iter().take(limit).collect();
    json(&json!({
        "object": "list",
        "data": page,
        "first_id": page.first().map(|o| o["id"].clone()),
        "last_id": page.last().map(|o| o["id"].clone()),
        "has_more": has_more,
    }))
}

struct Part {
    name: String,
    filename: Option<String>,
    data: Bytes,
}

async fn form(content_type: Option<&str>, body: &Bytes) -> Result<Vec<Part>, ApiError> {
    let boundary = content_type
        .and_then(|c| multer::parse_boundary(c).ok())
        .ok_or_else(|| ApiError::invalid_request("Expected a multipart/form-data body."))?;
    let body = body.clone();
    let stream = futures_util::stream::once(async move { Ok::<_, std::io::Error>(body) });
    let mut multipart = multer::Multipart::new(stream, boundary);
    {
        let mut parts = Vec::new();
        while let Some(field) = multipart
            .next_field()
            .await
            .map_err(|e| ApiError::invalid_request(format!("Invalid multipart body: {e}")))?
        {
            let name = field.name().unwrap_or_default().to_owned();
            let filename = field.file_name().map(str::to_owned);
            let data = field
                .bytes()
                .await
                .map_err(|e| ApiError::invalid_request(format!("Invalid multipart body: {e}")))?;
            parts.push(Part {
                name,
                filename,
                data,
            });
        }
        Ok(parts)
    }
}

fn field<'a>(parts: &'a [Part], name: &str) -> Option<&'a str> {
    parts
        .iter()
        .find(|p| p.name == name && p.filename.is_none())
        .and_then(|p| std::str::from_utf8(&p.data).ok())
}

const PURPOSES: &[&str] = &[
    "assistants",
    "batch",
    "fine-tune",
    "vision",
    "user_data",
    "evals",
];

fn file_object(id: &str, bytes: usize, filename: &str, purpose: &str) -> Value {
    json!({
        "id": id,
        "object": "file",
        "bytes": bytes,
        "created_at": text::now(),
        "expires_at": null,
        "filename": filename,
        "purpose": purpose,
        "status": "processed",
        "status_details": null,
    })
}

async fn create_file(
    objects: &Objects,
    content_type: Option<&str>,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let parts = form(content_type, body).await?;
    let purpose = field(&parts, "purpose").ok_or_else(|| ApiError::missing("purpose"))?;
    if !PURPOSES.contains(&purpose) {
        return Err(ApiError::invalid_request(format!(
            "'{purpose}' is not one of {PURPOSES:?} - 'purpose'"
        ))
        .param("purpose"));
    }
    let file = parts
        .iter()
        .find(|p| p.name == "file" && p.filename.is_some())
        .ok_or_else(|| ApiError::missing("file"))?;
    let id = text::id("file-");
    let object = file_object(
        &id,
        file.data.len(),
        file.filename.as_deref().unwrap_or("file"),
        purpose,
    );
    objects.with(|s| s.contents.insert(id.clone(), file.data.clone()));
    Ok(json(&objects.put(object)))
}

fn file_content(objects: &Objects, id: &str) -> Result<Response, ApiError> {
    let bytes = objects
        .with(|s| s.contents.get(id).cloned())
        .flatten()
        .ok_or_else(|| ApiError::no_such("File object", id))?;
    let mut response = Response::new(Body::from(bytes));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    Ok(response)
}

fn create_upload(objects: &Objects, body: &Bytes) -> Result<Response, ApiError> {
    let request: Map<String, Value> = parse(body)?;
    for needed in ["bytes", "filename", "mime_type", "purpose"] {
        if !request.contains_key(needed) {
            return Err(ApiError::missing(needed));
        }
    }
    let object = json!({
        "id": text::id("upload_"),
        "object": "upload",
        "bytes": request["bytes"],
        "created_at": text::now(),
        "expires_at": text::now() + 3600,
        "filename": request["filename"],
        "purpose": request["purpose"],
        "status": "pending",
        "file": null,
        "received": 0,
    });
    Ok(json(&objects.put(object)))
}

/// Parts are counted, not kept: a test may send hundreds of MB through them.
fn add_part(objects: &Objects, id: &str, body: &Bytes) -> Result<Response, ApiError> {
    let mut upload = objects
        .get(id)
        .ok_or_else(|| ApiError::no_such("Upload object", id))?;
    let received = upload["received"].as_u64().unwrap_or(0) + body.len() as u64;
    upload["received"] = json!(received);
    objects.put(upload);
    Ok(json(&json!({
        "id": text::id("part_"),
        "object": "upload.part",
        "created_at": text::now(),
        "upload_id": id,
    })))
}

/// Counts a part's bytes as they arrive (called by the router before buffering).
pub(crate) fn count_part(objects: &Objects, id: &str, bytes: u64) {
    if let Some(mut upload) = objects.get(id) {
        upload["received"] = json!(upload["received"].as_u64().unwrap_or(0) + bytes);
        objects.put(upload);
    }
}

fn complete_upload(objects: &Objects, id: &str) -> Result<Response, ApiError> {
    let mut upload = objects
        .get(id)
        .ok_or_else(|| ApiError::no_such("Upload object", id))?;
    let file_id = text::id("file-");
    let file = file_object(
        &file_id,
        upload["received"].as_u64().unwrap_or(0) as usize,
        upload["filename"].as_str().unwrap_or("upload"),
        upload["purpose"].as_str().unwrap_or("user_data"),
    );
    objects.put(file.clone());
    upload["status"] = json!("completed");
    upload["file"] = file;
    Ok(json(&objects.put(upload)))
}

fn set_status(objects: &Objects, id: &str, what: &str, status: &str) -> Result<Response, ApiError> {
    let mut object = objects
        .get(id)
        .ok_or_else(|| ApiError::no_such(&format!("{what} object"), id))?;
    object["status"] = json!(status);
    Ok(json(&objects.put(object)))
}

fn create_batch(objects: &Objects, body: &Bytes) -> Result<Response, ApiError> {
    let request: Map<String, Value> = parse(body)?;
    let input = request
        .get("input_file_id")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::missing("input_file_id"))?;
    if objects.get(input).is_none() {
        return Err(ApiError::no_such("File object", input).param("input_file_id"));
    }
    let object = json!({
        "id": text::id("batch_"),
        "object": "batch",
        "endpoint": request.get("endpoint").cloned().unwrap_or(Value::Null),
        "errors": null,
        "input_file_id": input,
        "completion_window": request.get("completion_window").cloned().unwrap_or(json!("24h")),
        "status": "validating",
        "output_file_id": null,
        "error_file_id": null,
        "created_at": text::now(),
        "in_progress_at": null,
        "expires_at": text::now() + 86400,
        "finalizing_at": null,
        "completed_at": null,
        "failed_at": null,
        "expired_at": null,
        "cancelling_at": null,
        "cancelled_at": null,
        "request_counts": {"total": 0, "completed": 0, "failed": 0},
        "metadata": request.get("metadata").cloned().unwrap_or(Value::Null),
    });
    Ok(json(&objects.put(object)))
}

/// Each retrieve moves a batch one step: validating → in_progress → completed, the last
/// writing an output file with one answer per input line.
fn advance_batch(objects: &Objects, id: &str) -> Result<Response, ApiError> {
    let mut batch = objects
        .get(id)
        .ok_or_else(|| ApiError::no_such("Batch object", id))?;
    match batch["status"].as_str() {
        Some("validating") => {
            batch["status"] = json!("in_progress");
            batch["in_progress_at"] = json!(text::now());
        }
        Some("in_progress") => {
            let input = batch["input_file_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let content = objects
                .with(|s| s.contents.get(&input).cloned())
                .flatten()
                .unwrap_or_default();
            let (output, total) = batch_output(&content);
            let file_id = text::id("file-");
            objects.with(|s| s.contents.insert(file_id.clone(), output.clone()));
            objects.put(file_object(
                &file_id,
                output.len(),
                "batch_output.jsonl",
                "batch_output",
            ));
            batch["status"] = json!("completed");
            batch["completed_at"] = json!(text::now());
            batch["output_file_id"] = json!(file_id);
            batch["request_counts"] = json!({"total": total, "completed": total, "failed": 0});
        }
        _ => {}
    }
    Ok(json(&objects.put(batch)))
}

fn batch_output(input: &[u8]) -> (Bytes, usize) {
    let mut out = String::new();
    let mut total = 0;
    for line in String::from_utf8_lossy(input).lines() {
        let Ok(request) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        total += 1;
        let asked = request["body"]["messages"]
            .as_array()
            .and_then(|m| m.last())
            .map(|m| text::content_text(&m["content"]))
            .unwrap_or_default();
        let reply = text::reply(&asked);
        let answer = json!({
            "id": text::id("batch_req_"),
            "custom_id": request["custom_id"],
            "response": {
                "status_code": 200,
                "request_id": text::id("req_"),
                "body": {
                    "id": text::id("chatcmpl-"),
                    "object": "chat.completion",
                    "created": text::now(),
                    "model": request["body"]["model"],
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": reply, "refusal": null}, "logprobs": null, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": text::tokens(&asked), "completion_tokens": text::tokens(&reply), "total_tokens": text::tokens(&asked) + text::tokens(&reply)},
                },
            },
            "error": null,
        });
        out.push_str(&answer.to_string());
        out.push('\n');
    }
    (Bytes::from(out), total)
}

/// A background response moves queued → in_progress → completed, one step per retrieve.
fn advance_response(objects: &Objects, id: &str) -> Result<Response, ApiError> {
    let mut response = objects
        .get(id)
        .ok_or_else(|| ApiError::no_such("Response object", id))?;
    let next = match response["status"].as_str() {
        Some("queued") => Some("in_progress"),
        Some("in_progress") => Some("completed"),
        _ => None,
    };
    if let Some(next) = next {
        response["status"] = json!(next);
        if next == "completed" {
            if let Some(final_output) = response.get("_final_output").cloned() {
                response["output"] = final_output;
            }
        }
    }
    let shown = public(&response);
    objects.put(response);
    Ok(json(&shown))
}

/// A response as shown: without the stand-in's own bookkeeping fields.
pub(crate) fn public(response: &Value) -> Value {
    let mut shown = response.clone();
    if let Some(map) = shown.as_object_mut() {
        map.retain(|k, _| !k.starts_with('_'));
    }
    shown
}

fn cancel_response(objects: &Objects, id: &str) -> Result<Response, ApiError> {
    let mut response = objects
        .get(id)
        .ok_or_else(|| ApiError::no_such("Response object", id))?;
    if response["background"] != json!(true) {
        return Err(ApiError::invalid_request(
            "Only responses created with background=true can be cancelled.",
        )
        .param("response_id"));
    }
    if matches!(response["status"].as_str(), Some("queued" | "in_progress")) {
        response["status"] = json!("cancelled");
    }
    let shown = public(&response);
    objects.put(response);
    Ok(json(&shown))
}

fn items(objects: &Objects, id: &str, what: &str) -> Result<Response, ApiError> {
    if objects.get(id).is_none() {
        return Err(ApiError::no_such(&format!("{what} object"), id));
    }
    let data = objects
        .with(|s| s.items.get(id).cloned())
        .flatten()
        .unwrap_or_default();
    Ok(json(&json!({
        "object": "list",
        "data": data,
        "first_id": data.first().and_then(|i| i.get("id")).cloned(),
        "last_id": data.last().and_then(|i| i.get("id")).cloned(),
        "has_more": false,
    })))
}

fn with_ids(items: &[Value]) -> Vec<Value> {
    items
        .iter()
        .map(|item| {
            let mut item = item.clone();
            if item.get("id").is_none() {
                item["id"] = json!(text::id("msg_"));
            }
            item
        })
        .collect()
}

fn create_conversation(objects: &Objects, body: &Bytes) -> Result<Response, ApiError> {
    let request: Map<String, Value> = if body.is_empty() {
        Map::new()
    } else {
        parse(body)?
    };
    let id = text::id("conv_");
    let items = with_ids(
        request
            .get("items")
            .and_then(Value::as_array)
            .map_or(&[][..], |v| v),
    );
    objects.with(|s| s.items.insert(id.clone(), items));
    let object = json!({
        "id": id,
        "object": "conversation",
        "created_at": text::now(),
        "metadata": request.get("metadata").cloned().unwrap_or(json!({})),
    });
    Ok(json(&objects.put(object)))
}

fn add_items(objects: &Objects, id: &str, body: &Bytes) -> Result<Response, ApiError> {
    if objects.get(id).is_none() {
        return Err(ApiError::no_such("Conversation object", id));
    }
    let request: Map<String, Value> = parse(body)?;
    let added = with_ids(
        request
            .get("items")
            .and_then(Value::as_array)
            .ok_or_else(|| ApiError::missing("items"))?,
    );
    objects.with(|s| {
        s.items
            .entry(id.to_owned())
            .or_default()
            .extend(added.clone())
    });
    Ok(json(&json!({
        "object": "list",
        "data": added,
        "first_id": added.first().map(|i| i["id"].clone()),
        "last_id": added.last().map(|i| i["id"].clone()),
        "has_more": false,
    })))
}

/// Vector stores, videos and fine-tuning jobs: the request's fields echoed on a new id.
fn create_simple(
    objects: &Objects,
    body: &Bytes,
    prefix: &str,
    object: &str,
) -> Result<Response, ApiError> {
    let request: Map<String, Value> = if body.is_empty() || body.first() == Some(&b'-') {
        Map::new()
    } else {
        parse(body)?
    };
    let mut created = json!({
        "id": text::id(prefix),
        "object": object,
        "created_at": text::now(),
        "status": match object {
            "vector_store" => "completed",
            "fine_tuning.job" => "validating_files",
            _ => "queued",
        },
    });
    for (key, value) in request {
        if created.get(&key).is_none() {
            created[key] = value;
        }
    }
    Ok(json(&objects.put(created)))
}

/// `audio/speech`: a few bytes of "audio" (the input's length), as `audio/mpeg`.
fn speech(body: &Bytes) -> Result<Response, ApiError> {
    let request: Map<String, Value> = parse(body)?;
    let input = request
        .get("input")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::missing("input"))?;
    let mut response = Response::new(Body::from(vec![0u8; input.len().clamp(16, 4096)]));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("audio/mpeg"),
    );
    Ok(response)
}

/// A transcription is the audio's bytes read as text (tests send text as "audio").
async fn transcription(content_type: Option<&str>, body: &Bytes) -> Result<Response, ApiError> {
    let parts = form(content_type, body).await?;
    let file = parts
        .iter()
        .find(|p| p.name == "file" && p.filename.is_some())
        .ok_or_else(|| ApiError::missing("file"))?;
    let heard = String::from_utf8_lossy(&file.data).trim().to_owned();
    Ok(json(
        &json!({"text": heard, "usage": {"type": "duration", "seconds": 1}}),
    ))
}

async fn image_edit(content_type: Option<&str>, body: &Bytes) -> Result<Response, ApiError> {
    let parts = form(content_type, body).await?;
    if !parts.iter().any(|p| p.filename.is_some()) {
        return Err(ApiError::missing("image"));
    }
    Ok(json(&json!({
        "created": text::now(),
        "data": [{"b64_json": "aW1hZ2U=", "revised_prompt": field(&parts, "prompt")}],
    })))
}
