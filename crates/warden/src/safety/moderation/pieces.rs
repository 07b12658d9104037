//! What gets moderated: the text and image pieces of a request body, each named by the
//! parameter path it came from (for `param` in a refusal), and long text cut into chunks.
//!
//! TODO(merge): a shared `safety/text.rs` extractor is being written for the local
//! filters; once it exists this file should keep only `chunks` and the image pieces.

use serde_json::Value;

use crate::endpoint::Endpoint;
use crate::json_body::JsonBody;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    Text(String),
    /// An `https://…` or `data:image/…` URL.
    Image(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    /// e.g. `messages[2].content[0].text`, `input`, `prompt`.
    pub param: String,
    pub content: Content,
}

impl Piece {
    pub fn text(param: impl Into<String>, text: impl Into<String>) -> Piece {
        Piece {
            param: param.into(),
            content: Content::Text(text.into()),
        }
    }
}

/// The pieces of a request body the Moderation endpoint should see. Fields of a shape
/// Warden does not know are skipped, not refused: upstream answers those.
pub fn of_request(endpoint: Endpoint, body: &JsonBody) -> Vec<Piece> {
    let field = |name: &str| -> Option<Value> {
        body.raw(name)
            .and_then(|raw| serde_json::from_str(raw.get()).ok())
    };
    let mut out = Vec::new();
    match endpoint {
        Endpoint::ChatCompletions => {
            if let Some(Value::Array(messages)) = field("messages") {
                for (i, message) in messages.iter().enumerate() {
                    chat_message(&format!("messages[{i}]"), message, &mut out);
                }
            }
        }
        Endpoint::Responses => {
            if let Some(Value::String(text)) = field("instructions") {
                out.push(Piece::text("instructions", text));
            }
            match field("input") {
                Some(Value::String(text)) => out.push(Piece::text("input", text)),
                Some(Value::Array(items)) => {
                    for (i, item) in items.iter().enumerate() {
                        response_item(&format!("input[{i}]"), item, &mut out);
                    }
                }
                _ => {}
            }
        }
        Endpoint::Completions => strings("prompt", field("prompt"), &mut out),
        Endpoint::Embeddings => strings("input", field("input"), &mut out),
        Endpoint::ImagesGenerations => strings("prompt", field("prompt"), &mut out),
        Endpoint::Moderations | Endpoint::Models | Endpoint::Model => {}
    }
    out.retain(|p| !matches!(&p.content, Content::Text(t) if t.trim().is_empty()));
    out
}

/// A string or an array of strings (token arrays are skipped: they carry no text).
fn strings(param: &str, value: Option<Value>, out: &mut Vec<Piece>) {
    match value {
        Some(Value::String(text)) => out.push(Piece::text(param, text)),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                if let Value::String(text) = item {
                    out.push(Piece::text(format!("{param}[{i}]"), text.clone()));
                }
            }
        }
        _ => {}
    }
}

fn chat_message(path: &str, message: &Value, out: &mut Vec<Piece>) {
    match message.get("content") {
        Some(Value::String(text)) => out.push(Piece::text(format!("{path}.content"), text.clone())),
        Some(Value::Array(parts)) => {
            for (j, part) in parts.iter().enumerate() {
                content_part(&format!("{path}.content[{j}]"), part, out);
            }
        }
        _ => {}
    }
    if let Some(Value::String(text)) = message.get("refusal") {
        out.push(Piece::text(format!("{path}.refusal"), text.clone()));
    }
    if let Some(Value::Array(calls)) = message.get("tool_calls") {
        for (j, call) in calls.iter().enumerate() {
            if let Some(Value::String(args)) = call.pointer("/function/arguments") {
                out.push(Piece::text(
                    format!("{path}.tool_calls[{j}].function.arguments"),
                    args.clone(),
                ));
            }
        }
    }
}

/// A content part of chat (`text`, `image_url`) or responses (`input_text`,
/// `output_text`, `input_image`).
fn content_part(path: &str, part: &Value, out: &mut Vec<Piece>) {
    let kind = part.get("type").and_then(Value::as_str).unwrap_or("");
    match kind {
        "text" | "input_text" | "output_text" => {
            if let Some(Value::String(text)) = part.get("text") {
                out.push(Piece::text(format!("{path}.text"), text.clone()));
            }
        }
        "image_url" => {
            if let Some(Value::String(url)) = part.pointer("/image_url/url") {
                out.push(Piece {
                    param: format!("{path}.image_url.url"),
                    content: Content::Image(url.clone()),
                });
            }
        }
        "input_image" => {
            // `image_url` is a plain string here; `file_id` images cannot be fetched.
            if let Some(Value::String(url)) = part.get("image_url") {
                out.push(Piece {
                    param: format!("{path}.image_url"),
                    content: Content::Image(url.clone()),
                });
            }
        }
        _ => {}
    }
}

