//! The report as JSON (for machines), Markdown, or one self-contained HTML page (inline
//! style, no scripts, nothing fetched from anywhere). Markdown and HTML are built from the
//! same sections so they always say the same thing.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::{Actions, Report};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Json,
    Md,
    Html,
}

pub fn render(report: &Report, format: Format) -> String {
    match format {
        Format::Json => serde_json::to_string_pretty(report).unwrap_or_default() + "\n",
        Format::Md => markdown_document(report),
        Format::Html => html(report, &sections(report)),
    }
}

/// A titled block: key figures, then tables.
struct Section {
    title: String,
    figures: Vec<(String, String)>,
    tables: Vec<Table>,
}

struct Table {
    caption: String,
    head: Vec<String>,
    rows: Vec<Vec<String>>,
}

fn counts(caption: &str, what: &str, map: &BTreeMap<String, u64>) -> Option<Table> {
    if map.is_empty() {
        return None;
    }
    let mut rows: Vec<(&String, &u64)> = map.iter().collect();
    rows.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    Some(Table {
        caption: caption.into(),
        head: vec![what.into(), "count".into()],
        rows: rows
            .into_iter()
            .map(|(k, v)| vec![k.clone(), v.to_string()])
            .collect(),
    })
}

fn actions_table(caption: &str, actions: &Actions) -> Option<Table> {
    if actions.list.is_empty() {
        return None;
    }
    let caption = if actions.list_truncated {
        format!("{caption} (first {} listed)", actions.list.len())
    } else {
        caption.to_owned()
    };
    Some(Table {
        caption,
        head: ["when (UTC)", "action", "end user", "key", "detail"]
            .map(String::from)
            .to_vec(),
        rows: actions
            .list
            .iter()
            .map(|a| {
                vec![
                    a.at.clone(),
                    a.action.clone(),
                    a.end_user.clone().unwrap_or_else(|| "-".into()),
                    a.key.clone().unwrap_or_else(|| "-".into()),
                    a.detail
                        .as_ref()
                        .map(|d| tidy(d).to_string())
                        .unwrap_or_else(|| "-".into()),
                ]
            })
            .collect(),
    })
}

fn sections(r: &Report) -> Vec<Section> {
    let q = &r.requests;
    let mut out = vec![Section {
        title: "Requests and pre-moderation".into(),
        figures: vec![
            ("Requests".into(), q.total.to_string()),
            (
                "Requests carrying user content".into(),
                q.with_content.to_string(),
            ),
            (
                "Refused by Warden before moderation (never forwarded)".into(),
                q.refused_locally.to_string(),
            ),
            (
                "Pre-moderated before forwarding".into(),
                format!(
                    "{} of {} that could reach OpenAI ({:.1} %)",
                    q.pre_moderated,
                    q.with_content.saturating_sub(q.refused_locally),
                    q.pre_moderated_share * 100.0
                ),
            ),
        ],
        tables: counts("Requests by outcome", "outcome", &q.by_outcome)
            .into_iter()
            .collect(),
    }];
    out.push(Section {
        title: "Flags (allowed and recorded)".into(),
        figures: vec![
            (
                "Flagged requests".into(),
                r.flags.flagged_requests.to_string(),
            ),
            (
                "Secrets / PII redacted".into(),
                r.flags.redactions.to_string(),
            ),
        ],
        tables: [
            counts("Flags by category", "category", &r.flags.by_category),
            counts("Flags by check", "check", &r.flags.by_stage),
        ]
        .into_iter()
        .flatten()
        .collect(),
    });
    out.push(Section {
        title: "Blocks".into(),
        figures: vec![
            ("Requests refused".into(), r.blocks.total.to_string()),
            (
                "Refused by a content check".into(),
                r.blocks.content.to_string(),
            ),
        ],
        tables: [
            counts(
                "Content blocks by category",
                "category",
                &r.blocks.content_by_category,
            ),
            counts(
                "Content blocks by check",
                "check",
                &r.blocks.content_by_stage,
            ),
            counts("Refusals by reason", "reason", &r.blocks.by_reason),
        ]
        .into_iter()
        .flatten()
        .collect(),
    });
    out.push(Section {
        title: "Actions against offenders".into(),
        figures: vec![(
            "Enforcement actions".into(),
            r.enforcement.total.to_string(),
        )],
        tables: [
            counts("Actions by type", "action", &r.enforcement.by_action),
            actions_table("Actions, oldest first", &r.enforcement),
        ]
        .into_iter()
        .flatten()
        .collect(),
    });
    out.push(Section {
        title: "Rate-limit and geo refusals".into(),
        figures: vec![
            (
                "Rate-limit refusals".into(),
                r.rate_limit_refusals.total.to_string(),
            ),
            ("Geo refusals".into(), r.geo_refusals.to_string()),
        ],
        tables: counts(
            "Rate-limit refusals by reason",
            "reason",
            &r.rate_limit_refusals.by_reason,
        )
        .into_iter()
        .collect(),
    });
    let mut fail_open = vec![(
        "Fail-open incidents".into(),
        r.fail_open.incidents.to_string(),
    )];
    if let (Some(first), Some(last)) = (&r.fail_open.first_at, &r.fail_open.last_at) {
        fail_open.push(("First / last".into(), format!("{first} / {last}")));
    }
    out.push(Section {
        title: "Fail-open incidents".into(),
        figures: fail_open,
        tables: counts(
            "Fail-open by check and cause",
            "check:cause",
            &r.fail_open.by_reason,
        )
        .into_iter()
        .collect(),
    });
    out.push(Section {
        title: "Operator actions".into(),
        figures: vec![("Admin actions".into(), r.admin.total.to_string())],
        tables: actions_table("Admin actions, oldest first", &r.admin)
            .into_iter()
            .collect(),
    });
    let kinds: BTreeMap<String, u64> = r
        .events_by_kind
        .iter()
        .flat_map(|(kind, reasons)| {
            reasons
                .iter()
                .map(move |(reason, n)| (format!("{kind} / {reason}"), *n))
        })
        .collect();
    if let Some(hygiene) = &r.key_hygiene {
        out.push(key_hygiene(hygiene));
    }
    out.push(Section {
        title: "Audit chain".into(),
        figures: vec![
            (
                "Verification".into(),
                if r.audit_chain.ok { "passed" } else { "FAILED" }.into(),
            ),
            ("Result".into(), r.audit_chain.summary.clone()),
        ],
        tables: counts(
            "All events in the period by kind / reason",
            "kind / reason",
            &kinds,
        )
        .into_iter()
        .collect(),
    });
    out
}

