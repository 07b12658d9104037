//! The writer under the log formatter: every formatted line passes the masker before it
//! reaches stderr, whichever code path logged it and whatever field carried the secret.

use std::io::{self, Write};
use std::sync::Arc;

use tracing_subscriber::fmt::MakeWriter;

use super::mask::Masker;

/// Wraps another `MakeWriter` (stderr in production, a buffer in tests).
pub struct Masking<M> {
    inner: M,
    masker: Arc<Masker>,
}

impl<M> Masking<M> {
    pub fn new(inner: M, masker: Arc<Masker>) -> Self {
        Masking { inner, masker }
    }
}

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for Masking<M> {
    type Writer = MaskedLine<'a, M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        MaskedLine {
            inner: self.inner.make_writer(),
            masker: &self.masker,
        }
    }
}

pub struct MaskedLine<'a, W> {
    inner: W,
    masker: &'a Masker,
}

impl<W: Write> Write for MaskedLine<'_, W> {
    /// The formatter hands over each event as one buffer, so a secret is never split
    /// between two calls.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write_all(&self.masker.mask(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::Mutex;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'a self) -> Buffer {
            self.clone()
        }
    }

    #[test]
    fn every_field_and_message_of_every_event_is_masked() {
        let buffer = Buffer::default();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_writer(Masking::new(
                buffer.clone(),
                Arc::new(Masker::new().unwrap()),
            ))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!(
                header = "Bearer wk-live-0123456789abcdef",
                "upstream said: Incorrect API key provided: sk-proj-abcdefghijklmnopqrstuvwxyz0123"
            );
            tracing::info!(model = "AKIAABCDEFGHIJKLMNOP", "request");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["header"], "Bearer ****[bearer_token]");
        assert!(lines[0]["message"]
            .as_str()
            .unwrap()
            .ends_with("sk-proj-****[openai_key]"));
        assert_eq!(lines[1]["model"], "AKIA****[aws_key]");
        for secret in ["wk-live-0123", "abcdefghijklmnop", "AKIAABCD"] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
    }
}
