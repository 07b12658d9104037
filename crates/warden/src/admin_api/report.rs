//! `GET /admin/v1/report?since=…&until=…&format=json|md|html`: the evidence report,
//! the same document `warden report` writes.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::ApiError;
use crate::gateway::Gateway;
use crate::report::render::{self, Format};
use crate::report::{self as evidence, time};

#[derive(Deserialize)]
pub struct ReportQuery {
    since: String,
    until: Option<String>,
    format: Option<String>,
}

pub async fn report(
    State(gateway): State<Arc<Gateway>>,
    Query(query): Query<ReportQuery>,
) -> Result<Response, ApiError> {
    let bad = |param: &str, why: String| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_report_range",
            format!("{param}: {why}"),
        )
    };
    let (since, _) = time::parse(&query.since).map_err(|e| bad("since", e))?;
    let until = match &query.until {
        None => crate::events::now_ms(),
        Some(text) => {
            let (ms, date_only) = time::parse(text).map_err(|e| bad("until", e))?;
            if date_only {
                time::end_of_day(ms)
            } else {
                ms
            }
        }
    };
    if until <= since {
        return Err(bad("until", "must be after since".into()));
    }
    let (format, content_type) = match query.format.as_deref().unwrap_or("json") {
        "json" => (Format::Json, "application/json"),
        "md" => (Format::Md, "text/markdown; charset=utf-8"),
        "html" => (Format::Html, "text/html; charset=utf-8"),
        other => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_report_format",
                format!("format '{other}' is not one of json, md, html"),
            ))
        }
    };
    let report = evidence::build(&gateway.store, since, until)
        .await
        .map_err(ApiError::internal)?;
    Ok((
        [(header::CONTENT_TYPE, content_type)],
        render::render(&report, format),
    )
        .into_response())
}
