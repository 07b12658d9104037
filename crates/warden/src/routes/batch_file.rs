//! Batch and fine-tune files, checked before they reach OpenAI: a batch file's every line
//! is read like a direct request to its `url` (the key's endpoints and models, local
//! filters, moderation batched into few calls with the cache reused) and gets Warden's
//! `safety_identifier`; a fine-tune file's every example is filtered and moderated. One
//! refused line refuses the whole upload with a 400 listing line numbers and reasons, so
//! nothing partial is uploaded. The upload carries the checked, rewritten file.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::value::RawValue;

use crate::endpoint::Endpoint;
use crate::error::WardenError;
use crate::identity::EndUser;
use crate::json_body::JsonBody;
use crate::pipeline::{RequestContext, Stage, Step};
use crate::safety::moderation::pieces::{self, Piece};
use crate::safety::moderation::{Moderator, Side};
use crate::stages::key_scope::KeyScopeCheck;
use crate::stages::local_filters::LocalFilters;
use crate::stages::safety_identifier::InjectSafetyIdentifier;

/// Lines listed in a refusal; the rest are counted.
const LISTED: usize = 20;
/// Pieces per Moderation round (each round is one text call, plus one for images).
const PIECES_PER_CALL: usize = 256;
/// Moderation rounds awaited together.
const ROUNDS_IN_FLIGHT: usize = 4;
/// The batch-line field naming a per-line end user, on keys trusted to name users.
pub const LINE_USER_FIELD: &str = "warden_user";

/// What is checked inside an uploaded file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Batch,
    FineTune,
}

impl Purpose {
    pub fn of(purpose: &str) -> Option<Purpose> {
        match purpose {
            "batch" => Some(Purpose::Batch),
            "fine-tune" => Some(Purpose::FineTune),
            _ => None,
        }
    }
}

/// The stages a line goes through, built from the same parts as the request pipeline.
pub struct Checker {
    pub limits: Arc<crate::config::limits::LimitsConfig>,
    pub filters: Arc<crate::safety::profiles::KeyFilters>,
    pub moderator: Arc<Moderator>,
    pub safety_ids: Arc<crate::identity::safety_id::SafetyIdentifiers>,
}

/// What a checked file came to.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub lines: usize,
    pub moderation_rounds: usize,
}

/// One line on its way through the checks.
struct Line {
    number: usize,
    /// The batch line's fields, each kept as written, `body` replaced when rewritten.
    envelope: Option<std::collections::BTreeMap<String, Box<RawValue>>>,
    ctx: RequestContext,
}

async fn run(stage: &dyn Stage, ctx: &mut RequestContext) -> Result<(), WardenError> {
    match stage.run(ctx) {
        Step::Ready(result) => result.map(|_| ()),
        Step::Pending(future) => future.await.map(|_| ()),
    }
}

impl Checker {
    /// Checks `file` for `parent`'s key and end user; the rewritten file, or the refusal.
    pub async fn check(
        &self,
        parent: &RequestContext,
        purpose: Purpose,
        file: &[u8],
    ) -> Result<(Bytes, Summary), WardenError> {
        let mut refused: Vec<(usize, String)> = Vec::new();
        let mut lines: Vec<Line> = Vec::new();
        let scope = KeyScopeCheck::new(self.limits.clone());
        let filters = LocalFilters::new(self.filters.clone());
        let text = std::str::from_utf8(file).map_err(|e| WardenError::FileRefused {
            code: "invalid_file",
            message: format!(
                "The file is not UTF-8 text (first bad byte at offset {}); a {} file is JSONL, one JSON object per line.",
                e.valid_up_to(),
                purpose_name(purpose)
            ),
        })?;
        for (i, raw) in text.split('\n').enumerate() {
            let number = i + 1;
            let raw = raw.strip_suffix('\r').unwrap_or(raw);
            if raw.trim().is_empty() {
                continue;
            }
            match self
                .line(parent, purpose, number, raw, &scope, &filters)
                .await
            {
                Ok(line) => lines.push(line),
                Err(why) => refused.push((number, why)),
            }
        }
        if lines.is_empty() && refused.is_empty() {
            return Err(WardenError::FileRefused {
                code: "invalid_file",
                message: format!("The {} file is empty.", purpose_name(purpose)),
            });
        }
        let rounds = self.moderate(parent, &lines, &mut refused).await?;
        if !refused.is_empty() {
            refused.sort_by_key(|(n, _)| *n);
            return Err(refusal(purpose, &refused));
        }
        let ids = InjectSafetyIdentifier::new(self.safety_ids.clone());
        let mut out = BytesMut::with_capacity(file.len() + lines.len() * 64);
        let count = lines.len();
        for mut line in lines {
            if purpose == Purpose::Batch {
                run(&ids, &mut line.ctx).await?;
            }
            write_line(&mut out, &mut line)?;
        }
        Ok((
            out.freeze(),
            Summary {
                lines: count,
                moderation_rounds: rounds,
            },
        ))
    }