/// The last key hygiene pass: unmanaged keys, usage outside Warden, real spend.
fn key_hygiene(h: &serde_json::Value) -> Section {
    let list = |field: &str| h[field].as_array().cloned().unwrap_or_default();
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".into(),
        other => other.to_string(),
    };
    let table = |caption: &str, head: &[&str], rows: Vec<Vec<String>>| Table {
        caption: caption.into(),
        head: head.iter().map(|h| (*h).to_owned()).collect(),
        rows,
    };
    let unmanaged: Vec<Vec<String>> = list("unmanaged")
        .iter()
        .map(|k| {
            ["api_key_id", "redacted_value", "project", "owner"]
                .iter()
                .map(|f| text(&k[*f]))
                .collect()
        })
        .collect();
    let excess: Vec<Vec<String>> = list("excess")
        .iter()
        .map(|e| {
            ["key", "bucket_start", "excess_requests", "excess_tokens"]
                .iter()
                .map(|f| text(&e[*f]))
                .collect()
        })
        .collect();
    let costs: Vec<Vec<String>> = list("costs")
        .iter()
        .map(|c| {
            vec![
                text(&c["day"]),
                format!("{:.2}", c["openai_usd"].as_f64().unwrap_or(0.0)),
                format!("{:.2}", c["warden_usd"].as_f64().unwrap_or(0.0)),
                c["projects"].as_object().map_or(String::new(), |p| {
                    p.iter()
                        .map(|(k, v)| format!("{k}: {:.2}", v.as_f64().unwrap_or(0.0)))
                        .collect::<Vec<_>>()
                        .join(", ")
                }),
            ]
        })
        .collect();
    let mut tables = Vec::new();
    if !unmanaged.is_empty() {
        tables.push(table(
            "Keys in the organization's projects that Warden does not manage",
            &["key id", "key", "project", "owner"],
            unmanaged,
        ));
    }
    if !excess.is_empty() {
        tables.push(table(
            "Usage of Warden's keys that did not come through Warden",
            &["key", "minute", "requests", "tokens"],
            excess,
        ));
    }
    if !costs.is_empty() {
        tables.push(table(
            "Spend per day (USD): OpenAI's Costs API and Warden's estimate",
            &["day", "OpenAI", "Warden", "per project"],
            costs,
        ));
    }
    Section {
        title: "Upstream key hygiene".into(),
        figures: vec![
            (
                "Last pass".into(),
                crate::enforcement::format_ms(h["at_ms"].as_i64().unwrap_or(0)),
            ),
            (
                "Admin API".into(),
                if h["enabled"] == true {
                    "configured"
                } else {
                    "not configured (key age only)"
                }
                .into(),
            ),
            (
                "Keys Warden manages".into(),
                list("managed").len().to_string(),
            ),
            ("Unmanaged keys".into(), list("unmanaged").len().to_string()),
            (
                "Minutes with usage outside Warden".into(),
                list("excess").len().to_string(),
            ),
            (
                "Errors in the last pass".into(),
                list("errors")
                    .iter()
                    .map(text)
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
        ],
        tables,
    }
}

