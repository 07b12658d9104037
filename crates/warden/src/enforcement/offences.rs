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

pub fn offence_in(record: &EventRecord, config: &EnforcementConfig) -> Option<Offence> {
    if record.kind != "request" {
        return None;
    }
    let (key_name, end_user) = (record.key_name.as_ref()?, record.end_user.as_ref()?);
    let mut worst: Option<(String, f64)> = None;
    for (categories, share) in record
        .findings
        .iter()
        .filter_map(|f| f.offence(config.flag_weight))
    {
        for category in categories {
            let weight = config.weight(category) * share;
            if weight > 0.0 && worst.as_ref().is_none_or(|(_, w)| weight > *w) {
                worst = Some((category.to_owned(), weight));
            }
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
    use crate::pipeline::Finding;

    fn record(findings: Vec<Finding>) -> EventRecord {
        EventRecord {
            request_id: "wrq_1".into(),
            kind: "request",
            key_name: Some("app".into()),
            end_user: Some("u1".into()),
            findings,
            ..Default::default()
        }
    }

    fn cats(names: &str) -> Vec<String> {
        names.split(',').map(str::to_owned).collect()
    }

    #[test]
    fn a_block_counts_its_heaviest_category_in_full() {
        let c = Config::from_toml("").unwrap().enforcement;
        let blocked = Finding::Blocked {
            categories: cats("harassment,sexual/minors"),
        };
        let o = offence_in(&record(vec![blocked]), &c).unwrap();
        assert_eq!(o.category, "sexual/minors");
        assert_eq!(o.weight, c.weight("sexual/minors"));
    }

    #[test]
    fn flags_and_jailbreak_attempts_count_partly() {
        let c = Config::from_toml("").unwrap().enforcement;
        let o = offence_in(
            &record(vec![
                Finding::ModerationFlag {
                    param: "messages[0].content".into(),
                    categories: cats("harassment"),
                    replayed: false,
                },
                Finding::Jailbreak {
                    score: 0.61,
                    families: cats("dan"),
                    param: "messages[1].content".into(),
                    replayed: false,
                },
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
        let redacted = Finding::FilterRule {
            category: "secrets".into(),
            rule: "aws".into(),
            action: "redact".into(),
            param: "x".into(),
            output: false,
        };
        assert!(offence_in(&record(vec![redacted]), &c).is_none());
        // A flagged turn the client sends again was counted when it was new.
        let replayed = Finding::Jailbreak {
            score: 0.7,
            families: cats("x"),
            param: "messages[0].content".into(),
            replayed: true,
        };
        assert!(offence_in(&record(vec![replayed]), &c).is_none());
        let mut anonymous = record(vec![Finding::Blocked {
            categories: cats("hate"),
        }]);
        anonymous.end_user = None;
        assert!(offence_in(&anonymous, &c).is_none());
    }
}
