//! A request body parsed once, at the top level only: nested values stay as raw JSON text,
//! so unknown fields (and every field no stage touches) reach upstream byte for byte.
//! Before that parse, [`guard`] refuses what the top-level parse would let through unread:
//! nesting past any parser's limit and lone surrogate escapes.

pub mod guard;

use bytes::{BufMut, Bytes, BytesMut};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use std::fmt;

use crate::error::WardenError;

#[derive(Debug)]
pub struct JsonBody {
    fields: Vec<(String, Box<RawValue>)>,
    changed: bool,
}

impl JsonBody {
    pub fn parse(bytes: &[u8]) -> Result<JsonBody, WardenError> {
        guard::check(bytes)?;
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let repeated = std::cell::Cell::new(false);
        let fields = de
            .deserialize_map(FieldsVisitor {
                repeated: &repeated,
            })
            .map_err(|err| {
                if err.classify() == serde_json::error::Category::Data {
                    WardenError::BodyNotObject
                } else {
                    WardenError::MalformedJson(describe(&err))
                }
            })?;
        de.end()
            .map_err(|err| WardenError::MalformedJson(describe(&err)))?;
        Ok(JsonBody {
            fields,
            changed: repeated.get(),
        })
    }

    pub fn raw(&self, name: &str) -> Option<&RawValue> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_ref())
    }

    /// The field as a string; `Ok(None)` when absent or null; a typed error otherwise.
    pub fn str_field(&self, name: &'static str) -> Result<Option<String>, WardenError> {
        match self.raw(name) {
            None => Ok(None),
            Some(raw) => match serde_json::from_str::<serde_json::Value>(raw.get()) {
                Ok(serde_json::Value::String(s)) => Ok(Some(s)),
                Ok(serde_json::Value::Null) => Ok(None),
                Ok(other) => Err(wrong_type(name, "a string", &other)),
                Err(_) => Err(WardenError::Internal),
            },
        }
    }

    pub fn bool_field(&self, name: &'static str) -> Result<Option<bool>, WardenError> {
        match self.raw(name).map(RawValue::get) {
            None | Some("null") => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(text) => Err(WardenError::InvalidType {
                param: name,
                expected: "a boolean",
                got: kind_of_text(text),
            }),
        }
    }

    /// Checks the JSON kind of a field without parsing it: `[`, `{`, `"`, …
    pub fn expect_kind(
        &self,
        name: &'static str,
        allowed: &[JsonKind],
        expected: &'static str,
    ) -> Result<(), WardenError> {
        match self.raw(name) {
            None => Ok(()),
            Some(raw) => {
                let kind = JsonKind::of(raw.get());
                if allowed.contains(&kind) {
                    Ok(())
                } else {
                    Err(WardenError::InvalidType {
                        param: name,
                        expected,
                        got: kind.described(),
                    })
                }
            }
        }
    }

    pub fn set_str(&mut self, name: &str, value: &str) {
        let encoded = serde_json::to_string(value).unwrap_or_else(|_| "\"\"".into());
        let raw = RawValue::from_string(encoded).unwrap_or_else(|_| null());
        match self.fields.iter_mut().find(|(k, _)| k == name) {
            Some((_, slot)) => *slot = raw,
            None => self.fields.push((name.to_owned(), raw)),
        }
        self.changed = true;
    }

    /// Replaces a top-level field with already-encoded JSON (nested rewrites splice their
    /// change into the field's raw text first, so the rest of it stays byte for byte).
    pub fn set_raw(&mut self, name: &str, raw: Box<RawValue>) {
        match self.fields.iter_mut().find(|(k, _)| k == name) {
            Some((_, slot)) => *slot = raw,
            None => self.fields.push((name.to_owned(), raw)),
        }
        self.changed = true;
    }

    /// Drops a top-level field (a client value Warden must not forward).
    pub fn remove(&mut self, name: &str) -> bool {
        let before = self.fields.len();
        self.fields.retain(|(k, _)| k != name);
        let removed = self.fields.len() != before;
        self.changed |= removed;
        removed
    }

    pub fn contains(&self, name: &str) -> bool {
        self.raw(name).is_some()
    }

    pub fn changed(&self) -> bool {
        self.changed
    }

    /// The body to send: written anew from the raw fields.
    pub fn to_bytes(&self, size_hint: usize) -> Bytes {
        let mut out = BytesMut::with_capacity(size_hint + 96);
        out.put_u8(b'{');
        for (i, (key, value)) in self.fields.iter().enumerate() {
            if i > 0 {
                out.put_u8(b',');
            }
            let key = serde_json::to_string(key).unwrap_or_else(|_| "\"\"".into());
            out.put_slice(key.as_bytes());
            out.put_u8(b':');
            out.put_slice(value.get().as_bytes());
        }
        out.put_u8(b'}');
        out.freeze()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonKind {
    Object,
    Array,
    String,
    Number,
    Bool,
    Null,
}

impl JsonKind {
    pub fn of(raw: &str) -> JsonKind {
        match raw.as_bytes().first() {
            Some(b'{') => JsonKind::Object,
            Some(b'[') => JsonKind::Array,
            Some(b'"') => JsonKind::String,
            Some(b't') | Some(b'f') => JsonKind::Bool,
            Some(b'n') => JsonKind::Null,
            _ => JsonKind::Number,
        }
    }

    pub fn described(self) -> &'static str {
        match self {
            JsonKind::Object => "an object",
            JsonKind::Array => "an array",
            JsonKind::String => "a string",
            JsonKind::Number => "a number",
            JsonKind::Bool => "a boolean",
            JsonKind::Null => "null",
        }
    }
}