    /// Reads one line and runs the checks that need no network: the key's scope and the
    /// local filters. `Err` is the reason the line is refused.
    async fn line(
        &self,
        parent: &RequestContext,
        purpose: Purpose,
        number: usize,
        raw: &str,
        scope: &KeyScopeCheck,
        filters: &LocalFilters,
    ) -> Result<Line, String> {
        let (endpoint, body, envelope, user) = match purpose {
            Purpose::Batch => batch_line(raw)?,
            Purpose::FineTune => example(raw)?,
        };
        let mut ctx = RequestContext::detached(
            format!("{}-line{number}", parent.request_id),
            endpoint,
            http::Method::POST,
            String::new(),
            http::HeaderMap::new(),
            parent.client_ip,
        );
        ctx.key = parent.key.clone();
        ctx.end_user = parent.end_user.clone();
        if let Some(user) = user {
            if !parent.key.as_deref().is_some_and(|k| k.trusted_user_field) {
                return Err(format!(
                    "'{LINE_USER_FIELD}' names an end user, which only keys with trusted_user_field may do"
                ));
            }
            crate::identity::validate_user_id(&user).map_err(|e| e.message())?;
            ctx.end_user = Some(EndUser {
                id: user,
                source: crate::identity::UserSource::BodyField,
            });
        }
        let model = body.str_field("model").map_err(|e| e.message())?;
        ctx.texts =
            crate::openai::extract(endpoint, &body, model.as_deref()).map_err(|e| e.message())?;
        ctx.model = model;
        ctx.body = Some(body);
        if purpose == Purpose::Batch {
            run(scope, &mut ctx).await.map_err(|e| e.message())?;
        }
        run(filters, &mut ctx).await.map_err(|e| e.message())?;
        Ok(Line {
            number,
            envelope,
            ctx,
        })
    }

    /// Moderates every line's texts in rounds of a few hundred pieces; refused lines are
    /// added to `refused`. Returns the number of rounds.
    async fn moderate(
        &self,
        parent: &RequestContext,
        lines: &[Line],
        refused: &mut Vec<(usize, String)>,
    ) -> Result<usize, WardenError> {
        if !self.moderator.config().enabled {
            return Ok(0);
        }
        let mut all: Vec<(usize, Piece)> = Vec::new();
        for line in lines {
            if line.ctx.endpoint == Endpoint::Moderations {
                continue;
            }
            for piece in pieces::of_request(&line.ctx.texts) {
                all.push((line.number, piece));
            }
        }
        let batches: Vec<Vec<Piece>> = all
            .chunks(PIECES_PER_CALL)
            .map(|chunk| {
                chunk
                    .iter()
                    .map(|(n, p)| Piece {
                        param: format!("{n}\u{1f}{}", p.param),
                        content: p.content.clone(),
                    })
                    .collect()
            })
            .collect();
        let rounds = batches.len();
        // A few rounds in flight at once: a 50,000-line file is hundreds of calls.
        for wave in batches.chunks(ROUNDS_IN_FLIGHT) {
            let answers = futures_util::future::join_all(wave.iter().map(|batch| {
                self.moderator
                    .check(Side::Input, batch, parent.key.as_deref())
            }))
            .await;
            for checked in answers {
                let checked =
                    checked.map_err(|u| WardenError::ModerationUnavailable(u.0.label()))?;
                for hit in checked.blocked {
                    let (n, param) = hit.param.split_once('\u{1f}').unwrap_or(("0", &hit.param));
                    let number = n.parse().unwrap_or(0);
                    if refused.iter().any(|(m, _)| *m == number) {
                        continue;
                    }
                    refused.push((
                        number,
                        format!(
                            "content flagged by moderation in '{param}' ({})",
                            hit.categories.owned_names().join(", ")
                        ),
                    ));
                }
            }
        }
        Ok(rounds)
    }
}

