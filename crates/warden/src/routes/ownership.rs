//! Object ownership: each object created through Warden is recorded with the virtual key
//! and end user that made it; another key asking for it gets OpenAI's own 404, lists show
//! only the caller's objects, and a request naming another key's file (a batch's input, a
//! fine-tuning job's training file) is refused the same way. Keys with
//! `shared_objects = true` see everything. Without this, every app holding any virtual key
//! could read every other app's files through the one upstream key.

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body_util::{BodyExt, Either, Full, Limited};
use serde_json::Value;

use super::{Kind, Objects};
use crate::endpoint::Endpoint;
use crate::error::WardenError;
use crate::json_body::JsonBody;
use crate::pipeline::RequestContext;
use crate::proxy::upstream::UpstreamBody;
use crate::store::Store;

/// Object answers and list pages are small; a bigger one is relayed unread (and a list
/// that big is refused rather than shown unfiltered).
const ANSWER_MAX: usize = 16 * 1024 * 1024;

/// OpenAI's wording of each kind in "No such … object".
fn noun(kind: Kind) -> &'static str {
    match kind {
        Kind::ChatCompletion => "ChatCompletion",
        Kind::Response => "Response",
        Kind::Conversation => "Conversation",
        Kind::File => "File",
        Kind::Upload => "Upload",
        Kind::Batch => "Batch",
        Kind::FineTuningJob => "FineTuningJob",
        Kind::VectorStore => "VectorStore",
        Kind::Video => "Video",
    }
}

