//! Makes sure every request leaves exactly one event: answered, refused, failed, or
//! abandoned by the client (recorded when the recorder is dropped unfinished).

use std::time::{Duration, Instant};

use crate::events::{now_ms, EventLog, EventRecord};
use crate::pipeline::{RequestContext, Verdict};

pub struct Recorder {
    events: EventLog,
    started: Instant,
    record: Option<EventRecord>,
}

pub enum Outcome {
    Allowed,
    Blocked,
    Failed,
    Cancelled,
}

impl Outcome {
    fn label(&self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Blocked => "blocked",
            Outcome::Failed => "failed",
            Outcome::Cancelled => "cancelled",
        }
    }
}

impl Recorder {
    pub fn new(
        events: EventLog,
        request_id: &str,
        endpoint: &'static str,
        client_ip: String,
    ) -> Self {
        Self {
            events,
            started: Instant::now(),
            record: Some(EventRecord {
                request_id: request_id.to_owned(),
                at_ms: now_ms(),
                kind: "request",
                key_name: None,
                end_user: None,
                safety_identifier: None,
                client_ip: Some(client_ip),
                endpoint,
                model: None,
                stream: false,
                status: 0,
                outcome: "cancelled",
                reason: Some("client_disconnected".into()),
                latency_us: 0,
                upstream_us: None,
                detail: None,
                country: None,
            }),
        }
    }

    /// Copies what the pipeline learned (key, user, model, stage trail).
    pub fn learn(&mut self, ctx: &RequestContext) {
        let Some(record) = self.record.as_mut() else {
            return;
        };
        record.key_name = ctx.key_name().map(str::to_owned);
        record.end_user = ctx.end_user.as_ref().map(|u| u.id.clone());
        record.safety_identifier = ctx.safety_identifier.clone();
        record.model = ctx.model.clone();
        record.stream = ctx.stream;
        record.country = ctx.country.map(|c| c.as_str().to_owned());
        let trail: Vec<String> = ctx
            .trail
            .iter()
            .map(|s| {
                let verdict = match s.verdict {
                    Some(Verdict::Allow) => "allow",
                    Some(Verdict::Rewrite) => "rewrite",
                    None => "block",
                };
                format!("{}:{verdict}", s.stage)
            })
            .collect();
        let mut detail = serde_json::json!({ "trail": trail });
        if !ctx.findings.is_empty() {
            let findings: Vec<String> = ctx
                .findings
                .iter()
                .map(|f| format!("{}:{}", f.stage, f.note))
                .collect();
            detail["findings"] = findings.into();
        }
        record.detail = Some(detail.to_string());
    }

    /// Adds a finding noticed after the pipeline ran (output moderation) to the detail.
    pub fn note(&mut self, stage: &str, note: &str) {
        let Some(record) = self.record.as_mut() else {
            return;
        };
        let mut detail: serde_json::Value = record
            .detail
            .as_deref()
            .and_then(|d| serde_json::from_str(d).ok())
            .unwrap_or_else(|| serde_json::json!({}));
        let entry = serde_json::Value::from(format!("{stage}:{note}"));
        match detail.get_mut("findings").and_then(|f| f.as_array_mut()) {
            Some(findings) => findings.push(entry),
            None => detail["findings"] = serde_json::json!([entry]),
        }
        record.detail = Some(detail.to_string());
    }

    /// The response head is going out: its status and how long Warden and upstream took.
    pub fn answered(&mut self, status: u16, upstream: Option<Duration>) {
        if let Some(record) = self.record.as_mut() {
            record.status = status;
            record.latency_us = self.started.elapsed().as_micros() as i64;
            record.upstream_us = upstream.map(|d| d.as_micros() as i64);
        }
    }

    pub fn finish(mut self, outcome: Outcome, reason: Option<&str>) {
        self.close(outcome, reason);
    }

    pub fn close(&mut self, outcome: Outcome, reason: Option<&str>) {
        if let Some(mut record) = self.record.take() {
            record.outcome = outcome.label();
            record.reason = reason.map(str::to_owned);
            if record.latency_us == 0 {
                record.latency_us = self.started.elapsed().as_micros() as i64;
            }
            self.events.record(record);
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if self.record.is_some() {
            self.close(Outcome::Cancelled, Some("client_disconnected"));
        }
    }
}
