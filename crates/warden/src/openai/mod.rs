//! OpenAI's wire format, read in one place: which parts of a request body are text the
//! model reads. Stages, the event log and the abuse detectors take their view of a body
//! from here instead of walking the JSON themselves.

pub mod request_text;
pub mod sse;
pub mod usage;

pub use request_text::{extract, Form, ImageRef, Replacement, RequestTexts, TextRef};