fn title(r: &Report) -> String {
    format!("Warden evidence report: {} to {}", r.since, r.until)
}

fn markdown(sections: &[Section]) -> String {
    let mut out = String::new();
    for s in sections {
        let _ = writeln!(out, "## {}\n", s.title);
        for (k, v) in &s.figures {
            let _ = writeln!(out, "- **{k}:** {}", md_cell(v));
        }
        out.push('\n');
        for t in &s.tables {
            let _ = writeln!(out, "{}:\n", t.caption);
            let _ = writeln!(out, "| {} |", t.head.join(" | "));
            let _ = writeln!(out, "|{}", " --- |".repeat(t.head.len()));
            for row in &t.rows {
                let cells: Vec<String> = row.iter().map(|c| md_cell(c)).collect();
                let _ = writeln!(out, "| {} |", cells.join(" | "));
            }
            out.push('\n');
        }
    }
    out
}

fn md_cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#1b1b1b}\
h1{font-size:1.5rem}h2{font-size:1.2rem;border-bottom:1px solid #ccc;padding-bottom:.2rem;margin-top:2rem}\
table{border-collapse:collapse;margin:.5rem 0 1rem}th,td{border:1px solid #ccc;padding:.25rem .6rem;text-align:left;vertical-align:top}\
td:nth-child(2){font-variant-numeric:tabular-nums}dl{display:grid;grid-template-columns:max-content auto;gap:.2rem 1rem}\
dt{font-weight:600}dd{margin:0}caption{text-align:left;font-weight:600;padding:.2rem 0}.bad{color:#b00020;font-weight:700}.ok{color:#1b5e20;font-weight:700}";

fn html(r: &Report, sections: &[Section]) -> String {
    let mut out = String::with_capacity(8192);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head><body>\n<h1>{}</h1>\n<p>Generated {} from the {} store. Every figure is counted from Warden's stored events; request content is never stored (only its SHA-256 and length).</p>\n",
        esc(&title(r)),
        esc(&title(r)),
        esc(&r.generated_at),
        esc(r.store)
    );
    for s in sections {
        let _ = writeln!(out, "<h2>{}</h2>\n<dl>", esc(&s.title));
        for (k, v) in &s.figures {
            let class = match v.as_str() {
                "FAILED" => " class=\"bad\"",
                "passed" => " class=\"ok\"",
                _ => "",
            };
            let _ = writeln!(out, "<dt>{}</dt><dd{class}>{}</dd>", esc(k), esc(v));
        }
        out.push_str("</dl>\n");
        for t in &s.tables {
            let _ = write!(out, "<table><caption>{}</caption><tr>", esc(&t.caption));
            for h in &t.head {
                let _ = write!(out, "<th>{}</th>", esc(h));
            }
            out.push_str("</tr>\n");
            for row in &t.rows {
                out.push_str("<tr>");
                for cell in row {
                    let _ = write!(out, "<td>{}</td>", esc(cell));
                }
                out.push_str("</tr>\n");
            }
            out.push_str("</table>\n");
        }
    }
    out.push_str("</body></html>\n");
    out
}

fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The Markdown document with its title line.
pub fn markdown_document(r: &Report) -> String {
    format!(
        "# {}\n\nGenerated {} from the {} store. Every figure is counted from Warden's stored events; request content is never stored (only its SHA-256 and length).\n\n{}",
        title(r),
        r.generated_at,
        r.store,
        markdown(&sections(r))
    )
}

/// An action's detail with its fractional numbers to two places (events written before
/// strike totals were rounded carry values like 2.9999999908313866).
fn tidy(value: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Number(n) if !n.is_i64() && !n.is_u64() => n
            .as_f64()
            .map(crate::enforcement::rounded)
            .and_then(serde_json::Number::from_f64)
            .map_or_else(|| value.clone(), Value::Number),
        Value::Array(items) => Value::Array(items.iter().map(tidy).collect()),
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), tidy(v))).collect())
        }
        other => other.clone(),
    }
}

#[cfg(test)]
mod tidy_tests {
    /// Regression: the report printed strike totals like 2.9999999908313866.
    #[test]
    fn fractional_numbers_in_action_details_are_rounded() {
        let detail = serde_json::json!({"total": 2.9999999908313866, "n": 3, "inner": [0.123456]});
        assert_eq!(
            super::tidy(&detail).to_string(),
            r#"{"inner":[0.12],"n":3,"total":3.0}"#
        );
    }
}
