//! `multipart/form-data` bodies a check has to read (a batch file, an image-edit prompt):
//! parsed within the route's cap, their text fields shown to the stages as a small JSON
//! object (so the same filters, moderation and identifier writing apply), then rebuilt with
//! whatever the stages changed and a fresh boundary.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::WardenError;
use crate::json_body::JsonBody;

/// The end-user fields the identifier stage may add to a form.
const ADDED_FIELDS: [&str; 2] = ["user", "safety_identifier"];

#[derive(Debug, Clone)]
pub struct Part {
    pub name: String,
    pub filename: Option<String>,
    pub content_type: Option<String>,
    pub data: Bytes,
}

impl Part {
    pub fn is_file(&self) -> bool {
        self.filename.is_some()
    }

    pub fn text(&self) -> Option<&str> {
        (!self.is_file())
            .then(|| std::str::from_utf8(&self.data).ok())
            .flatten()
    }
}

#[derive(Debug, Clone, Default)]
pub struct Form {
    pub parts: Vec<Part>,
}

impl Form {
    /// Parses a whole body; `content_type` must be `multipart/form-data; boundary=…`.
    pub async fn parse(body: Bytes, content_type: Option<&str>) -> Result<Form, WardenError> {
        let content_type = content_type.ok_or_else(|| {
            WardenError::MalformedMultipart(
                "no Content-Type header (expected multipart/form-data)".into(),
            )
        })?;
        let boundary = multer::parse_boundary(content_type).map_err(|_| {
            WardenError::MalformedMultipart(format!(
                "Content-Type '{content_type}' is not multipart/form-data with a boundary"
            ))
        })?;
        let stream = futures_util::stream::once(async move { Ok::<_, std::io::Error>(body) });
        let mut multipart = multer::Multipart::new(stream, boundary);
        let mut parts = Vec::new();
        loop {
            let field = match multipart.next_field().await {
                Ok(Some(field)) => field,
                Ok(None) => break,
                Err(err) => return Err(WardenError::MalformedMultipart(err.to_string())),
            };
            let name = field.name().unwrap_or_default().to_owned();
            let filename = field.file_name().map(str::to_owned);
            let content_type = field.content_type().map(|m| m.to_string());
            let data = field
                .bytes()
                .await
                .map_err(|err| WardenError::MalformedMultipart(err.to_string()))?;
            parts.push(Part {
                name,
                filename,
                content_type,
                data,
            });
        }
        if parts.is_empty() {
            return Err(WardenError::MalformedMultipart(
                "the form has no fields".into(),
            ));
        }
        Ok(Form { parts })
    }

    /// The first non-file field called `name`, as text.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.parts
            .iter()
            .find(|p| p.name == name && !p.is_file())
            .and_then(Part::text)
    }

    /// The first file part called `name`.
    pub fn file(&self, name: &str) -> Option<&Part> {
        self.parts.iter().find(|p| p.name == name && p.is_file())
    }

    /// The text fields that appear once, as a JSON object the stages can read and rewrite.
    pub fn fields_as_json(&self) -> Result<JsonBody, WardenError> {
        let mut object = serde_json::Map::new();
        for part in &self.parts {
            if part.is_file() || self.parts.iter().filter(|p| p.name == part.name).count() > 1 {
                continue;
            }
            if let Some(text) = part.text() {
                object.insert(
                    part.name.clone(),
                    serde_json::Value::String(text.to_owned()),
                );
            }
        }
        let bytes = serde_json::to_vec(&object).map_err(|_| WardenError::Internal)?;
        JsonBody::parse(&bytes)
    }

    /// The form as it goes upstream: single text fields from `fields` (as the stages left
    /// them), the identifier fields they added, and `file` replacing the file part of that
    /// name. Returns the body and its Content-Type.
    pub fn rebuild(
        &self,
        fields: Option<&JsonBody>,
        file: Option<(&str, Bytes)>,
    ) -> Result<(Bytes, String), WardenError> {
        let boundary = format!("warden-{:032x}", fastrand::u128(..));
        let mut out = BytesMut::with_capacity(
            self.parts.iter().map(|p| p.data.len() + 160).sum::<usize>()
                + file.as_ref().map_or(0, |(_, b)| b.len()),
        );
        let text_of = |name: &str| -> Option<String> {
            let body = fields?;
            let raw = body.raw(name)?;
            serde_json::from_str::<String>(raw.get()).ok()
        };
        for part in &self.parts {
            let data = match (&file, part.is_file()) {
                (Some((name, bytes)), true) if *name == part.name => bytes.clone(),
                (_, false) => match text_of(&part.name) {
                    Some(text) => Bytes::from(text),
                    None => part.data.clone(),
                },
                _ => part.data.clone(),
            };
            write_part(&mut out, &boundary, part, &data)?;
        }
        for name in ADDED_FIELDS {
            if self.parts.iter().any(|p| p.name == name) {
                continue;
            }
            if let Some(text) = text_of(name) {
                let part = Part {
                    name: name.to_owned(),
                    filename: None,
                    content_type: None,
                    data: Bytes::new(),
                };
                write_part(&mut out, &boundary, &part, text.as_bytes())?;
            }
        }
        out.put_slice(format!("--{boundary}--\r\n").as_bytes());
        Ok((
            out.freeze(),
            format!("multipart/form-data; boundary={boundary}"),
        ))
    }
}

