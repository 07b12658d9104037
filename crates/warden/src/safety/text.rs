//! Finds every piece of user-controlled text in a request body, per endpoint, with the
//! parameter path (`messages[2].content`) and its byte span, so filters read it once and a
//! redaction rewrites exactly that string while every other byte stays as the client sent it.
//! The one extractor of request text: the local filters, the Moderation endpoint's pieces
//! (`moderation::pieces`, which adds the images) and the event digest all read it.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::endpoint::Endpoint;
use crate::error::WardenError;
use crate::json_body::JsonBody;

/// One string of user text inside the body.
#[derive(Debug, Clone)]
pub struct TextRef<'a> {
    /// The top-level field it lives in (`messages`, `input`, …).
    pub field: &'static str,
    /// Where it sits, in OpenAI's `param` notation: `messages[2].content[0].text`.
    pub param: String,
    /// Byte range of the JSON string literal (quotes included) inside the field's raw text.
    pub span: Range<usize>,
    /// The decoded text.
    pub text: Cow<'a, str>,
    /// Written by the application, not its end user: a `system` or `developer` message, or
    /// responses `instructions`. Jailbreak scoring skips these by default: a system prompt
    /// is full of rules and personas ("you are…, never reveal…") and is not an attack.
    pub instructions: bool,
}

/// Every user-controlled text of the body. Moderations are never filtered (checking text
/// is what that endpoint is for), and models carry no body.
pub fn texts(endpoint: Endpoint, body: &JsonBody) -> Vec<TextRef<'_>> {
    let mut out = Vec::new();
    let mut walker = Walker { out: &mut out };
    match endpoint {
        Endpoint::ChatCompletions => walker.field(body, "messages", Walker::messages),
        Endpoint::Responses => {
            walker.field(body, "input", Walker::responses_input);
            walker.field(body, "instructions", Walker::instructions);
        }
        Endpoint::Completions => walker.field(body, "prompt", Walker::string_or_strings),
        Endpoint::Embeddings => walker.field(body, "input", Walker::string_or_strings),
        Endpoint::ImagesGenerations => walker.field(body, "prompt", Walker::string),
        Endpoint::Moderations | Endpoint::Models | Endpoint::Model => {}
    }
    out
}

/// `messages[7].` / `input[3].`: the conversation item the client added last, where a
/// body carries a conversation; texts outside it are earlier turns sent again, judged
/// when they were new (so they must not earn a second strike).
pub fn newest_item(texts: &[TextRef<'_>]) -> Option<String> {
    let last = texts.last()?;
    if !matches!(last.field, "messages" | "input") {
        return None;
    }
    let end = last.param.find(']')?;
    Some(format!("{}.", &last.param[..=end]))
}

/// A new value for one text, found by [`texts`].
#[derive(Debug, Clone)]
pub struct Replacement {
    pub field: &'static str,
    pub span: Range<usize>,
    pub text: String,
}

/// Writes replacements into the body: each touched top-level field is rebuilt by splicing
/// the new string literals into its raw text, so nothing else in it changes.
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
        out.push_str(&serde_json::to_string(&r.text).map_err(|_| WardenError::Internal)?);
        at = r.span.end;
    }
    out.push_str(raw.get(at..).ok_or(WardenError::Internal)?);
    Ok(out)
}

struct Walker<'o, 'a> {
    out: &'o mut Vec<TextRef<'a>>,
}

/// Where the walk is: the field, its raw text (spans are measured from it) and the path so far.
#[derive(Clone, Copy)]
struct At<'a, 'p> {
    field: &'static str,
    base: &'a str,
    path: &'p str,
    instructions: bool,
}

