//! Every piece of text and every image a request body shows the model, read once from the
//! same parse that decides what is forwarded. Each text carries its parameter path
//! (`messages[2].content`) and the byte span of its literal, so a redaction rewrites exactly
//! that value while every other byte stays as the client sent it.
//!
//! The rule: a string is checked unless Warden knows it is not text for the model (ids,
//! roles, types, file and audio payloads). Known shapes are walked by name; anything else
//! inside a message, item or part (a new part type, an unknown key) is read as text, never
//! skipped. A text-bearing field of the wrong shape (`messages: [[...]]`, `content: 5`) or a
//! token array that does not decode is refused with a 400 naming the parameter.

use std::fmt;
use std::ops::Range;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::endpoint::Endpoint;
use crate::error::WardenError;
use crate::json_body::{JsonBody, JsonKind};
use crate::limits::tokens::Encoding;

/// What the checks read from one request.
#[derive(Debug, Clone, Default)]
pub struct RequestTexts {
    pub texts: Vec<TextRef>,
    /// `https://…` or `data:image/…` URLs of image inputs, for the Moderation endpoint.
    pub images: Vec<ImageRef>,
}

/// One text the model will read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextRef {
    /// The top-level field it lives in (`messages`, `input`, …).
    pub field: &'static str,
    /// Where it sits, in OpenAI's `param` notation: `messages[2].content[0].text`.
    pub param: String,
    /// Byte range of its JSON literal inside the field's raw text.
    pub span: Range<usize>,
    /// How the literal is written, so a redaction is written back the same way.
    pub form: Form,
    pub text: String,
    /// Written by the application, not its end user: a `system` or `developer` message,
    /// responses `instructions`, tool descriptions. Jailbreak scoring skips these by
    /// default: a system prompt is full of rules and personas and is not an attack.
    pub instructions: bool,
    /// The `role` of the message or item it is in (`user` for a plain responses input).
    pub role: Option<Role>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Assistant,
    System,
    Developer,
    Tool,
    Other,
}

