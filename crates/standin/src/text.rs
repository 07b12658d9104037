//! The deterministic reply text, rough token counts, ids and timestamps shared by the endpoints.

use serde_json::Value;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// How many characters of the user's text the reply quotes.
const QUOTED_CHARS: usize = 40;

/// `Hello from the stand-in. You said: <first 40 chars of the last user text>`.
pub(crate) fn reply(user_text: &str) -> String {
    let quoted: String = user_text.chars().take(QUOTED_CHARS).collect();
    format!("Hello from the stand-in. You said: {quoted}")
}

/// The header whose value replaces the reply text (`\n` in it is read as a newline).
pub(crate) const REPLY_HEADER: &str = "x-standin-reply";

/// The scripted reply when the call carried one, else the echo of [`reply`].
pub(crate) fn reply_to(scripted: Option<&str>, user_text: &str) -> String {
    match scripted {
        Some(text) => text.replace("\\n", "\n"),
        None => reply(user_text),
    }
}

/// How a streamed reply is cut: `chunk_chars` characters per piece, or word by word.
pub(crate) fn stream_pieces(text: &str, chunk_chars: Option<usize>) -> Vec<&str> {
    let Some(size) = chunk_chars.filter(|n| *n > 0) else {
        return pieces(text);
    };
    let mut out = Vec::new();
    let mut start = 0;
    for (count, (i, _)) in text.char_indices().enumerate() {
        if count > 0 && count % size == 0 {
            out.push(&text[start..i]);
            start = i;
        }
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out
}

/// A rough, deterministic token estimate: whitespace-separated words.
pub(crate) fn tokens(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// Splits text into word-sized pieces that concatenate back to it (`"a b"` → `"a"`, `" b"`).
pub(crate) fn pieces(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut in_word = false;
    for (i, c) in text.char_indices() {
        if c.is_whitespace() {
            if in_word {
                out.push(&text[start..i]);
                start = i;
                in_word = false;
            }
        } else {
            in_word = true;
        }
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out
}

/// The text of a message `content`: a string, or the `text` of its text parts joined by spaces.
pub(crate) fn content_text(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|part| part.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// Seconds since the Unix epoch.
pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}

/// A fresh id: `prefix` followed by 32 hex digits, unique within the process.
pub(crate) fn id(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static SEED: OnceLock<u64> = OnceLock::new();
    let seed = *SEED.get_or_init(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos() as u64)
            .unwrap_or(0x5eed)
            ^ u64::from(std::process::id())
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "{prefix}{:016x}{:016x}",
        mix(seed ^ n),
        mix(n.wrapping_add(seed).rotate_left(17))
    )
}

/// splitmix64: a cheap, well-spread 64-bit mix.
pub(crate) fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The text that makes the stand-in refuse the request's end user, as OpenAI does once it
/// has acted on a `safety_identifier`.
pub(crate) const REFUSE_USER: &str = "REFUSE_USER";

/// A 400 naming the request's `safety_identifier` when the user text asks for it.
pub(crate) fn refuse_user(
    user_text: &str,
    safety_identifier: Option<&str>,
) -> Option<crate::errors::ApiError> {
    let sid = safety_identifier.filter(|_| user_text.contains(REFUSE_USER))?;
    Some(
        crate::errors::ApiError::invalid_request(format!(
            "Access to this model has been restricted for the end user with safety_identifier '{sid}' for violating our usage policies."
        ))
        .param("safety_identifier")
        .code("safety_identifier_restricted"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reply_quotes_forty_chars() {
        let long = "x".repeat(100);
        assert_eq!(
            reply(&long),
            format!("Hello from the stand-in. You said: {}", "x".repeat(40))
        );
        assert_eq!(reply("hi"), "Hello from the stand-in. You said: hi");
    }

    #[test]
    fn scripted_replies_and_char_pieces() {
        assert_eq!(reply_to(Some("a\\nb"), "ignored"), "a\nb");
        assert!(reply_to(None, "hi").ends_with("You said: hi"));
        assert_eq!(stream_pieces("abcdé fg", Some(3)), vec!["abc", "dé ", "fg"]);
        assert_eq!(stream_pieces("a b", None), vec!["a", " b"]);
    }

    #[test]
    fn pieces_concatenate_back() {
        let text = "Hello from  the stand-in. ";
        let parts = pieces(text);
        assert_eq!(parts.concat(), text);
        assert_eq!(parts, vec!["Hello", " from", "  the", " stand-in.", " "]);
        assert!(pieces("").is_empty());
    }

    #[test]
    fn content_text_reads_parts() {
        let parts = json!([{"type":"text","text":"a"},{"type":"image_url","image_url":{"url":"x"}},{"type":"text","text":"b"}]);
        assert_eq!(content_text(&parts), "a b");
        assert_eq!(content_text(&json!("plain")), "plain");
    }

    #[test]
    fn ids_are_unique() {
        assert_ne!(id("chatcmpl-"), id("chatcmpl-"));
        assert!(id("req_").starts_with("req_"));
    }
}
