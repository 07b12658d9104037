//! What the analyzer learns from one request, taken on the hot path: a few field lookups
//! and reference-counted copies, nothing parsed or scanned (the analyzer does that).

use std::net::IpAddr;

use crate::endpoint::Endpoint;
use crate::error::WardenError;
use crate::geo::Country;
use crate::json_body::JsonBody;
use crate::pipeline::{Finding, RequestContext, Side};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Shape {
    /// `response_format` or `text.format` asks for JSON.
    pub structured: bool,
    /// `n` (or `best_of`) above 1.
    pub many_choices: bool,
    /// `logprobs` / `top_logprobs` asked for.
    pub logprobs: bool,
}

#[derive(Debug, Clone)]
pub struct Observation {
    pub at_ms: i64,
    pub key: Option<String>,
    pub user: Option<String>,
    pub ip: IpAddr,
    pub country: Option<Country>,
    pub endpoint: Endpoint,
    /// Content categories flagged or blocked (moderation and local filters).
    pub categories: Vec<String>,
    /// Moderation failed and the request went through unchecked.
    pub fail_open: bool,
    pub shape: Shape,
    /// The end user's prompt (`RequestTexts::prompt`, at most 4 KiB), for template
    /// detection.
    pub prompt: Option<String>,
}

impl Observation {
    pub fn of(ctx: &RequestContext, refused: Option<&WardenError>) -> Observation {
        let mut categories = Vec::new();
        let mut fail_open = false;
        for finding in &ctx.findings {
            match finding {
                Finding::FailOpen {
                    side: Side::Input, ..
                } => fail_open = true,
                other => categories.extend(other.input_categories().into_iter().map(str::to_owned)),
            }
        }
        if let Some(WardenError::ContentFiltered(block)) = refused {
            categories.extend(block.categories.iter().cloned());
        }
        categories.sort_unstable();
        categories.dedup();
        Observation {
            at_ms: crate::events::now_ms(),
            key: ctx.key_name().map(str::to_owned),
            user: ctx.end_user.as_ref().map(|u| u.id.clone()),
            ip: ctx.client_ip,
            country: ctx.country,
            endpoint: ctx.endpoint,
            categories,
            fail_open,
            shape: ctx.body.as_ref().map(shape).unwrap_or_default(),
            prompt: ctx.texts.prompt(),
        }
    }
}

/// Reads the request fields that mark harvesting: JSON output, several choices, logprobs.
pub fn shape(body: &JsonBody) -> Shape {
    let raw = |name: &str| body.raw(name).map(|r| r.get());
    let number = |name: &str| raw(name).and_then(|r| r.parse::<f64>().ok());
    let json_format = |text: Option<&str>| {
        text.is_some_and(|t| t.contains("\"json_object\"") || t.contains("\"json_schema\""))
    };
    Shape {
        structured: json_format(raw("response_format")) || json_format(raw("text")),
        many_choices: number("n").is_some_and(|n| n > 1.0)
            || number("best_of").is_some_and(|n| n > 1.0),
        logprobs: raw("logprobs")
            .is_some_and(|r| r == "true" || r.parse::<f64>().is_ok_and(|n| n > 0.0))
            || number("top_logprobs").is_some_and(|n| n > 0.0),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn harvesting_fields_are_read() {
        let b = JsonBody::parse(
            br#"{"model":"m","n":3,"logprobs":true,"response_format":{"type":"json_object"}}"#,
        )
        .unwrap();
        assert_eq!(
            shape(&b),
            Shape {
                structured: true,
                many_choices: true,
                logprobs: true
            }
        );
        let b = JsonBody::parse(br#"{"model":"m","text":{"format":{"type":"json_schema","name":"x"}},"n":1,"logprobs":false}"#).unwrap();
        assert_eq!(
            shape(&b),
            Shape {
                structured: true,
                ..Shape::default()
            }
        );
        let b =
            JsonBody::parse(br#"{"model":"m","response_format":{"type":"text"},"top_logprobs":0}"#)
                .unwrap();
        assert_eq!(shape(&b), Shape::default());
    }
}