type Parsed = (
    Endpoint,
    JsonBody,
    Option<std::collections::BTreeMap<String, Box<RawValue>>>,
    Option<String>,
);

/// `{"custom_id", "method", "url", "body"}`: the endpoint it targets and its body.
fn batch_line(raw: &str) -> Result<Parsed, String> {
    let mut envelope: std::collections::BTreeMap<String, Box<RawValue>> =
        serde_json::from_str(raw).map_err(|e| not_json(&e))?;
    let string = |name: &str| -> Result<String, String> {
        let value = envelope
            .get(name)
            .ok_or_else(|| format!("missing '{name}'"))?;
        serde_json::from_str::<String>(value.get()).map_err(|_| format!("'{name}' is not a string"))
    };
    string("custom_id")?;
    let method = string("method")?;
    if method != "POST" {
        return Err(format!("'method' is '{method}'; batch requests are POST"));
    }
    let url = string("url")?;
    let endpoint = Endpoint::resolve(&http::Method::POST, &url)
        .ok()
        .filter(|e| {
            matches!(
                e,
                Endpoint::ChatCompletions
                    | Endpoint::Responses
                    | Endpoint::Completions
                    | Endpoint::Embeddings
                    | Endpoint::Moderations
            )
        })
        .ok_or_else(|| format!("'url' {url} is not an endpoint Warden checks in a batch (/v1/chat/completions, /v1/responses, /v1/completions, /v1/embeddings, /v1/moderations)"))?;
    let body = envelope.get("body").ok_or("missing 'body'")?;
    let body =
        JsonBody::parse(body.get().as_bytes()).map_err(|e| format!("'body': {}", e.message()))?;
    let user = match envelope.remove(LINE_USER_FIELD) {
        Some(raw) => Some(
            serde_json::from_str::<String>(raw.get())
                .map_err(|_| format!("'{LINE_USER_FIELD}' is not a string"))?,
        ),
        None => None,
    };
    Ok((endpoint, body, Some(envelope), user))
}

/// A fine-tuning example: chat (`messages`), preference (`input` + outputs) or legacy
/// (`prompt` + `completion`), read as the chat or completions request it resembles.
fn example(raw: &str) -> Result<Parsed, String> {
    let value: serde_json::Value = serde_json::from_str(raw).map_err(|e| not_json(&e))?;
    let object = value
        .as_object()
        .ok_or("an example must be a JSON object")?;
    if object.contains_key("messages") {
        let body = JsonBody::parse(raw.as_bytes()).map_err(|e| e.message())?;
        return Ok((Endpoint::ChatCompletions, body, None, None));
    }
    let mut messages = Vec::new();
    if let Some(input) = object.get("input") {
        if let Some(list) = input.get("messages").and_then(|m| m.as_array()) {
            messages.extend(list.iter().cloned());
        }
        for field in ["preferred_output", "non_preferred_output"] {
            if let Some(list) = object.get(field).and_then(|m| m.as_array()) {
                messages.extend(list.iter().cloned());
            }
        }
        let body = serde_json::json!({ "messages": messages }).to_string();
        let body = JsonBody::parse(body.as_bytes()).map_err(|e| e.message())?;
        return Ok((Endpoint::ChatCompletions, body, None, None));
    }
    if object.contains_key("prompt") || object.contains_key("completion") {
        let text = |f: &str| object.get(f).and_then(|v| v.as_str()).unwrap_or_default();
        let body =
            serde_json::json!({ "prompt": format!("{}\n{}", text("prompt"), text("completion")) })
                .to_string();
        let body = JsonBody::parse(body.as_bytes()).map_err(|e| e.message())?;
        return Ok((Endpoint::Completions, body, None, None));
    }
    Err("not a fine-tuning example: expected 'messages', 'input' or 'prompt'/'completion'".into())
}

