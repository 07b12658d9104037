//! OpenAI's wire format, read in one place: which parts of a request body are text the
//! model reads, where the model's words are in each answer shape, how streams are framed,
//! and what `usage` says. Stages, output checks, the event log, limits, spend and the abuse
//! detector take their view of the wire from here instead of walking the JSON themselves.

pub mod request_text;
pub mod response_text;
pub mod sse;
pub mod usage;

pub use request_text::{extract, Form, ImageRef, Replacement, RequestTexts, Role, TextRef};