fn write_part(
    out: &mut BytesMut,
    boundary: &str,
    part: &Part,
    data: &[u8],
) -> Result<(), WardenError> {
    // A name or file name with a quote or line break would break the header it sits in.
    let clean = |s: &str| !s.contains(['"', '\r', '\n']);
    if !clean(&part.name) || part.filename.as_deref().is_some_and(|f| !clean(f)) {
        return Err(WardenError::MalformedMultipart(
            "a field or file name contains a quote or a line break".into(),
        ));
    }
    out.put_slice(format!("--{boundary}\r\n").as_bytes());
    match &part.filename {
        Some(filename) => out.put_slice(
            format!(
                "Content-Disposition: form-data; name=\"{}\"; filename=\"{filename}\"\r\n",
                part.name
            )
            .as_bytes(),
        ),
        None => out.put_slice(
            format!("Content-Disposition: form-data; name=\"{}\"\r\n", part.name).as_bytes(),
        ),
    }
    if let Some(content_type) = &part.content_type {
        out.put_slice(format!("Content-Type: {content_type}\r\n").as_bytes());
    }
    out.put_slice(b"\r\n");
    out.put_slice(data);
    out.put_slice(b"\r\n");
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const FORM: &str = "--XyZ\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"b.jsonl\"\r\nContent-Type: application/jsonl\r\n\r\n{\"a\":1}\n\r\n--XyZ--\r\n";

    #[tokio::test]
    async fn parses_and_rebuilds_with_a_replaced_file_and_added_user() {
        let form = Form::parse(
            Bytes::from_static(FORM.as_bytes()),
            Some("multipart/form-data; boundary=XyZ"),
        )
        .await
        .unwrap();
        assert_eq!(form.field("purpose"), Some("batch"));
        assert_eq!(&form.file("file").unwrap().data[..], b"{\"a\":1}\n");
        let mut fields = form.fields_as_json().unwrap();
        fields.set_str("user", "u-1");
        let (body, content_type) = form
            .rebuild(
                Some(&fields),
                Some(("file", Bytes::from_static(b"{\"b\":2}\n"))),
            )
            .unwrap();
        let again = Form::parse(body, Some(&content_type)).await.unwrap();
        assert_eq!(again.field("purpose"), Some("batch"));
        assert_eq!(again.field("user"), Some("u-1"));
        assert_eq!(&again.file("file").unwrap().data[..], b"{\"b\":2}\n");
        assert_eq!(
            again.file("file").unwrap().filename.as_deref(),
            Some("b.jsonl")
        );
    }

    #[tokio::test]
    async fn malformed_forms_are_refused() {
        let err = Form::parse(
            Bytes::from_static(b"--XyZ\r\nnot a header\r\n"),
            Some("multipart/form-data; boundary=XyZ"),
        )
        .await
        .unwrap_err();
        assert_eq!(err.code(), "invalid_multipart");
        let err = Form::parse(
            Bytes::from_static(FORM.as_bytes()),
            Some("application/json"),
        )
        .await
        .unwrap_err();
        assert_eq!(err.code(), "invalid_multipart");
    }
}
