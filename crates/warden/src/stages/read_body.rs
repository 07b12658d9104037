//! Reads the client's body within its size and time bounds, parses the JSON once, checks
//! the type of each field Warden itself reads, and extracts every text the model will read
//! from that same parse (a text-bearing field Warden cannot read refuses the request).
//! Nothing else is validated here: the rest is OpenAI's to judge, so new parameters keep
//! working.

use std::time::Duration;

use http_body_util::{BodyExt, LengthLimitError, Limited};

use crate::endpoint::Endpoint;
use crate::error::WardenError;
use crate::json_body::{JsonBody, JsonKind};
use crate::pipeline::{RequestContext, Stage, StageResult, Step, Verdict};

pub struct ReadBody {
    max_bytes: usize,
    timeout: Duration,
}

impl ReadBody {
    pub fn new(max_bytes: usize, timeout: Duration) -> Self {
        Self { max_bytes, timeout }
    }

    async fn read(&self, ctx: &mut RequestContext) -> StageResult {
        let max_bytes = match ctx.endpoint.route() {
            Some(route) => route.body_cap(self.max_bytes) as usize,
            None => self.max_bytes,
        };
        match body_plan(ctx) {
            Plan::Nothing => return Ok(Verdict::Allow),
            Plan::Stream => return self.stream(ctx, max_bytes),
            Plan::Form => return self.form(ctx, max_bytes).await,
            Plan::Json => {}
        }
        refuse_before_reading(ctx, max_bytes)?;
        ctx.raw_body = self.collect(ctx, max_bytes).await?;
        let body = JsonBody::parse(&ctx.raw_body)?;
        check_fields(ctx.endpoint, &body)?;
        let model = match ctx.endpoint {
            Endpoint::RealtimeClientSecrets => session_model(&body)?,
            _ => body.str_field("model")?,
        };
        if let Some(kind) = model
            .as_deref()
            .and_then(|m| crate::logs::mask::shared()?.secret_in(m))
        {
            // Stored with every event and sent upstream: never keep or forward a key.
            return Err(WardenError::SecretInField {
                param: "model",
                kind: kind.to_owned(),
            });
        }
        ctx.model = model;
        ctx.stream = body.bool_field("stream")?.unwrap_or(false);
        ctx.texts = crate::openai::extract(ctx.endpoint, &body, ctx.model.as_deref())?;
        ctx.body = Some(body);
        Ok(Verdict::Allow)
    }
}

/// How a request's body is read.
enum Plan {
    Nothing,
    Json,
    /// A multipart form a check needs: read whole within the route's cap.
    Form,
    /// Relayed unread (uploads parts, audio, unknown paths passed through).
    Stream,
}

fn body_plan(ctx: &RequestContext) -> Plan {
    use crate::routes::{BodyKind, Checks};
    let Some(route) = ctx.endpoint.route() else {
        return match ctx.endpoint {
            Endpoint::Forward => Plan::Stream,
            e if e.has_json_body() => Plan::Json,
            _ => Plan::Nothing,
        };
    };
    let is_form = ctx
        .header("content-type")
        .is_some_and(|t| t.to_ascii_lowercase().starts_with("multipart/"));
    match route.body {
        BodyKind::NoBody => Plan::Nothing,
        BodyKind::Json => Plan::Json,
        BodyKind::MultipartOrJson if !is_form => Plan::Json,
        BodyKind::Multipart | BodyKind::MultipartOrJson => match route.checks {
            Checks::Nothing | Checks::Answer => Plan::Stream,
            _ => Plan::Form,
        },
    }
}

impl ReadBody {
    /// The whole body within `max_bytes` and the body timeout.
    async fn collect(
        &self,
        ctx: &mut RequestContext,
        max_bytes: usize,
    ) -> Result<bytes::Bytes, WardenError> {
        let incoming = ctx.incoming.take().ok_or(WardenError::Internal)?;
        let collected =
            tokio::time::timeout(self.timeout, Limited::new(incoming, max_bytes).collect())
                .await
                .map_err(|_| WardenError::BodyTimeout)?;
        match collected {
            Ok(body) => Ok(body.to_bytes()),
            Err(err) if err.downcast_ref::<LengthLimitError>().is_some() => {
                Err(WardenError::BodyTooLarge { limit: max_bytes })
            }
            Err(_) => Err(WardenError::BodyRead),
        }
    }

    /// A body relayed as it arrives: a declared length over the cap is refused here, an
    /// undeclared one is cut off at the cap on the way.
    fn stream(&self, ctx: &mut RequestContext, max_bytes: usize) -> StageResult {
        refuse_before_reading(ctx, max_bytes)?;
        if let Some(incoming) = ctx.incoming.take() {
            if let Ok(mut slot) = ctx.streamed.lock() {
                *slot = Some(Limited::new(incoming, max_bytes));
            }
        }
        Ok(Verdict::Allow)
    }