/// Refuses a request for another key's object, before anything goes upstream.
pub async fn check_request(store: &Store, ctx: &RequestContext) -> Result<(), WardenError> {
    let Some(key) = ctx.key.as_deref() else {
        return Ok(());
    };
    if key.shared_objects {
        return Ok(());
    }
    let mut wanted: Vec<(Kind, String, &'static str)> = Vec::new();
    match ctx.endpoint {
        Endpoint::Rest(id) => {
            let route = id.route();
            if let Objects::Owned(kind) = route.objects {
                if let Some(object) = route.object_id(&ctx.path_and_query) {
                    wanted.push((kind, object.to_owned(), "id"));
                }
            }
            if let Some(body) = &ctx.body {
                for field in route.file_refs {
                    for file in ids_in(body, field) {
                        wanted.push((Kind::File, file, field));
                    }
                }
            }
        }
        // A response may continue another one, or live in a conversation.
        Endpoint::Responses => {
            if let Some(body) = &ctx.body {
                for id in ids_in(body, "previous_response_id") {
                    wanted.push((Kind::Response, id, "previous_response_id"));
                }
                for id in ids_in(body, "conversation") {
                    wanted.push((Kind::Conversation, id, "conversation"));
                }
            }
        }
        _ => {}
    }
    for (kind, object, param) in wanted {
        let owner = store.object_owner(&object).await.map_err(|err| {
            tracing::warn!(%err, "could not read an object's owner; refusing");
            WardenError::Internal
        })?;
        if owner.is_none_or(|o| o.key_name != key.name) {
            return Err(WardenError::ObjectNotFound {
                kind: noun(kind),
                id: object,
                param,
            });
        }
    }
    Ok(())
}

/// The ids a body field names: a string, a list of strings, or an object with an `id`.
fn ids_in(body: &JsonBody, field: &str) -> Vec<String> {
    let Some(raw) = body.raw(field) else {
        return Vec::new();
    };
    match serde_json::from_str::<Value>(raw.get()) {
        Ok(Value::String(id)) => vec![id],
        Ok(Value::Array(items)) => items
            .into_iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        Ok(Value::Object(map)) => map
            .get("id")
            .and_then(Value::as_str)
            .map(|id| vec![id.to_owned()])
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// What the answer of this request means for ownership, if anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AnswerUse {
    /// Record the answer's `id` (and the files it points to) for the caller.
    Record(Kind),
    /// Keep only the caller's items of `data`.
    Filter(Kind),
}

fn answer_use(ctx: &RequestContext) -> Option<AnswerUse> {
    match ctx.endpoint {
        Endpoint::Rest(id) => match id.route().objects {
            Objects::Creates(kind) => Some(AnswerUse::Record(kind)),
            Objects::Lists(kind) => Some(AnswerUse::Filter(kind)),
            // Answers that make new objects: a remix, a completed upload's file, a
            // batch's output files.
            Objects::Owned(kind @ (Kind::Video | Kind::Upload | Kind::Batch))
                if ctx.method == http::Method::POST || kind == Kind::Batch =>
            {
                Some(AnswerUse::Record(kind))
            }
            _ => None,
        },
        // Stored unless `store: false` (responses) / only with `store: true` (chat).
        Endpoint::Responses if !ctx.stream && stored(ctx, true) => {
            Some(AnswerUse::Record(Kind::Response))
        }
        Endpoint::ChatCompletions if !ctx.stream && stored(ctx, false) => {
            Some(AnswerUse::Record(Kind::ChatCompletion))
        }
        _ => None,
    }
}

fn stored(ctx: &RequestContext, default: bool) -> bool {
    ctx.body
        .as_ref()
        .and_then(|b| b.bool_field("store").ok().flatten())
        .unwrap_or(default)
}

/// Records what a successful answer created, or filters a list to the caller's objects.
/// Answers that need neither pass through untouched and unread.
pub async fn on_answer(
    store: &Store,
    ctx: &RequestContext,
    status: StatusCode,
    headers: &mut HeaderMap,
    body: UpstreamBody,
) -> Result<UpstreamBody, WardenError> {
    let (Some(key), true) = (ctx.key.as_deref(), status.is_success()) else {
        return Ok(body);
    };
    let Some(plan) = answer_use(ctx) else {
        return Ok(body);
    };
    if matches!(plan, AnswerUse::Filter(_)) && key.shared_objects {
        return Ok(body);
    }
    let bytes = Limited::new(body, ANSWER_MAX)
        .collect()
        .await
        .map_err(|_| WardenError::UpstreamUnavailable)?
        .to_bytes();
    let Ok(mut answer) = serde_json::from_slice::<Value>(&bytes) else {
        // Not JSON (a file's content): nothing to record or filter.
        return Ok(Either::Right(Full::new(bytes)));
    };
    let user = ctx.end_user.as_ref().map(|u| u.id.as_str());
    let now = crate::events::now_ms();
    let record = |id: String, kind: Kind| async move {
        store
            .record_object(&id, kind.as_str(), &key.name, user, now)
            .await
            .map_err(|err| {
                tracing::warn!(%err, "could not record an object's owner");
                WardenError::Internal
            })
    };
    match plan {
        AnswerUse::Record(kind) => {
            for (id, kind) in created(&answer, kind) {
                record(id, kind).await?;
            }
            Ok(Either::Right(Full::new(bytes)))
        }
        AnswerUse::Filter(kind) => {
            let Some(items) = answer.get_mut("data").and_then(Value::as_array_mut) else {
                return Ok(Either::Right(Full::new(bytes)));
            };
            let ids: Vec<&str> = items
                .iter()
                .filter_map(|i| i.get("id").and_then(Value::as_str))
                .collect();
            let mine = store.owned_by(&key.name, &ids).await.map_err(|err| {
                tracing::warn!(%err, "could not filter a list by owner; refusing");
                WardenError::Internal
            })?;
            items.retain(|i| {
                i.get("id")
                    .and_then(Value::as_str)
                    .is_some_and(|id| mine.contains(id))
            });
            // A batch listed is a batch read: its output files become readable too.
            let mut outputs = Vec::new();
            if kind == Kind::Batch {
                for item in items.iter() {
                    outputs.extend(created(item, Kind::Batch).into_iter().skip(1));
                }
            }
            let first = items.first().and_then(|i| i.get("id")).cloned();
            let last = items.last().and_then(|i| i.get("id")).cloned();
            if answer.get("first_id").is_some() {
                answer["first_id"] = first.unwrap_or(Value::Null);
            }
            if answer.get("last_id").is_some() {
                answer["last_id"] = last.unwrap_or(Value::Null);
            }
            for (id, kind) in outputs {
                record(id, kind).await?;
            }
            let filtered = serde_json::to_vec(&answer).map_err(|_| WardenError::Internal)?;
            headers.remove(http::header::CONTENT_LENGTH);
            Ok(Either::Right(Full::new(Bytes::from(filtered))))
        }
    }
}

/// The objects an answer of `kind` brings into being: itself, then files it points to.
fn created(answer: &Value, kind: Kind) -> Vec<(String, Kind)> {
    let mut out = Vec::new();
    let id = |v: &Value| v.as_str().map(str::to_owned);
    match kind {
        // A completed upload's answer holds the file it became.
        Kind::Upload => {
            if let Some(file) = answer.get("file").and_then(|f| f.get("id")).and_then(id) {
                out.push((file, Kind::File));
            }
            if let Some(upload) = answer.get("id").and_then(id) {
                out.insert(0, (upload, Kind::Upload));
            }
        }
        _ => {
            if let Some(own) = answer.get("id").and_then(id) {
                out.push((own, kind));
            }
        }
    }
    if kind == Kind::Batch {
        for field in ["output_file_id", "error_file_id"] {
            if let Some(file) = answer.get(field).and_then(id) {
                out.push((file, Kind::File));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_brings_its_output_files() {
        let batch =
            serde_json::json!({"id": "batch_1", "output_file_id": "file-o", "error_file_id": null});
        assert_eq!(
            created(&batch, Kind::Batch),
            vec![
                ("batch_1".into(), Kind::Batch),
                ("file-o".into(), Kind::File)
            ]
        );
        let upload = serde_json::json!({"id": "upload_1", "file": {"id": "file-u"}});
        assert_eq!(
            created(&upload, Kind::Upload),
            vec![
                ("upload_1".into(), Kind::Upload),
                ("file-u".into(), Kind::File)
            ]
        );
    }
}