impl<'a> Walker<'_, 'a> {
    fn field(
        &mut self,
        body: &'a JsonBody,
        name: &'static str,
        walk: fn(&mut Self, At<'a, '_>, &'a RawValue),
    ) {
        if let Some(raw) = body.raw(name) {
            let at = At {
                field: name,
                base: raw.get(),
                path: name,
                instructions: false,
            };
            walk(self, at, raw);
        }
    }

    fn string(&mut self, at: At<'a, '_>, raw: &'a RawValue) {
        let literal = raw.get();
        let Some(text) = decode(literal) else {
            return;
        };
        let start = literal.as_ptr() as usize - at.base.as_ptr() as usize;
        self.out.push(TextRef {
            field: at.field,
            param: at.path.to_owned(),
            span: start..start + literal.len(),
            text,
            instructions: at.instructions,
        });
    }

    fn string_or_strings(&mut self, at: At<'a, '_>, raw: &'a RawValue) {
        self.string(at, raw);
        for (i, item) in array(raw).into_iter().enumerate() {
            let path = format!("{}[{i}]", at.path);
            self.string(At { path: &path, ..at }, item);
        }
    }

    /// Chat messages: `content` (a string or parts), `name`, tool results, and replayed
    /// assistant `refusal` and tool-call arguments, whatever the role.
    fn messages(&mut self, at: At<'a, '_>, raw: &'a RawValue) {
        for (i, message) in array(raw).into_iter().enumerate() {
            let entries = object(message);
            let instructions = from_the_application(&entries);
            for (key, value) in entries {
                let path = format!("{}[{i}].{key}", at.path);
                let at = At {
                    path: &path,
                    instructions,
                    ..at
                };
                match key.as_str() {
                    "content" => self.content(at, value),
                    "name" | "refusal" => self.string(at, value),
                    "tool_calls" => self.tool_calls(at, value),
                    _ => {}
                }
            }
        }
    }

    /// `tool_calls[j].function.arguments`.
    fn tool_calls(&mut self, at: At<'a, '_>, raw: &'a RawValue) {
        for (j, call) in array(raw).into_iter().enumerate() {
            for (key, function) in object(call).into_iter().filter(|(k, _)| k == "function") {
                for (_, args) in object(function)
                    .into_iter()
                    .filter(|(k, _)| k == "arguments")
                {
                    let path = format!("{}[{j}].{key}.arguments", at.path);
                    self.string(At { path: &path, ..at }, args);
                }
            }
        }
    }

    /// A string, or an array of parts whose `text` (or tool `output`) is user text.
    fn content(&mut self, at: At<'a, '_>, raw: &'a RawValue) {
        self.string(at, raw);
        for (i, part) in array(raw).into_iter().enumerate() {
            for (key, value) in object(part) {
                if key == "text" || key == "output" {
                    let path = format!("{}[{i}].{key}", at.path);
                    self.string(At { path: &path, ..at }, value);
                }
            }
        }
    }

    /// Responses `input`: a string, or items (messages with content, tool outputs).
    fn responses_input(&mut self, at: At<'a, '_>, raw: &'a RawValue) {
        self.string(at, raw);
        for (i, item) in array(raw).into_iter().enumerate() {
            let entries = object(item);
            let instructions = from_the_application(&entries);
            for (key, value) in entries {
                let path = format!("{}[{i}].{key}", at.path);
                let at = At {
                    path: &path,
                    instructions,
                    ..at
                };
                match key.as_str() {
                    "content" => self.content(at, value),
                    "output" | "arguments" => self.string(at, value),
                    _ => {}
                }
            }
        }
    }
}

impl<'a> Walker<'_, 'a> {
    /// Responses `instructions`: the application's system prompt.
    fn instructions(&mut self, at: At<'a, '_>, raw: &'a RawValue) {
        self.string(
            At {
                instructions: true,
                ..at
            },
            raw,
        );
    }
}