    /// A form a check reads: parsed, its text fields shown to the stages as JSON.
    async fn form(&self, ctx: &mut RequestContext, max_bytes: usize) -> StageResult {
        let declared = ctx
            .header("content-length")
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max_bytes as u64) {
            return Err(WardenError::BodyTooLarge { limit: max_bytes });
        }
        if let Some(encoding) = ctx.header("content-encoding") {
            if !encoding.eq_ignore_ascii_case("identity") {
                return Err(WardenError::UnsupportedEncoding(encoding.to_owned()));
            }
        }
        let raw = self.collect(ctx, max_bytes).await?;
        let form = crate::routes::multipart::Form::parse(raw, ctx.header("content-type")).await?;
        let fields = form.fields_as_json()?;
        check_fields(ctx.endpoint, &fields)?;
        ctx.model = fields.str_field("model")?;
        ctx.texts = crate::openai::extract(ctx.endpoint, &fields, ctx.model.as_deref())?;
        ctx.body = Some(fields);
        ctx.form = Some(form);
        Ok(Verdict::Allow)
    }
}

impl Stage for ReadBody {
    fn name(&self) -> &'static str {
        "read_body"
    }

    fn run<'a>(&'a self, ctx: &'a mut RequestContext) -> Step<'a> {
        Step::Pending(Box::pin(self.read(ctx)))
    }
}

/// A client secret names its model in `session.model`.
fn session_model(body: &JsonBody) -> Result<Option<String>, WardenError> {
    let Some(session) = body.raw("session") else {
        return Ok(None);
    };
    let session: serde_json::Value =
        serde_json::from_str(session.get()).map_err(|_| WardenError::InvalidType {
            param: "session",
            expected: "a session object",
            got: "unreadable JSON",
        })?;
    match session.get("model") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(model)) => Ok(Some(model.clone())),
        Some(_) => Err(WardenError::InvalidType {
            param: "session.model",
            expected: "a string",
            got: "another type",
        }),
    }
}

const TEXT_OR_LIST: &[JsonKind] = &[JsonKind::String, JsonKind::Array];

/// Type checks for the fields Warden reads or rewrites on each endpoint.
fn check_fields(endpoint: Endpoint, body: &JsonBody) -> Result<(), WardenError> {
    body.str_field("user")?;
    body.str_field("safety_identifier")?;
    match endpoint {
        Endpoint::ChatCompletions => {
            body.expect_kind("messages", &[JsonKind::Array], "an array of messages")
        }
        Endpoint::Responses => {
            body.expect_kind("input", TEXT_OR_LIST, "a string or an array of input items")?;
            body.expect_kind(
                "instructions",
                &[JsonKind::String, JsonKind::Null],
                "a string",
            )
        }
        Endpoint::Completions => body.expect_kind("prompt", TEXT_OR_LIST, "a string or an array"),
        Endpoint::Embeddings | Endpoint::Moderations => {
            body.expect_kind("input", TEXT_OR_LIST, "a string or an array")
        }
        Endpoint::ImagesGenerations => body.expect_kind("prompt", &[JsonKind::String], "a string"),
        Endpoint::Models | Endpoint::Model | Endpoint::Forward | Endpoint::Realtime => Ok(()),
        Endpoint::Rest(id) => match id.route().checks {
            crate::routes::Checks::Text(fields) => {
                for field in fields {
                    body.expect_kind(field, &[JsonKind::String, JsonKind::Null], "a string")?;
                }
                Ok(())
            }
            crate::routes::Checks::Items => body.expect_kind(
                "items",
                &[JsonKind::Array, JsonKind::Null],
                "an array of items",
            ),
            _ => Ok(()),
        },
        Endpoint::RealtimeClientSecrets => {
            body.expect_kind("session", &[JsonKind::Object], "a session object")?;
            body.expect_kind("expires_after", &[JsonKind::Object], "an object")
        }
    }
}

/// What can be refused from the headers alone, before a byte of the body is read: a
/// compressed body (its checks would read compressed bytes) and a declared length over
/// the cap.
fn refuse_before_reading(ctx: &RequestContext, max_bytes: usize) -> Result<(), WardenError> {
    if let Some(encoding) = ctx.header("content-encoding") {
        if !encoding.eq_ignore_ascii_case("identity") {
            return Err(WardenError::UnsupportedEncoding(encoding.to_owned()));
        }
    }
    let declared = ctx
        .header("content-length")
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max_bytes as u64) {
        return Err(WardenError::BodyTooLarge { limit: max_bytes });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn field_types_are_checked_per_endpoint() {
        let chat = JsonBody::parse(br#"{"model":"m","messages":"hello"}"#).unwrap();
        let err = check_fields(Endpoint::ChatCompletions, &chat).unwrap_err();
        assert!(matches!(
            err,
            WardenError::InvalidType {
                param: "messages",
                ..
            }
        ));

        let responses = JsonBody::parse(br#"{"model":"m","input":"hi"}"#).unwrap();
        assert!(check_fields(Endpoint::Responses, &responses).is_ok());

        let images = JsonBody::parse(br#"{"prompt":["a"]}"#).unwrap();
        assert!(check_fields(Endpoint::ImagesGenerations, &images).is_err());

        let user = JsonBody::parse(br#"{"input":"x","user":{"id":1}}"#).unwrap();
        assert!(matches!(
            check_fields(Endpoint::Embeddings, &user).unwrap_err(),
            WardenError::InvalidType { param: "user", .. }
        ));
    }
}
