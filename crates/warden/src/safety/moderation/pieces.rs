//! What gets moderated: the text and image pieces of a request body, each named by the
//! parameter path it came from (for `param` in a refusal), and long text cut into chunks.
//! The text comes from the one request-text extractor, `safety::text`; only images are
//! found here.

use serde_json::Value;

use crate::endpoint::Endpoint;
use crate::json_body::JsonBody;
use crate::safety::text;

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

/// The pieces of a request body the Moderation endpoint should see: every user text (as
/// the local filters read it), then the images. Fields of a shape Warden does not know
/// are skipped, not refused: upstream answers those.
pub fn of_request(endpoint: Endpoint, body: &JsonBody) -> Vec<Piece> {
    let mut out: Vec<Piece> = text::texts(endpoint, body)
        .into_iter()
        .filter(|t| !t.text.trim().is_empty())
        .map(|t| Piece::text(t.param, t.text.into_owned()))
        .collect();
    let field = match endpoint {
        Endpoint::ChatCompletions => "messages",
        Endpoint::Responses => "input",
        _ => return out,
    };
    // Most bodies carry no image: skip parsing the field again.
    let Some(raw) = body.raw(field).filter(|r| r.get().contains("image")) else {
        return out;
    };
    if let Ok(Value::Array(items)) = serde_json::from_str::<Value>(raw.get()) {
        for (i, item) in items.iter().enumerate() {
            let Some(Value::Array(parts)) = item.get("content") else {
                continue;
            };
            for (j, part) in parts.iter().enumerate() {
                image(&format!("{field}[{i}].content[{j}]"), part, &mut out);
            }
        }
    }
    out
}

/// An image part of chat (`image_url.url`) or responses (`input_image`'s `image_url`).
fn image(path: &str, part: &Value, out: &mut Vec<Piece>) {
    let (param, url) = match part.get("type").and_then(Value::as_str) {
        Some("image_url") => (
            format!("{path}.image_url.url"),
            part.pointer("/image_url/url"),
        ),
        // `image_url` is a plain string here; `file_id` images cannot be fetched.
        Some("input_image") => (format!("{path}.image_url"), part.get("image_url")),
        _ => return,
    };
    if let Some(Value::String(url)) = url {
        out.push(Piece {
            param,
            content: Content::Image(url.clone()),
        });
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
                Piece::text("messages[2].tool_calls[0].function.arguments", r#"{"a":1}"#),
                Piece {
                    param: "messages[1].content[1].image_url.url".into(),
                    content: Content::Image("https://x/y.png".into())
                },
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
                "input[0].content[0].text",
                "input[1].output",
                "instructions",
                "input[0].content[1].image_url",
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