/// Whether a message's `role` says the application wrote it (`system`, `developer`).
fn from_the_application(entries: &[(String, &RawValue)]) -> bool {
    entries
        .iter()
        .any(|(k, v)| k == "role" && matches!(v.get(), r#""system""# | r#""developer""#))
}

/// A JSON string literal's text; borrowed when it has no escapes.
fn decode(literal: &str) -> Option<Cow<'_, str>> {
    if !literal.starts_with('"') {
        return None;
    }
    if !literal.contains('\\') {
        return literal.get(1..literal.len() - 1).map(Cow::Borrowed);
    }
    serde_json::from_str::<String>(literal).ok().map(Cow::Owned)
}

fn array(raw: &RawValue) -> Vec<&RawValue> {
    if !raw.get().starts_with('[') {
        return Vec::new();
    }
    serde_json::from_str(raw.get()).unwrap_or_default()
}

/// An object's entries in order; with a repeated key only the last counts, as upstream.
fn object(raw: &RawValue) -> Vec<(String, &RawValue)> {
    if !raw.get().starts_with('{') {
        return Vec::new();
    }
    let mut de = serde_json::Deserializer::from_str(raw.get());
    de.deserialize_map(EntriesVisitor).unwrap_or_default()
}

struct EntriesVisitor;

impl<'de> Visitor<'de> for EntriesVisitor {
    type Value = Vec<(String, &'de RawValue)>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut entries: Self::Value = Vec::new();
        while let Some((key, value)) = map.next_entry::<String, &'de RawValue>()? {
            match entries.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 = value,
                None => entries.push((key, value)),
            }
        }
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn found(endpoint: Endpoint, body: &[u8]) -> Vec<(String, String)> {
        let body = JsonBody::parse(body).unwrap();
        texts(endpoint, &body)
            .into_iter()
            .map(|t| (t.param, t.text.into_owned()))
            .collect()
    }

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    #[test]
    fn chat_strings_parts_names_and_tool_results() {
        let body = br#"{"model":"m","messages":[
            {"role":"system","content":"be nice"},
            {"role":"user","name":"bob","content":[{"type":"text","text":"hi \"there\""},{"type":"image_url","image_url":{"url":"x"}}]},
            {"role":"tool","tool_call_id":"c","content":"result"}]}"#;
        assert_eq!(
            found(Endpoint::ChatCompletions, body),
            pairs(&[
                ("messages[0].content", "be nice"),
                ("messages[1].name", "bob"),
                ("messages[1].content[0].text", "hi \"there\""),
                ("messages[2].content", "result"),
            ])
        );
    }

    #[test]
    fn responses_completions_embeddings_images() {
        let body = br#"{"input":[{"role":"user","content":[{"type":"input_text","text":"a"}]},{"type":"function_call_output","output":"b"}],"instructions":"c"}"#;
        assert_eq!(
            found(Endpoint::Responses, body),
            pairs(&[
                ("input[0].content[0].text", "a"),
                ("input[1].output", "b"),
                ("instructions", "c")
            ])
        );
        assert_eq!(
            found(Endpoint::Responses, br#"{"input":"x"}"#),
            pairs(&[("input", "x")])
        );
        assert_eq!(
            found(Endpoint::Completions, br#"{"prompt":["p",[1,2]]}"#),
            pairs(&[("prompt[0]", "p")])
        );
        assert_eq!(
            found(Endpoint::Embeddings, br#"{"input":"e"}"#),
            pairs(&[("input", "e")])
        );
        assert_eq!(
            found(Endpoint::ImagesGenerations, br#"{"prompt":"i"}"#),
            pairs(&[("prompt", "i")])
        );
        assert!(found(Endpoint::Moderations, br#"{"input":"x"}"#).is_empty());
    }

    #[test]
    fn replayed_refusals_and_tool_call_arguments_are_text_too() {
        let body = br#"{"messages":[{"role":"assistant","content":null,"refusal":"no","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]}]}"#;
        assert_eq!(
            found(Endpoint::ChatCompletions, body),
            pairs(&[
                ("messages[0].refusal", "no"),
                ("messages[0].tool_calls[0].function.arguments", r#"{"a":1}"#),
            ])
        );
        let body =
            br#"{"input":[{"type":"function_call","call_id":"c","name":"f","arguments":"{}"}]}"#;
        assert_eq!(
            found(Endpoint::Responses, body),
            pairs(&[("input[0].arguments", "{}")])
        );
    }

    #[test]
    fn a_repeated_key_is_read_as_upstream_reads_it() {
        let body =
            br#"{"messages":[{"role":"user","content":"harmless","content":"the real one"}]}"#;
        assert_eq!(
            found(Endpoint::ChatCompletions, body),
            pairs(&[("messages[0].content", "the real one")])
        );
    }

    #[test]
    fn nested_rewrite_keeps_every_other_byte() {
        let text = br#"{"model":"m","messages":[{"role":"user", "content":[{"type":"text","text":"key sk-1"}], "x":1.50}],"n": 2}"#;
        let mut body = JsonBody::parse(text).unwrap();
        let found = texts(Endpoint::ChatCompletions, &body);
        let target = &found[0];
        let replacement = Replacement {
            field: target.field,
            span: target.span.clone(),
            text: "key [REDACTED]".into(),
        };
        apply(&mut body, vec![replacement]).unwrap();
        let out = body.to_bytes(0);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"model":"m","messages":[{"role":"user", "content":[{"type":"text","text":"key [REDACTED]"}], "x":1.50}],"n":2}"#
        );
    }

    #[test]
    fn several_rewrites_in_one_field_and_escapes() {
        let text = br#"{"messages":[{"content":"a\nb"},{"content":"c"}]}"#;
        let mut body = JsonBody::parse(text).unwrap();
        let reps = texts(Endpoint::ChatCompletions, &body)
            .into_iter()
            .rev()
            .map(|t| Replacement {
                field: t.field,
                span: t.span,
                text: format!("<{}>", t.text),
            })
            .collect();
        apply(&mut body, reps).unwrap();
        assert_eq!(
            &body.to_bytes(0)[..],
            br#"{"messages":[{"content":"<a\nb>"},{"content":"<c>"}]}"#
        );
    }
}
