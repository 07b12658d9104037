//! The body that goes upstream, whatever the route: JSON as the stages left it, a form
//! rebuilt around what they changed, a client body relayed as it arrives, or none.

use bytes::Bytes;
use http::HeaderValue;

use super::StreamedBody;
use crate::error::WardenError;
use crate::pipeline::RequestContext;

pub enum Outgoing {
    /// Bytes Warden holds, with the Content-Type they need when it is not the client's.
    Held(Bytes, Option<HeaderValue>),
    Stream(StreamedBody),
    Empty,
}

impl Outgoing {
    /// The length to declare; a relayed body keeps the one its size hint gives.
    pub fn declared_len(&self) -> Option<usize> {
        match self {
            Outgoing::Held(bytes, _) => Some(bytes.len()),
            _ => None,
        }
    }

    pub fn content_type(&self) -> Option<HeaderValue> {
        match self {
            Outgoing::Held(_, content_type) => content_type.clone(),
            _ => None,
        }
    }

    pub fn into_parts(self) -> (Option<Bytes>, Option<StreamedBody>) {
        match self {
            Outgoing::Held(bytes, _) => (Some(bytes), None),
            Outgoing::Stream(stream) => (None, Some(stream)),
            Outgoing::Empty => (None, None),
        }
    }
}

/// Takes the relayed body, if any: call once per request.
pub fn outgoing(ctx: &RequestContext) -> Result<Outgoing, WardenError> {
    if let Some(form) = &ctx.form {
        let file = ctx.form_file.clone().map(|bytes| ("file", bytes));
        let (bytes, content_type) = form.rebuild(ctx.body.as_ref(), file)?;
        let content_type =
            HeaderValue::from_str(&content_type).map_err(|_| WardenError::Internal)?;
        return Ok(Outgoing::Held(bytes, Some(content_type)));
    }
    if let Some(stream) = ctx.streamed.lock().ok().and_then(|mut slot| slot.take()) {
        return Ok(Outgoing::Stream(stream));
    }
    if ctx.body.is_some() || ctx.endpoint.has_json_body() {
        return Ok(Outgoing::Held(ctx.outgoing_body(), None));
    }
    Ok(Outgoing::Empty)
}