fn response_item(path: &str, item: &Value, out: &mut Vec<Piece>) {
    match item.get("content") {
        Some(Value::String(text)) => out.push(Piece::text(format!("{path}.content"), text.clone())),
        Some(Value::Array(parts)) => {
            for (j, part) in parts.iter().enumerate() {
                content_part(&format!("{path}.content[{j}]"), part, out);
            }
        }
        _ => {}
    }
    // Tool results and calls replayed in the input carry text too.
    for field in ["output", "arguments"] {
        if let Some(Value::String(text)) = item.get(field) {
            out.push(Piece::text(format!("{path}.{field}"), text.clone()));
        }
    }
}

/// Cuts text into chunks of at most `max_chars` characters, on char boundaries and, where
/// one is near the end of a chunk, at whitespace, so words stay whole for the classifier.
pub fn chunks(text: &str, max_chars: usize) -> Vec<&str> {
    let max_chars = max_chars.max(1);
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let Some((cut, _)) = rest.char_indices().nth(max_chars) else {
            out.push(rest);
            break;
        };
        // Prefer the last whitespace in the final tenth of the chunk.
        let floor = rest[..cut]
            .char_indices()
            .nth(max_chars - max_chars / 10)
            .map_or(cut, |(i, _)| i);
        let at = rest[floor..cut]
            .rfind(char::is_whitespace)
            .map(|i| floor + i + 1)
            .filter(|i| *i < cut && *i > 0)
            .unwrap_or(cut);
        out.push(&rest[..at]);
        rest = &rest[at..];
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parse(endpoint: Endpoint, body: &str) -> Vec<Piece> {
        of_request(endpoint, &JsonBody::parse(body.as_bytes()).unwrap())
    }

    #[test]
    fn chat_messages_parts_images_and_tool_calls() {
        let pieces = parse(
            Endpoint::ChatCompletions,
            r#"{"messages":[
                {"role":"system","content":"be nice"},
                {"role":"user","content":[{"type":"text","text":"look"},{"type":"image_url","image_url":{"url":"https://x/y.png"}}]},
                {"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]},
                {"role":"user","content":"   "}
            ]}"#,
        );
        assert_eq!(
            pieces,
            vec![
                Piece::text("messages[0].content", "be nice"),
                Piece::text("messages[1].content[0].text", "look"),
                Piece {
                    param: "messages[1].content[1].image_url.url".into(),
                    content: Content::Image("https://x/y.png".into())
                },
                Piece::text("messages[2].tool_calls[0].function.arguments", r#"{"a":1}"#),
            ]
        );
    }

    #[test]
    fn responses_completions_embeddings_images() {
        let pieces = parse(
            Endpoint::Responses,
            r#"{"instructions":"sys","input":[{"role":"user","content":[{"type":"input_text","text":"hi"},{"type":"input_image","image_url":"data:image/png;base64,AA"}]},{"type":"function_call_output","call_id":"c","output":"42"}]}"#,
        );
        let params: Vec<&str> = pieces.iter().map(|p| p.param.as_str()).collect();
        assert_eq!(
            params,
            vec![
                "instructions",
                "input[0].content[0].text",
                "input[0].content[1].image_url",
                "input[1].output"
            ]
        );
        assert_eq!(
            parse(Endpoint::Responses, r#"{"input":"plain"}"#),
            vec![Piece::text("input", "plain")]
        );
        assert_eq!(
            parse(Endpoint::Completions, r#"{"prompt":["a",[1,2],"b"]}"#),
            vec![Piece::text("prompt[0]", "a"), Piece::text("prompt[2]", "b")]
        );
        assert_eq!(
            parse(Endpoint::Embeddings, r#"{"input":[1,2,3]}"#),
            Vec::<Piece>::new()
        );
        assert_eq!(
            parse(Endpoint::ImagesGenerations, r#"{"prompt":"a cat"}"#),
            vec![Piece::text("prompt", "a cat")]
        );
        assert!(parse(Endpoint::Moderations, r#"{"input":"x"}"#).is_empty());
    }

    #[test]
    fn chunks_cut_on_char_boundaries_and_prefer_spaces() {
        assert_eq!(chunks("short", 10), vec!["short"]);
        let text = "é".repeat(25);
        let parts = chunks(&text, 10);
        assert_eq!(parts.len(), 3);
        assert_eq!(parts.concat(), text);
        assert!(parts.iter().all(|p| p.chars().count() <= 10));
        let words = "aaaa bbbb cccc dddd eeee ffff";
        let parts = chunks(words, 12);
        assert_eq!(parts.concat(), words);
        assert!(parts.iter().all(|p| p.chars().count() <= 12));
        assert!(parts[0].ends_with(' ') || parts[0].len() == 12);
    }
}