impl Role {
    fn of(raw: &RawValue) -> Role {
        match raw.get() {
            r#""user""# => Role::User,
            r#""assistant""# => Role::Assistant,
            r#""system""# => Role::System,
            r#""developer""# => Role::Developer,
            r#""tool""# | r#""function""# => Role::Tool,
            _ => Role::Other,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// A JSON string literal.
    String,
    /// An array of token ids (completions and embeddings), decoded with this table.
    Tokens(Encoding),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    pub param: String,
    pub url: String,
}

/// Keys whose values are never text for the model: identifiers, enums and payloads that
/// are not language (audio, files, opaque reasoning state).
const NOT_TEXT: &[&str] = &[
    "type",
    "role",
    "id",
    "call_id",
    "tool_call_id",
    "item_id",
    "status",
    "detail",
    "file_id",
    "encrypted_content",
];

/// Part types whose payload is not text Warden can read: audio and file contents (file
/// text is not extracted; see docs/request-texts.md).
const NOT_TEXT_PARTS: &[&str] = &["input_audio", "file", "input_file", "audio"];

/// Reads every text and image of a body. `model` picks the tokenizer for token arrays.
pub fn extract(
    endpoint: Endpoint,
    body: &JsonBody,
    model: Option<&str>,
) -> Result<RequestTexts, WardenError> {
    let mut walker = Walker {
        out: RequestTexts::default(),
        encoding: Encoding::for_model(model.unwrap_or("")),
    };
    match endpoint {
        Endpoint::ChatCompletions => {
            walker.field(body, "messages", Walker::messages)?;
            walker.field(body, "prediction", Walker::anything)?;
            walker.field(body, "tools", Walker::descriptions)?;
            walker.field(body, "functions", Walker::descriptions)?;
            walker.field(body, "response_format", Walker::descriptions)?;
        }
        Endpoint::Responses => {
            walker.field(body, "input", Walker::responses_input)?;
            walker.field(body, "instructions", Walker::instructions)?;
            walker.field(body, "prompt", Walker::prompt_template)?;
            walker.field(body, "tools", Walker::descriptions)?;
            walker.field(body, "text", Walker::descriptions)?;
        }
        Endpoint::Completions => {
            walker.field(body, "prompt", Walker::text_or_tokens)?;
            walker.field(body, "suffix", Walker::string)?;
        }
        Endpoint::Embeddings => walker.field(body, "input", Walker::text_or_tokens)?,
        Endpoint::ImagesGenerations => walker.field(body, "prompt", Walker::string)?,
        // A client secret's session config; on a Realtime socket, one client event.
        Endpoint::RealtimeClientSecrets | Endpoint::Realtime => {
            walker.field(body, "session", Walker::realtime_config)?;
            walker.field(body, "response", Walker::realtime_config)?;
            walker.field(body, "item", Walker::realtime_item)?;
        }
        // Checking text is what the Moderation endpoint is for; models carry no body.
        Endpoint::Moderations | Endpoint::Models | Endpoint::Model | Endpoint::Forward => {}
        // REST routes: the fields their table row names (speech input, edit and video
        // prompts), conversation items read like responses input.
        Endpoint::Rest(id) => match id.route().checks {
            crate::routes::Checks::Text(fields) => {
                for field in fields {
                    walker.field(body, field, Walker::string)?;
                }
            }
            crate::routes::Checks::Items => walker.field(body, "items", Walker::responses_input)?,
            _ => {}
        },
    }
    Ok(walker.out)
}

/// The prompt text a fingerprint needs no more of.
const MAX_PROMPT: usize = 4096;

impl RequestTexts {
    /// What the request asks, for template detection: the end user's last message (chat,
    /// responses) or the prompt (completions, images), cut to 4 KiB. The application's
    /// own instructions are left out: it sends the same ones every time.
    pub fn prompt(&self) -> Option<String> {
        let last = self.texts.iter().rev().find(|t| match t.field {
            "messages" | "input" => t.role == Some(Role::User),
            "prompt" => true,
            _ => false,
        })?;
        let mut text = match last.param.find(']') {
            Some(end) if last.field != "prompt" => {
                let item = format!("{}.", &last.param[..=end]);
                let parts: Vec<&str> = self
                    .texts
                    .iter()
                    .filter(|t| t.field == last.field && t.param.starts_with(&item))
                    .map(|t| t.text.as_str())
                    .collect();
                parts.join("\n")
            }
            _ => last.text.clone(),
        };
        if text.len() > MAX_PROMPT {
            let mut cut = MAX_PROMPT;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        Some(text)
    }

    /// `messages[7].` / `input[3].`: the conversation item the client added last, where a
    /// body carries a conversation; texts outside it are earlier turns sent again, judged
    /// when they were new (so they must not earn a second strike).
    pub fn newest_item(&self) -> Option<String> {
        let last = self
            .texts
            .iter()
            .rev()
            .find(|t| matches!(t.field, "messages" | "input"))?;
        let end = last.param.find(']')?;
        Some(format!("{}.", &last.param[..=end]))
    }
}

/// A new value for one text found by [`extract`].
#[derive(Debug, Clone)]
pub struct Replacement {
    pub field: &'static str,
    pub span: Range<usize>,
    pub form: Form,
    pub text: String,
}

/// Writes replacements into the body: each touched top-level field is rebuilt by splicing
/// the new literals into its raw text, so nothing else in it changes.
pub fn apply(body: &mut JsonBody, mut replacements: Vec<Replacement>) -> Result<(), WardenError> {
    replacements.sort_by(|a, b| a.field.cmp(b.field).then(a.span.start.cmp(&b.span.start)));
    let mut start = 0;
    while start < replacements.len() {
        let field = replacements[start].field;
        let end = replacements[start..]
            .iter()
            .position(|r| r.field != field)
            .map_or(replacements.len(), |n| start + n);
        let raw = body.raw(field).ok_or(WardenError::Internal)?.get();
        let spliced = splice(raw, &replacements[start..end])?;
        let value = RawValue::from_string(spliced).map_err(|_| WardenError::Internal)?;
        body.set_raw(field, value);
        start = end;
    }
    Ok(())
}

fn splice(raw: &str, replacements: &[Replacement]) -> Result<String, WardenError> {
    let mut out = String::with_capacity(raw.len() + 64);
    let mut at = 0;
    for r in replacements {
        if r.span.start < at || r.span.end > raw.len() {
            return Err(WardenError::Internal);
        }
        out.push_str(raw.get(at..r.span.start).ok_or(WardenError::Internal)?);
        let literal = match r.form {
            Form::String => serde_json::to_string(&r.text),
            Form::Tokens(encoding) => serde_json::to_string(&encoding.encode(&r.text)),
        };
        out.push_str(&literal.map_err(|_| WardenError::Internal)?);
        at = r.span.end;
    }
    out.push_str(raw.get(at..).ok_or(WardenError::Internal)?);
    Ok(out)
}

struct Walker {
    out: RequestTexts,
    encoding: Encoding,
}

/// Where the walk is: the field, its raw text (spans are measured from it) and the path so far.
#[derive(Clone, Copy)]
struct At<'a, 'p> {
    field: &'static str,
    base: &'a str,
    path: &'p str,
    instructions: bool,
    role: Option<Role>,
}

impl<'a, 'p> At<'a, 'p> {
    fn with_path<'q>(self, path: &'q str) -> At<'a, 'q> {
        At {
            field: self.field,
            base: self.base,
            path,
            instructions: self.instructions,
            role: self.role,
        }
    }
}

type Walk = for<'a, 'p> fn(&mut Walker, At<'a, 'p>, &'a RawValue) -> Result<(), WardenError>;

impl Walker {
    fn field(
        &mut self,
        body: &JsonBody,
        name: &'static str,
        walk: Walk,
    ) -> Result<(), WardenError> {
        let Some(raw) = body.raw(name) else {
            return Ok(());
        };
        let at = At {
            field: name,
            base: raw.get(),
            path: name,
            instructions: false,
            role: None,
        };
        walk(self, at, raw)
    }

    /// A string that must be a string (or null).
    fn string(&mut self, at: At<'_, '_>, raw: &RawValue) -> Result<(), WardenError> {
        match JsonKind::of(raw.get()) {
            JsonKind::String => self.push_string(at, raw),
            JsonKind::Null => Ok(()),
            other => Err(wrong_shape(at.path, "a string", other)),
        }
    }

    fn push_string(&mut self, at: At<'_, '_>, raw: &RawValue) -> Result<(), WardenError> {
        let literal = raw.get();
        let text = decode(literal).ok_or_else(|| unreadable(at.path))?;
        self.push(at, literal, Form::String, text);
        Ok(())
    }

    fn push(&mut self, at: At<'_, '_>, literal: &str, form: Form, text: String) {
        let start = literal.as_ptr() as usize - at.base.as_ptr() as usize;
        self.out.texts.push(TextRef {
            field: at.field,
            param: at.path.to_owned(),
            span: start..start + literal.len(),
            form,
            text,
            instructions: at.instructions,
            role: at.role,
        });
    }

    /// Completions `prompt` and embeddings `input`: a string, an array of strings, one
    /// array of token ids, or an array of token arrays. Token arrays are decoded with the
    /// model's tokenizer, so the checks read what the model will.
    fn text_or_tokens(&mut self, at: At<'_, '_>, raw: &RawValue) -> Result<(), WardenError> {
        match JsonKind::of(raw.get()) {
            JsonKind::String => return self.push_string(at, raw),
            JsonKind::Array => {}
            other => return Err(wrong_shape(at.path, "a string or an array", other)),
        }
        let items = array(raw, at.path)?;
        if items
            .first()
            .is_some_and(|i| JsonKind::of(i.get()) == JsonKind::Number)
        {
            return self.tokens(at, raw);
        }
        for (i, item) in items.into_iter().enumerate() {
            let path = format!("{}[{i}]", at.path);
            let at = at.with_path(&path);
            match JsonKind::of(item.get()) {
                JsonKind::String => self.push_string(at, item)?,
                JsonKind::Array => self.tokens(at, item)?,
                other => {
                    return Err(wrong_shape(
                        &path,
                        "a string or an array of token ids",
                        other,
                    ))
                }
            }
        }
        Ok(())
    }

    fn tokens(&mut self, at: At<'_, '_>, raw: &RawValue) -> Result<(), WardenError> {
        let ids: Vec<u32> = serde_json::from_str(raw.get()).map_err(|_| {
            WardenError::invalid_shape(at.path, "an array of token ids (integers)", "other values")
        })?;
        let text = self
            .encoding
            .decode(ids)
            .ok_or(WardenError::UndecodableTokens {
                param: at.path.to_owned(),
                encoding: self.encoding.name(),
            })?;
        self.push(at, raw.get(), Form::Tokens(self.encoding), text);
        Ok(())
    }

    /// Chat `messages`: an array of message objects. Every string of a message is text
    /// except ids and enums; `content` must be a string, null or an array of parts.
    fn messages(&mut self, at: At<'_, '_>, raw: &RawValue) -> Result<(), WardenError> {
        self.items(at, raw)
    }

    /// An array of message or input objects, each with its own role.
    fn items(&mut self, at: At<'_, '_>, raw: &RawValue) -> Result<(), WardenError> {
        for (i, item) in array(raw, at.path)?.into_iter().enumerate() {
            let path = format!("{}[{i}]", at.path);
            let entries = object(item, &path)?;
            let at = At {
                instructions: from_the_application(&entries),
                role: role_of(&entries),
                ..at.with_path(&path)
            };
            self.item_entries(at, &entries)?;
        }
        Ok(())
    }

    /// Responses `input`: a string, or an array of items (messages, tool outputs,
    /// replayed output items), each walked like a chat message.
    fn responses_input(&mut self, at: At<'_, '_>, raw: &RawValue) -> Result<(), WardenError> {
        match JsonKind::of(raw.get()) {
            JsonKind::String if !at.instructions => {
                let at = At {
                    role: Some(Role::User),
                    ..at
                };
                return self.push_string(at, raw);
            }
            JsonKind::String => return self.push_string(at, raw),
            JsonKind::Array => {}
            other => return Err(wrong_shape(at.path, "a string or an array", other)),
        }
        self.items(at, raw)
    }

    /// The entries of a message or input item, with the shape checks of the fields
    /// Warden reads by name.
    fn item_entries(
        &mut self,
        at: At<'_, '_>,
        entries: &[(String, &RawValue)],
    ) -> Result<(), WardenError> {
        if not_text_part(entries) {
            return Ok(());
        }
        for (key, value) in entries {
            let path = format!("{}.{key}", at.path);
            let at = at.with_path(&path);
            match key.as_str() {
                "role" | "type" => {
                    if JsonKind::of(value.get()) != JsonKind::String {
                        return Err(wrong_shape(&path, "a string", JsonKind::of(value.get())));
                    }
                }
                "content" | "output" => self.content(at, value)?,
                "tool_calls" => match JsonKind::of(value.get()) {
                    JsonKind::Array | JsonKind::Null => self.anything(at, value)?,
                    other => return Err(wrong_shape(&path, "an array", other)),
                },
                key if NOT_TEXT.contains(&key) => {}
                "image_url" => self.image(at, value)?,
                _ => self.anything(at, value)?,
            }
        }
        Ok(())
    }

    /// `content` (or a responses tool `output`): a string, null, or an array of parts.
    fn content(&mut self, at: At<'_, '_>, raw: &RawValue) -> Result<(), WardenError> {
        match JsonKind::of(raw.get()) {
            JsonKind::String => self.push_string(at, raw),
            JsonKind::Null => Ok(()),
            JsonKind::Array => {
                for (i, part) in array(raw, at.path)?.into_iter().enumerate() {
                    let path = format!("{}[{i}]", at.path);
                    let entries = object(part, &path)?;
                    self.item_entries(at.with_path(&path), &entries)?;
                }
                Ok(())
            }
            // A single part (e.g. a computer-use screenshot output) is read like one.
            JsonKind::Object => self.anything(at, raw),
            other => Err(wrong_shape(
                at.path,
                "a string or an array of content parts",
                other,
            )),
        }
    }

    /// Any value: every string in it is text, except under the keys that are never text.
    fn anything(&mut self, at: At<'_, '_>, raw: &RawValue) -> Result<(), WardenError> {
        match JsonKind::of(raw.get()) {
            JsonKind::String => self.push_string(at, raw),
            JsonKind::Array => {
                for (i, item) in array(raw, at.path)?.into_iter().enumerate() {
                    let path = format!("{}[{i}]", at.path);
                    self.anything(at.with_path(&path), item)?;
                }
                Ok(())
            }
            JsonKind::Object => {
                let entries = object(raw, at.path)?;
                if not_text_part(&entries) {
                    return Ok(());
                }
                for (key, value) in &entries {
                    let path = format!("{}.{key}", at.path);
                    match key.as_str() {
                        key if NOT_TEXT.contains(&key) => {}
                        "image_url" => self.image(at.with_path(&path), value)?,
                        _ => self.anything(at.with_path(&path), value)?,
                    }
                }
                Ok(())
            }
            JsonKind::Number | JsonKind::Bool | JsonKind::Null => Ok(()),
        }
    }

    /// `image_url`: a URL string (responses) or `{"url": …}` (chat).
    fn image(&mut self, at: At<'_, '_>, raw: &RawValue) -> Result<(), WardenError> {
        let (param, literal) = match JsonKind::of(raw.get()) {
            JsonKind::String => (at.path.to_owned(), raw),
            JsonKind::Object => {
                let entries = object(raw, at.path)?;
                match entries.into_iter().rev().find(|(k, _)| k == "url") {
                    Some((_, url)) if JsonKind::of(url.get()) == JsonKind::String => {
                        (format!("{}.url", at.path), url)
                    }
                    Some((_, url)) => {
                        return Err(wrong_shape(
                            &format!("{}.url", at.path),
                            "a string",
                            JsonKind::of(url.get()),
                        ))
                    }
                    None => return Ok(()),
                }
            }
            JsonKind::Null => return Ok(()),
            other => return Err(wrong_shape(at.path, "a string or an object", other)),
        };
        let url = decode(literal.get()).ok_or_else(|| unreadable(&param))?;
        self.out.images.push(ImageRef { param, url });
        Ok(())
    }

    /// Responses `instructions`: the application's system prompt.
    fn instructions(&mut self, at: At<'_, '_>, raw: &RawValue) -> Result<(), WardenError> {
        let at = At {
            instructions: true,
            ..at
        };
        match JsonKind::of(raw.get()) {
            JsonKind::Array => self.responses_input(at, raw),
            _ => self.string(at, raw),
        }
    }

    /// Responses `prompt`: a stored template whose `variables` the client fills in.
    fn prompt_template(&mut self, at: At<'_, '_>, raw: &RawValue) -> Result<(), WardenError> {
        match JsonKind::of(raw.get()) {
            JsonKind::Object => {}
            JsonKind::Null => return Ok(()),
            other => return Err(wrong_shape(at.path, "an object", other)),
        }
        for (key, value) in object(raw, at.path)? {
            if key == "variables" {
                let path = format!("{}.variables", at.path);
                self.anything(at.with_path(&path), value)?;
            }
        }
        Ok(())
    }

    /// A Realtime session config (or a `response.create`'s overrides): `instructions` and
    /// tool descriptions are the application's; `input` items are walked like messages.
    /// The rest (voice, formats, modalities) is configuration, not text.
    fn realtime_config(&mut self, at: At<'_, '_>, raw: &RawValue) -> Result<(), WardenError> {
        match JsonKind::of(raw.get()) {
            JsonKind::Object => {}
            JsonKind::Null => return Ok(()),
            other => return Err(wrong_shape(at.path, "an object", other)),
        }
        for (key, value) in object(raw, at.path)? {
            let path = format!("{}.{key}", at.path);
            let at = at.with_path(&path);
            match key.as_str() {
                "instructions" => self.instructions(at, value)?,
                "tools" => self.descriptions(at, value)?,
                "prompt" => self.prompt_template(at, value)?,
                "input" => match JsonKind::of(value.get()) {
                    JsonKind::Array => self.items(at, value)?,
                    other => return Err(wrong_shape(&path, "an array of items", other)),
                },
                _ => {}
            }
        }
        Ok(())
    }

    /// One Realtime conversation item (`conversation.item.create`), walked like a message.
    fn realtime_item(&mut self, at: At<'_, '_>, raw: &RawValue) -> Result<(), WardenError> {
        let entries = object(raw, at.path)?;
        let at = At {
            instructions: from_the_application(&entries),
            role: role_of(&entries),
            ..at
        };
        self.item_entries(at, &entries)
    }

    /// Tool and schema definitions: the application's text the model reads is in their
    /// `description`s (names and schemas are identifiers).
    fn descriptions(&mut self, at: At<'_, '_>, raw: &RawValue) -> Result<(), WardenError> {
        let at = At {
            instructions: true,
            ..at
        };
        self.descriptions_in(at, raw)
    }

    fn descriptions_in(&mut self, at: At<'_, '_>, raw: &RawValue) -> Result<(), WardenError> {
        match JsonKind::of(raw.get()) {
            JsonKind::Array => {
                for (i, item) in array(raw, at.path)?.into_iter().enumerate() {
                    let path = format!("{}[{i}]", at.path);
                    self.descriptions_in(at.with_path(&path), item)?;
                }
            }
            JsonKind::Object => {
                for (key, value) in object(raw, at.path)? {
                    let path = format!("{}.{key}", at.path);
                    let at = at.with_path(&path);
                    // A schema property may itself be named "description": only a string
                    // under that key is text.
                    if key == "description" && JsonKind::of(value.get()) == JsonKind::String {
                        self.push_string(at, value)?;
                    } else {
                        self.descriptions_in(at, value)?;
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// Whether a message's `role` says the application wrote it (`system`, `developer`).
/// With a repeated `role`, every one must say so: parsers differ on which one wins.
fn from_the_application(entries: &[(String, &RawValue)]) -> bool {
    let mut roles = entries.iter().filter(|(k, _)| k == "role").peekable();
    roles.peek().is_some()
        && roles.all(|(_, v)| matches!(v.get(), r#""system""# | r#""developer""#))
}

/// A message's role; with a repeated `role`, the last (as most parsers read it).
fn role_of(entries: &[(String, &RawValue)]) -> Option<Role> {
    entries
        .iter()
        .rev()
        .find(|(k, _)| k == "role")
        .map(|(_, v)| Role::of(v))
}

/// A part or item whose `type` says it carries no text (audio, files). With a repeated
/// `type`, every one must say so.
fn not_text_part(entries: &[(String, &RawValue)]) -> bool {
    let mut types = entries.iter().filter(|(k, _)| k == "type").peekable();
    types.peek().is_some()
        && types.all(|(_, v)| decode(v.get()).is_some_and(|t| NOT_TEXT_PARTS.contains(&t.as_str())))
}

/// A JSON string literal's text. The body guard already refused lone surrogates, so a
/// failure here is a literal no JSON parser reads the same way.
fn decode(literal: &str) -> Option<String> {
    if !literal.starts_with('"') || literal.len() < 2 {
        return None;
    }
    if !literal.contains('\\') {
        return literal.get(1..literal.len() - 1).map(str::to_owned);
    }
    serde_json::from_str::<String>(literal).ok()
}

fn array<'a>(raw: &'a RawValue, path: &str) -> Result<Vec<&'a RawValue>, WardenError> {
    match JsonKind::of(raw.get()) {
        JsonKind::Array => serde_json::from_str(raw.get()).map_err(|_| unreadable(path)),
        other => Err(wrong_shape(path, "an array", other)),
    }
}

/// An object's entries in order. A repeated key keeps every value: JSON parsers differ on
/// which one wins (most take the last, some the first), so each is checked.
fn object<'a>(raw: &'a RawValue, path: &str) -> Result<Vec<(String, &'a RawValue)>, WardenError> {
    let kind = JsonKind::of(raw.get());
    if kind != JsonKind::Object {
        return Err(wrong_shape(path, "an object", kind));
    }
    let mut de = serde_json::Deserializer::from_str(raw.get());
    de.deserialize_map(EntriesVisitor)
        .map_err(|_| unreadable(path))
}

fn wrong_shape(path: &str, expected: &'static str, got: JsonKind) -> WardenError {
    WardenError::invalid_shape(path, expected, got.described())
}

fn unreadable(path: &str) -> WardenError {
    WardenError::invalid_shape(path, "readable JSON", "a value Warden cannot decode")
}

struct EntriesVisitor;

impl<'de> Visitor<'de> for EntriesVisitor {
    type Value = Vec<(String, &'de RawValue)>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut entries: Self::Value = Vec::new();
        while let Some(entry) = map.next_entry::<String, &'de RawValue>()? {
            entries.push(entry);
        }
        Ok(entries)
    }
}

#[cfg(test)]
mod tests;
