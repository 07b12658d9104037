//! One linear pass over a request body before it is parsed, for the two things the
//! top-level parse lets through: nesting deeper than any parser downstream accepts, and
//! `\u` escapes that name a lone UTF-16 surrogate. Both make OpenAI's parser and Warden's
//! text extraction read different things, so a body with either is refused, never
//! forwarded unchecked.

use crate::error::WardenError;

/// Deepest nesting of arrays and objects accepted (serde_json's own recursion limit,
/// which every later full parse of a field would hit).
pub const MAX_DEPTH: usize = 128;

/// Checks `bytes` (already known to be one JSON value, or about to be parsed as one):
/// at most [`MAX_DEPTH`] levels of nesting, and every `\uD800`–`\uDFFF` escape paired.
/// Syntax errors are left to the parser, which reports them with a position.
pub fn check(bytes: &[u8]) -> Result<(), WardenError> {
    let mut depth = 0usize;
    let mut at = 0usize;
    while at < bytes.len() {
        match bytes[at] {
            b'"' => at = string_end(bytes, at + 1)?,
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(WardenError::MalformedJson(format!(
                        "nesting deeper than {MAX_DEPTH} levels at {}",
                        position(bytes, at)
                    )));
                }
                at += 1;
            }
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                at += 1;
            }
            _ => at += 1,
        }
    }
    Ok(())
}

/// Walks a string from just after its opening quote to just after its closing one,
/// checking each escape. Text without backslashes is skipped with memchr.
fn string_end(bytes: &[u8], mut at: usize) -> Result<usize, WardenError> {
    loop {
        let Some(offset) = memchr::memchr2(b'"', b'\\', &bytes[at..]) else {
            return Ok(bytes.len());
        };
        at += offset;
        if bytes[at] == b'"' {
            return Ok(at + 1);
        }
        // A backslash: `\uXXXX` needs a look; any other escape is two bytes.
        if bytes.get(at + 1) != Some(&b'u') {
            at += 2;
            continue;
        }
        let Some(unit) = hex4(bytes, at + 2) else {
            at += 2;
            continue;
        };
        match unit {
            0xD800..=0xDBFF => {
                let low = (bytes.get(at + 6) == Some(&b'\\') && bytes.get(at + 7) == Some(&b'u'))
                    .then(|| hex4(bytes, at + 8))
                    .flatten();
                match low {
                    Some(0xDC00..=0xDFFF) => at += 12,
                    _ => return Err(lone_surrogate(bytes, at, unit)),
                }
            }
            0xDC00..=0xDFFF => return Err(lone_surrogate(bytes, at, unit)),
            _ => at += 6,
        }
    }
}

fn hex4(bytes: &[u8], at: usize) -> Option<u16> {
    let digits = bytes.get(at..at + 4)?;
    let text = std::str::from_utf8(digits).ok()?;
    u16::from_str_radix(text, 16).ok()
}

fn lone_surrogate(bytes: &[u8], at: usize, unit: u16) -> WardenError {
    WardenError::MalformedJson(format!(
        "the escape \\u{unit:04x} is a lone UTF-16 surrogate, which is not valid Unicode, at {}",
        position(bytes, at)
    ))
}

/// `line L column C` of a byte offset, as serde_json words it (1-based).
fn position(bytes: &[u8], at: usize) -> String {
    let before = &bytes[..at.min(bytes.len())];
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let column = before.iter().rev().take_while(|b| **b != b'\n').count() + 1;
    format!("line {line} column {column}")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    fn refused(body: &str) -> String {
        match check(body.as_bytes()) {
            Err(WardenError::MalformedJson(detail)) => detail,
            other => panic!("{body}: {other:?}"),
        }
    }

    #[test]
    fn paired_surrogates_and_ordinary_escapes_pass() {
        for body in [
            r#"{"a":"\ud83d\ude00 \u00e9 \n \" \\u \\"}"#,
            r#"{"a":"\\ud800"}"#,
            r#"{"a":["x",{"b":"\uD83D\uDE00"}]}"#,
            "{\"a\":\"plain é 😀\"}",
        ] {
            check(body.as_bytes()).unwrap_or_else(|e| panic!("{body}: {e:?}"));
        }
    }

    #[test]
    fn lone_surrogates_anywhere_are_refused() {
        for body in [
            r#"{"messages":[{"role":"user","content":"\ud800"}]}"#,
            r#"{"a":"x\udc00y"}"#,
            r#"{"a":"\ud800\u0041"}"#,
            r#"{"a":"\ud800\ud800"}"#,
            r#"{"\ud800":1}"#,
            r#"{"a":"end\uDBFF"}"#,
        ] {
            let detail = refused(body);
            assert!(detail.contains("lone UTF-16 surrogate"), "{detail}");
        }
        assert!(refused("{\n \"a\": \"\\ud800\"}").contains("line 2 column 8"));
    }

    #[test]
    fn nesting_is_bounded_outside_strings_only() {
        let deep = format!("{{\"a\":{}1{}}}", "[".repeat(200), "]".repeat(200));
        assert!(refused(&deep).contains("nesting deeper than 128"));
        let ok = format!("{{\"a\":{}1{}}}", "[".repeat(100), "]".repeat(100));
        check(ok.as_bytes()).unwrap();
        let in_text = format!("{{\"a\":\"{}\"}}", "[".repeat(10_000));
        check(in_text.as_bytes()).unwrap();
    }
}