fn not_json(err: &serde_json::Error) -> String {
    if err.is_eof() {
        format!(
            "not valid JSON (it ends early, column {}: truncated?)",
            err.column()
        )
    } else {
        format!("not valid JSON ({err})")
    }
}

/// The line as uploaded: the batch envelope around the checked body, or the example.
fn write_line(out: &mut BytesMut, line: &mut Line) -> Result<(), WardenError> {
    let body = line.ctx.body.as_ref().ok_or(WardenError::Internal)?;
    let bytes = body.to_bytes(line.ctx.raw_body.len());
    match &mut line.envelope {
        Some(envelope) => {
            let raw = RawValue::from_string(
                String::from_utf8(bytes.to_vec()).map_err(|_| WardenError::Internal)?,
            )
            .map_err(|_| WardenError::Internal)?;
            envelope.insert("body".into(), raw);
            let text = serde_json::to_vec(envelope).map_err(|_| WardenError::Internal)?;
            out.put_slice(&text);
        }
        None => out.put_slice(&bytes),
    }
    out.put_u8(b'\n');
    Ok(())
}

fn purpose_name(purpose: Purpose) -> &'static str {
    match purpose {
        Purpose::Batch => "batch",
        Purpose::FineTune => "fine-tune",
    }
}

fn refusal(purpose: Purpose, refused: &[(usize, String)]) -> WardenError {
    let mut message = format!(
        "Warden refused this {} file: {} line(s) would be refused if sent directly, so nothing was uploaded.",
        purpose_name(purpose),
        refused.len()
    );
    for (number, why) in refused.iter().take(LISTED) {
        message.push_str(&format!(" Line {number}: {why}."));
    }
    if refused.len() > LISTED {
        message.push_str(&format!(" And {} more.", refused.len() - LISTED));
    }
    WardenError::FileRefused {
        code: "file_lines_refused",
        message,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn batch_lines_name_their_problem() {
        assert!(batch_line(r#"{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"m","messages":[]}}"#).is_ok());
        assert!(
            batch_line(r#"{"custom_id":"a","method":"POST","url":"/v1/chat/compl"#)
                .unwrap_err()
                .contains("truncated")
        );
        assert!(batch_line("hello").unwrap_err().contains("not valid JSON"));
        assert!(
            batch_line(r#"{"custom_id":"a","method":"POST","url":"/v1/files","body":{}}"#)
                .unwrap_err()
                .contains("not an endpoint")
        );
        assert!(
            batch_line(r#"{"custom_id":"a","method":"GET","url":"/v1/embeddings","body":{}}"#)
                .unwrap_err()
                .contains("POST")
        );
    }

    #[test]
    fn examples_read_as_chat_or_completions() {
        assert_eq!(
            example(r#"{"messages":[{"role":"user","content":"hi"}]}"#)
                .unwrap()
                .0,
            Endpoint::ChatCompletions
        );
        assert_eq!(
            example(r#"{"prompt":"a","completion":"b"}"#).unwrap().0,
            Endpoint::Completions
        );
        assert!(example(r#"{"x":1}"#).is_err());
    }
}