fn kind_of_text(text: &str) -> &'static str {
    JsonKind::of(text).described()
}

fn wrong_type(name: &'static str, expected: &'static str, got: &serde_json::Value) -> WardenError {
    WardenError::InvalidType {
        param: name,
        expected,
        got: JsonKind::of(&got.to_string()).described(),
    }
}

fn null() -> Box<RawValue> {
    RawValue::from_string("null".into()).unwrap_or_default()
}

fn describe(err: &serde_json::Error) -> String {
    let what = match err.classify() {
        serde_json::error::Category::Eof => "unexpected end of input".to_owned(),
        _ => {
            // serde's text ends with " at line L column C"; keep only the cause.
            let text = err.to_string();
            text.split(" at line ").next().unwrap_or(&text).to_owned()
        }
    };
    format!("{what} at line {} column {}", err.line(), err.column())
}

struct FieldsVisitor<'r> {
    repeated: &'r std::cell::Cell<bool>,
}

impl<'de> Visitor<'de> for FieldsVisitor<'_> {
    type Value = Vec<(String, Box<RawValue>)>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields: Vec<(String, Box<RawValue>)> =
            Vec::with_capacity(map.size_hint().unwrap_or(8));
        while let Some((key, value)) = map.next_entry::<String, Box<RawValue>>()? {
            // JSON with a repeated key: the last one wins, as in most parsers. The body is
            // then rewritten on the way out (`changed`), so upstream sees only that one
            // whatever its parser picks.
            if let Some(slot) = fields.iter_mut().find(|(k, _)| *k == key) {
                slot.1 = value;
                self.repeated.set(true);
            } else {
                fields.push((key, value));
            }
        }
        Ok(fields)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    #[test]
    fn untouched_fields_keep_their_exact_text() {
        let text = br#"{"model":"m","moderation":{"policy":{"input":{"mode":"score"}}} ,"n": 1.50,"x":[1, 2]}"#;
        let mut body = JsonBody::parse(text).unwrap();
        body.set_str("safety_identifier", "abc");
        let out = body.to_bytes(text.len());
        let out = std::str::from_utf8(&out).unwrap();
        assert!(out.contains(r#""moderation":{"policy":{"input":{"mode":"score"}}}"#));
        assert!(out.contains(r#""n":1.50"#));
        assert!(out.contains(r#""x":[1, 2]"#));
        assert!(out.ends_with(r#""safety_identifier":"abc"}"#));
        assert!(body.changed());
    }

    #[test]
    fn a_repeated_top_level_key_is_forwarded_once() {
        let body = JsonBody::parse(br#"{"model":"a","messages":[1],"model":"b"}"#).unwrap();
        assert!(body.changed());
        assert_eq!(&body.to_bytes(0)[..], br#"{"model":"b","messages":[1]}"#);
    }

    #[test]
    fn replacing_keeps_position() {
        let mut body = JsonBody::parse(br#"{"user":"alice","model":"m"}"#).unwrap();
        body.set_str("user", "h");
        assert_eq!(&body.to_bytes(0)[..], br#"{"user":"h","model":"m"}"#);
    }

    #[test]
    fn malformed_json_says_where() {
        let err = JsonBody::parse(b"{\"model\": \"m\",\n \"x\": }").unwrap_err();
        let WardenError::MalformedJson(detail) = err else {
            panic!("{err:?}")
        };
        assert!(detail.contains("line 2"), "{detail}");
    }

    #[test]
    fn invalid_utf8_is_malformed() {
        let err = JsonBody::parse(b"{\"model\": \"\xff\xfe\"}").unwrap_err();
        assert!(matches!(err, WardenError::MalformedJson(_)), "{err:?}");
    }

    #[test]
    fn non_objects_and_trailing_garbage_are_refused() {
        assert!(matches!(
            JsonBody::parse(b"[1,2]").unwrap_err(),
            WardenError::BodyNotObject
        ));
        assert!(matches!(
            JsonBody::parse(b"{} x").unwrap_err(),
            WardenError::MalformedJson(_)
        ));
        assert!(matches!(
            JsonBody::parse(b"").unwrap_err(),
            WardenError::MalformedJson(_)
        ));
    }

    #[test]
    fn typed_reads() {
        let body =
            JsonBody::parse(br#"{"stream":"yes","user":5,"model":"m","messages":"hi"}"#).unwrap();
        assert!(matches!(
            body.bool_field("stream").unwrap_err(),
            WardenError::InvalidType {
                param: "stream",
                ..
            }
        ));
        assert!(body.str_field("user").is_err());
        assert_eq!(body.str_field("model").unwrap().as_deref(), Some("m"));
        assert!(body
            .expect_kind("messages", &[JsonKind::Array], "an array")
            .is_err());
    }
}
