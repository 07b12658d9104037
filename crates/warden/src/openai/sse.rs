//! OpenAI's server-sent events: how a stream is cut into events, what an event's JSON is,
//! and the events Warden itself writes into a stream (errors the SDKs raise).

use bytes::{Bytes, BytesMut};
use serde_json::{json, Value};

use crate::endpoint::Endpoint;

/// Splits one complete event (through its blank line, `\n\n` or `\r\n\r\n`) off the front
/// of `buf`.
pub fn next_event(buf: &mut BytesMut) -> Option<Bytes> {
    let lf = memchr::memmem::find(buf, b"\n\n").map(|p| p + 2);
    let crlf = memchr::memmem::find(buf, b"\r\n\r\n").map(|p| p + 4);
    let end = match (lf, crlf) {
        (Some(a), Some(b)) => a.min(b),
        (a, b) => a.or(b)?,
    };
    Some(buf.split_to(end).freeze())
}

/// The JSON of an event's `data:` line(s), if it has any that parse.
pub fn data_json(event: &[u8]) -> Option<Value> {
    let text = std::str::from_utf8(event).ok()?;
    let data: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| d.strip_prefix(' ').unwrap_or(d))
        .collect();
    if data.is_empty() {
        return None;
    }
    serde_json::from_str(&data.join("\n")).ok()
}

/// An event with new JSON: its `event:` line kept, one `data:` line.
pub fn reencode(original: &[u8], json: &Value) -> Bytes {
    let mut out = Vec::with_capacity(original.len() + 32);
    let text = String::from_utf8_lossy(original);
    for line in text.lines().filter(|l| l.starts_with("event:")) {
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(json.to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// A server error written into a stream, in the shape each SDK raises as `APIError`:
/// a responses `error` event (with its `sequence_number`), or a chat / completions chunk
/// with an `error` key.
pub fn error_event(endpoint: Endpoint, code: &str, message: &str, sequence_number: u64) -> Bytes {
    let error = json!({"message": message, "type": "server_error", "param": null, "code": code});
    match endpoint {
        Endpoint::Responses => {
            let event = json!({
                "type": "error", "code": code, "message": message, "param": null,
                "sequence_number": sequence_number, "error": error,
            });
            Bytes::from(format!("event: error\ndata: {event}\n\n"))
        }
        _ => Bytes::from(format!("data: {}\n\n", json!({ "error": error }))),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn events_split_on_either_line_ending() {
        let mut buf =
            BytesMut::from(&b"data: {\"a\":1}\n\nevent: x\r\ndata: 2\r\n\r\ndata: part"[..]);
        assert_eq!(&next_event(&mut buf).unwrap()[..], b"data: {\"a\":1}\n\n");
        assert_eq!(data_json(&next_event(&mut buf).unwrap()), Some(json!(2)));
        assert!(next_event(&mut buf).is_none());
        assert_eq!(&buf[..], b"data: part");
    }

    #[test]
    fn reencoding_keeps_the_event_name() {
        let out = reencode(
            b"event: response.output_text.delta\ndata: {}\n\n",
            &json!({"a": 1}),
        );
        assert_eq!(
            &out[..],
            b"event: response.output_text.delta\ndata: {\"a\":1}\n\n"
        );
    }

    #[test]
    fn error_events_have_each_flavours_shape() {
        let chat = error_event(Endpoint::ChatCompletions, "x", "m", 0);
        assert_eq!(data_json(&chat).unwrap()["error"]["code"], "x");
        let responses = error_event(Endpoint::Responses, "x", "m", 7);
        assert!(responses.starts_with(b"event: error\n"));
        let v = data_json(&responses).unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["sequence_number"], 7);
    }
}
