//! Reads each request's event for what counts against its end user: a blocked input, a
//! flagged one, a jailbreak attempt, a blocked answer. One strike per request, the
//! heaviest it earned. Works off the event log, so the hot path pays nothing for it.

use tokio::sync::mpsc;

use crate::config::enforcement::EnforcementConfig;
use crate::events::{EventRecord, EventSink, SinkFuture};

#[derive(Debug, Clone, PartialEq)]
pub struct Offence {
    pub key_name: String,
    pub end_user: String,
    pub request_id: String,
    pub at_ms: i64,
    pub category: String,
    pub weight: f64,
}

/// The detail entry the proxy writes for a blocked input: `blocked:<cat>,<cat>`.
pub const BLOCKED_NOTE: &str = "blocked";

pub fn offence_in(record: &EventRecord, config: &EnforcementConfig) -> Option<Offence> {
    if record.kind != "request" {
        return None;
    }
    let (key_name, end_user) = (record.key_name.as_ref()?, record.end_user.as_ref()?);
    // Most requests found nothing: skip parsing their detail at all.
    let detail = record
        .detail
        .as_deref()
        .filter(|d| d.contains("\"findings\""))?;
    let detail: serde_json::Value = serde_json::from_str(detail).ok()?;
    let findings = detail.get("findings")?.as_array()?;
    let mut worst: Option<(String, f64)> = None;
    let mut consider = |categories: &str, share: f64| {
        for category in categories.split(',').filter(|c| !c.is_empty()) {
            let weight = config.weight(category) * share;
            if weight > 0.0 && worst.as_ref().is_none_or(|(_, w)| weight > *w) {
                worst = Some((category.to_owned(), weight));
            }
        }
    };
    for finding in findings.iter().filter_map(|f| f.as_str()) {
        let Some((stage, note)) = finding.split_once(':') else {
            continue;
        };
        match stage {
            BLOCKED_NOTE => consider(note, 1.0),
            "moderation" => {
                if let Some(rest) = note.strip_prefix("flag:") {
                    // `flag:<param>:<categories>`; params hold no ':'.
                    if let Some((_, categories)) = rest.rsplit_once(':') {
                        consider(categories, config.flag_weight);
                    }
                } else if let Some(categories) = note.strip_prefix("output_block:") {
                    // The model wrote it, but the user asked for it.
                    consider(categories, config.flag_weight);
                }
            }
            "local_filters" if note.starts_with("jailbreak ") => {
                consider("jailbreak", config.flag_weight)
            }
            _ => {}
        }
    }
    let (category, weight) = worst?;
    Some(Offence {
        key_name: key_name.clone(),
        end_user: end_user.clone(),
        request_id: record.request_id.clone(),
        at_ms: record.at_ms,
        category,
        weight,
    })
}

const QUEUE: usize = 4_096;

/// The sink for the event log and the receiving end for the enforcement worker.
pub fn offence_channel(config: &EnforcementConfig) -> (OffenceSink, mpsc::Receiver<Offence>) {
    let (offences, receiver) = mpsc::channel(QUEUE);
    (
        OffenceSink {
            config: config.clone(),
            offences,
        },
        receiver,
    )
}

/// The event-log sink that hands offences to the enforcement worker. Never waits: when
/// the worker is behind, the strike is dropped and counted in the log.
pub struct OffenceSink {
    pub config: EnforcementConfig,
    pub offences: mpsc::Sender<Offence>,
}

impl EventSink for OffenceSink {
    fn write<'a>(&'a self, batch: &'a [EventRecord]) -> SinkFuture<'a> {
        for record in batch {
            if let Some(offence) = offence_in(record, &self.config) {
                if self.offences.try_send(offence).is_err() {
                    tracing::error!(request_id = %record.request_id, "enforcement queue full; strike not counted");
                }
            }
        }
        Box::pin(async {})
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::config::Config;

    fn record(findings: &[&str]) -> EventRecord {
        EventRecord {
            request_id: "wrq_1".into(),
            kind: "request",
            key_name: Some("app".into()),
            end_user: Some("u1".into()),
            detail: Some(serde_json::json!({"trail": [], "findings": findings}).to_string()),
            ..Default::default()
        }
    }

    #[test]
    fn a_block_counts_its_heaviest_category_in_full() {
        let c = Config::from_toml("").unwrap().enforcement;
        let o = offence_in(&record(&["blocked:harassment,sexual/minors"]), &c).unwrap();
        assert_eq!(o.category, "sexual/minors");
        assert_eq!(o.weight, c.weight("sexual/minors"));
    }

    #[test]
    fn flags_and_jailbreak_attempts_count_partly() {
        let c = Config::from_toml("").unwrap().enforcement;
        let o = offence_in(
            &record(&[
                "moderation:flag:messages[0].content:harassment",
                "local_filters:jailbreak 0.61 [dan] at messages[1].content",
            ]),
            &c,
        )
        .unwrap();
        assert_eq!(o.category, "jailbreak");
        assert_eq!(o.weight, c.weight("jailbreak") * c.flag_weight);
    }

    #[test]
    fn clean_or_anonymous_requests_cost_nothing() {
        let c = Config::from_toml("").unwrap().enforcement;
        assert!(offence_in(&record(&["local_filters:secrets:aws redact at x"]), &c).is_none());
        // A flagged turn the client sends again was counted when it was new.
        assert!(offence_in(
            &record(&["local_filters:jailbreak_replayed 0.70 [x] at messages[0].content"]),
            &c
        )
        .is_none());
        let mut anonymous = record(&["blocked:hate"]);
        anonymous.end_user = None;
        assert!(offence_in(&anonymous, &c).is_none());
    }
}
