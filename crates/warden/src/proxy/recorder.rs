//! Makes sure every request leaves exactly one `request` event: answered, refused, failed,
//! or abandoned by the client (recorded when the recorder is dropped unfinished).
//!
//! Blocks and flags are decisions someone may ask about later, so they are on record
//! before the client hears of them: a refusal's event is committed before the refusal is
//! sent (`close_durable`), and a flagged request that goes on gets a `flag` event
//! committed before its answer is released (`persist_flags`, overlapped with the upstream
//! call). Everything else is fire-and-forget.

use std::time::{Duration, Instant};

use crate::error::WardenError;
use crate::events::content;
use crate::events::flags::{self, Flag};
use crate::events::{now_ms, EventLog, EventRecord};
use crate::json_body::JsonBody;
use crate::pipeline::{Finding, RequestContext, Verdict};

pub struct Recorder {
    events: EventLog,
    started: Instant,
    record: Option<EventRecord>,
    trail: Vec<String>,
    findings: Vec<Finding>,
    flags: Vec<Flag>,
    /// Flags already written in a `flag` event.
    persisted: usize,
    moderated: bool,
    /// More named facts for the event's detail (a Realtime session's totals).
    extra: Vec<(&'static str, serde_json::Value)>,
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
                client_ip: Some(client_ip),
                endpoint,
                outcome: "cancelled",
                reason: Some("client_disconnected".into()),
                country: None,
                ..EventRecord::default()
            }),
            trail: Vec::new(),
            findings: Vec::new(),
            flags: Vec::new(),
            persisted: 0,
            moderated: false,
            extra: Vec::new(),
        }
    }

    /// Copies what the pipeline learned (key, user, model, stage trail, findings) and
    /// the digest of the request's user text.
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
        record.stage_us = ctx.trail.iter().map(|s| (s.stage, s.micros)).collect();
        self.trail = ctx
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
        self.findings = ctx.findings.clone();
        self.flags.extend(ctx.audit.flags.iter().cloned());
        self.moderated = ctx.audit.moderated;
        if ctx.body.is_some() {
            // The digest is of the text as the filters scanned it: before any redaction.
            let redacted = ctx.audit.flags.iter().any(|f| f.action == flags::REDACT);
            let digest = if redacted {
                JsonBody::parse(&ctx.raw_body)
                    .ok()
                    .and_then(|original| {
                        crate::openai::extract(ctx.endpoint, &original, ctx.model.as_deref()).ok()
                    })
                    .and_then(|texts| content::digest(&texts))
            } else {
                content::digest(&ctx.texts)
            };
            if let Some((sha256, len)) = digest {
                record.content_sha256 = Some(sha256);
                record.content_len = Some(len);
            }
            let flagged = self.flags.iter().find(|f| f.must_be_durable());
            if let (Some(excerpts), Some(flag)) = (&self.events.options().excerpts, flagged) {
                record.excerpt = excerpts.of(&ctx.texts, flag.param.as_deref());
            }
        }
    }

    /// Records what refused the request: for a content block, the stage, field,
    /// categories and scores (and an excerpt when the operator keeps them).
    pub fn blocked_by(&mut self, err: &WardenError, ctx: &RequestContext) {
        let WardenError::ContentFiltered(block) = err else {
            return;
        };
        let stage = ctx
            .trail
            .iter()
            .rev()
            .find(|s| s.verdict.is_none())
            .map_or("content_filter", |s| s.stage);
        self.flags.push(flags::of_block(stage, block));
        if let (Some(record), Some(excerpts)) =
            (self.record.as_mut(), &self.events.options().excerpts)
        {
            record.excerpt = excerpts.of(&ctx.texts, Some(&block.param));
        }
    }

    /// Adds a finding noticed after the pipeline ran (output moderation) to the detail.
    /// The end user's safety identifier, for a request refused before the stage that
    /// sets it.
    pub fn identify(&mut self, safety_identifier: String) {
        if let Some(record) = self.record.as_mut() {
            record.safety_identifier.get_or_insert(safety_identifier);
        }
    }

    /// Adds a finding noticed after the pipeline ran (output checks, retries, the block).
    pub fn note(&mut self, finding: Finding) {
        self.findings.push(finding);
    }

    /// Adds a named fact to the event's detail (e.g. a Realtime session's token totals).
    pub fn detail(&mut self, name: &'static str, value: serde_json::Value) {
        self.extra.push((name, value));
    }

    /// Adds a structured finding noticed after the pipeline ran (output moderation).
    pub fn flag(&mut self, flag: Flag) {
        self.flags.push(flag);
    }

    /// Whether flags wait to be written before the answer is released.
    pub fn has_pending_flags(&self) -> bool {
        self.flags[self.persisted..]
            .iter()
            .any(Flag::must_be_durable)
    }

    /// Writes the flags not yet on record as one `flag` event and waits (bounded) for its
    /// commit. Call before releasing an answer that follows a flag.
    pub async fn persist_flags(&mut self) {
        if let Some(event) = self.flag_event() {
            self.events.record_durable(event).await;
        }
    }

    fn flag_event(&mut self) -> Option<EventRecord> {
        if !self.has_pending_flags() {
            return None;
        }
        let record = self.record.as_mut()?;
        // The excerpt goes with the flag (stored once).
        let excerpt = record.excerpt.take();
        let pending: Vec<&Flag> = self.flags[self.persisted..]
            .iter()
            .filter(|f| f.must_be_durable())
            .collect();
        let reason = pending.first().map(|f| f.action.clone());
        let detail = serde_json::json!({ "flags": pending }).to_string();
        self.persisted = self.flags.len();
        Some(EventRecord {
            kind: "flag",
            outcome: "flagged",
            status: 0,
            reason,
            latency_us: self.started.elapsed().as_micros() as i64,
            upstream_us: None,
            detail: Some(detail),
            excerpt,
            ..record.clone()
        })
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

    /// Finishes and waits (bounded) until the event is committed: for refusals and
    /// blocks, before the client is told.
    pub async fn close_durable(mut self, outcome: Outcome, reason: Option<&str>) {
        // Flags noticed before the block get their own event, queued first so it is
        // committed no later than the block's.
        if let Some(flag_event) = self.flag_event() {
            self.events.record(flag_event);
        }
        if let Some(record) = self.take_record(outcome, reason) {
            self.events.record_durable(record).await;
        }
    }

    pub fn close(&mut self, outcome: Outcome, reason: Option<&str>) {
        if let Some(record) = self.take_record(outcome, reason) {
            self.events.record(record);
        }
    }

    fn take_record(&mut self, outcome: Outcome, reason: Option<&str>) -> Option<EventRecord> {
        let mut record = self.record.take()?;
        record.outcome = outcome.label();
        record.reason = reason.map(str::to_owned);
        if record.latency_us == 0 {
            record.latency_us = self.started.elapsed().as_micros() as i64;
        }
        let mut detail = serde_json::json!({ "trail": self.trail });
        if !self.findings.is_empty() {
            let text: Vec<String> = self.findings.iter().map(Finding::to_string).collect();
            detail["findings"] = serde_json::json!(text);
            record.findings = std::mem::take(&mut self.findings);
        }
        if !self.flags.is_empty() {
            detail["flags"] = serde_json::json!(self.flags);
        }
        if self.moderated {
            detail["moderated"] = true.into();
        }
        for (name, value) in self.extra.drain(..) {
            detail[name] = value;
        }
        record.detail = Some(detail.to_string());
        Some(record)
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if self.record.is_some() {
            self.close(Outcome::Cancelled, Some("client_disconnected"));
        }
    }
}
