//! What gets moderated: the text and image pieces of a request body, each named by the
//! parameter path it came from (for `param` in a refusal), and long text cut into chunks.
//! Both come from the one request-text extraction, `openai::request_text`.

use crate::openai::RequestTexts;

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

/// The pieces the Moderation endpoint should see: every text (blank ones add nothing),
/// then the images.
pub fn of_request(texts: &RequestTexts) -> Vec<Piece> {
    let words = texts
        .texts
        .iter()
        .filter(|t| !t.text.trim().is_empty())
        .map(|t| Piece::text(t.param.clone(), t.text.clone()));
    let images = texts.images.iter().map(|i| Piece {
        param: i.param.clone(),
        content: Content::Image(i.url.clone()),
    });
    words.chain(images).collect()
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

    use crate::endpoint::Endpoint;
    use crate::json_body::JsonBody;

    fn parse(endpoint: Endpoint, body: &str) -> Vec<Piece> {
        let body = JsonBody::parse(body.as_bytes()).unwrap();
        of_request(&crate::openai::extract(endpoint, &body, None).unwrap())
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
                Piece::text("messages[2].tool_calls[0].function.name", "f"),
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
            vec![
                Piece::text("prompt[0]", "a"),
                // Token ids are decoded: the model reads them as text.
                Piece::text("prompt[1]", "\"#"),
                Piece::text("prompt[2]", "b")
            ]
        );
        assert_eq!(
            parse(Endpoint::Embeddings, r#"{"input":[1,2,3]}"#),
            vec![Piece::text("input", "\"#$")]
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
