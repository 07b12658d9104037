//! `warden report`: the evidence an operator attaches to an appeal — for a period, how
//! much traffic was moderated before it reached OpenAI, what was flagged and blocked and
//! for what, what was done about offenders and when, rate-limit and geo refusals,
//! fail-open incidents, and whether the audit chain verifies. Every number is counted
//! from the stored events; nothing is estimated.
//!
//! Sources: `request` events (one per request: outcome, reason, `detail.flags` with
//! `action = block` for content blocks, `detail.moderated`), `flag` events (findings
//! that let a request through: `flag` and `fail_open`), and any other kind as written
//! (`enforcement` with reason `warn|throttle|suspend|ban|unban|reset|strike`, `admin`,
//! `case`, …) — the report is generic over kind and reason.

pub mod render;
pub mod time;

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;

use crate::events::flags::{self, Flag};
use crate::events::verify::{self, Verification};
use crate::store::audit::StoredEvent;
use crate::store::{Store, StoreError};

/// Reasons that are rate, token, in-flight or budget refusals.
pub const RATE_LIMIT_REASONS: &[&str] = &["rate_limit_exceeded", "budget_exceeded"];
/// The reason of a refusal for the client's country or region.
pub const GEO_REASON: &str = "unsupported_country_region_territory";
/// The kind of strike, ban and other actions against end users.
pub const ENFORCEMENT_KIND: &str = "enforcement";

const PAGE: i64 = 5000;
/// Actions listed one by one; beyond this the list is cut (counts stay exact).
const MAX_LISTED: usize = 1000;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub since: String,
    pub until: String,
    pub since_ms: i64,
    pub until_ms: i64,
    pub generated_at: String,
    pub store: &'static str,
    pub requests: Requests,
    pub flags: Findings,
    pub blocks: Blocks,
    pub rate_limit_refusals: Counted,
    pub geo_refusals: u64,
    pub fail_open: FailOpen,
    pub enforcement: Actions,
    pub admin: Actions,
    /// Every event kind and reason in the period, for anything the sections above do not name.
    pub events_by_kind: BTreeMap<String, BTreeMap<String, u64>>,
    pub audit_chain: AuditChain,
    /// The last key hygiene pass (`hygiene::Status`): unmanaged keys, usage outside
    /// Warden, real spend next to Warden's estimate. `None` when none has run.
    pub key_hygiene: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Requests {
    pub total: u64,
    pub by_outcome: BTreeMap<String, u64>,
    /// Requests that carried user text (chat, responses, completions, embeddings, images).
    pub with_content: u64,
    /// Requests whose input was judged by the Moderation endpoint (or its cache of an
    /// earlier identical judgement) before anything was forwarded.
    pub pre_moderated: u64,
    /// Requests with user content refused by Warden before the Moderation endpoint judged
    /// them and before anything was forwarded (limits, local filters, identity, policy):
    /// nothing of theirs reached OpenAI, so they are neither moderated nor unmoderated.
    pub refused_locally: u64,
    /// pre_moderated / (with_content - refused_locally): of the requests with user content
    /// that could reach OpenAI, the share moderated first (0 when there were none).
    pub pre_moderated_share: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Findings {
    /// Requests with at least one `flag` finding (allowed and recorded).
    pub flagged_requests: u64,
    /// Flagged requests per category (a request flagged for two categories counts in
    /// both; flagged on input and output, once).
    pub by_category: BTreeMap<String, u64>,
    /// Findings per check (`local_filters`, `moderation`, `output_moderation`).
    pub by_stage: BTreeMap<String, u64>,
    /// Secrets or PII redacted before forwarding.
    pub redactions: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Blocks {
    /// Requests Warden refused (any reason, `outcome = blocked`).
    pub total: u64,
    pub by_reason: BTreeMap<String, u64>,
    /// Requests refused by a content check (input filters, moderation, output).
    pub content: u64,
    pub content_by_category: BTreeMap<String, u64>,
    pub content_by_stage: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Counted {
    pub total: u64,
    pub by_reason: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct FailOpen {
    /// Requests let through unchecked because a check was unavailable.
    pub incidents: u64,
    pub by_reason: BTreeMap<String, u64>,
    pub first_at: Option<String>,
    pub last_at: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Actions {
    pub total: u64,
    pub by_action: BTreeMap<String, u64>,
    /// Oldest first; at most 1000 listed.
    pub list: Vec<Action>,
    pub list_truncated: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Action {
    pub at: String,
    pub action: String,
    pub end_user: Option<String>,
    pub key: Option<String>,
    pub detail: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AuditChain {
    pub ok: bool,
    pub summary: String,
    pub chains: usize,
    pub events_verified: i64,
}

/// Builds the report for `[since_ms, until_ms)`.
pub async fn build(store: &Store, since_ms: i64, until_ms: i64) -> Result<Report, StoreError> {
    let mut report = Tally::default();
    let mut after = 0;
    loop {
        let page = store
            .events_between(since_ms, until_ms, after, PAGE)
            .await?;
        for event in &page {
            report.add(event);
        }
        match page.last() {
            Some(last) if page.len() as i64 == PAGE => after = last.id,
            _ => break,
        }
    }
    let verification = verify::verify(store).await?;
    let mut report = report.finish(store, since_ms, until_ms, &verification);
    report.key_hygiene = store
        .setting(crate::hygiene::STATUS_SETTING)
        .await?
        .and_then(|text| serde_json::from_str(&text).ok());
    Ok(report)
}

#[derive(Default)]
struct Tally {
    /// (request, category) pairs already counted, and flagged requests.
    flagged_pairs: HashSet<(String, String)>,
    flagged_ids: HashSet<String>,
    requests: Requests,
    flags: Findings,
    blocks: Blocks,
    rate: Counted,
    geo: u64,
    fail_open: FailOpen,
    first_fail_open: Option<i64>,
    last_fail_open: Option<i64>,
    enforcement: Actions,
    admin: Actions,
    kinds: BTreeMap<String, BTreeMap<String, u64>>,
}

fn bump(map: &mut BTreeMap<String, u64>, key: &str) {
    *map.entry(key.to_owned()).or_default() += 1;
}

fn flags_of(detail: Option<&serde_json::Value>) -> Vec<Flag> {
    detail
        .and_then(|d| d.get("flags"))
        .and_then(|f| serde_json::from_value(f.clone()).ok())
        .unwrap_or_default()
}

impl Tally {
    fn add(&mut self, e: &StoredEvent) {
        let detail: Option<serde_json::Value> = e
            .detail
            .as_deref()
            .and_then(|d| serde_json::from_str(d).ok());
        let reason = e.reason.as_deref().unwrap_or("-");
        bump(self.kinds.entry(e.kind.clone()).or_default(), reason);
        match e.kind.as_str() {
            "request" => self.request(e, reason, detail.as_ref()),
            "flag" => self.flag(e, detail.as_ref()),
            ENFORCEMENT_KIND => list(&mut self.enforcement, e, reason, detail),
            "admin" => list(&mut self.admin, e, reason, detail),
            _ => {}
        }
    }

    fn request(&mut self, e: &StoredEvent, reason: &str, detail: Option<&serde_json::Value>) {
        let r = &mut self.requests;
        r.total += 1;
        bump(&mut r.by_outcome, &e.outcome);
        let moderated = detail
            .and_then(|d| d.get("moderated"))
            .and_then(|m| m.as_bool())
            == Some(true);
        if e.content_len.is_some_and(|n| n > 0) {
            r.with_content += 1;
            if !moderated && e.outcome == "blocked" && e.upstream_us.is_none() {
                r.refused_locally += 1;
            }
        }
        if moderated {
            r.pre_moderated += 1;
        }
        for flag in flags_of(detail) {
            if flag.action == flags::REDACT {
                self.flags.redactions += 1;
            }
        }
        if e.outcome == "blocked" {
            self.blocks.total += 1;
            bump(&mut self.blocks.by_reason, reason);
            let blocks: Vec<Flag> = flags_of(detail)
                .into_iter()
                .filter(|f| f.action == flags::BLOCK)
                .collect();
            if !blocks.is_empty() {
                self.blocks.content += 1;
                for flag in &blocks {
                    bump(&mut self.blocks.content_by_stage, &flag.stage);
                    for category in &flag.categories {
                        bump(&mut self.blocks.content_by_category, category);
                    }
                }
            }
        }
        if RATE_LIMIT_REASONS.contains(&reason) {
            self.rate.total += 1;
            bump(&mut self.rate.by_reason, reason);
        }
        if reason == GEO_REASON {
            self.geo += 1;
        }
    }

    fn flag(&mut self, e: &StoredEvent, detail: Option<&serde_json::Value>) {
        let found = flags_of(detail);
        if found.iter().any(|f| f.action == flags::FLAG)
            && self.flagged_ids.insert(e.request_id.clone())
        {
            self.flags.flagged_requests += 1;
        }
        let mut failed_open = false;
        for flag in &found {
            match flag.action.as_str() {
                flags::FLAG => {
                    bump(&mut self.flags.by_stage, &flag.stage);
                    for category in &flag.categories {
                        if self
                            .flagged_pairs
                            .insert((e.request_id.clone(), category.clone()))
                        {
                            bump(&mut self.flags.by_category, category);
                        }
                    }
                }
                flags::FAIL_OPEN => {
                    failed_open = true;
                    let why = format!("{}:{}", flag.stage, flag.rule.as_deref().unwrap_or("-"));
                    bump(&mut self.fail_open.by_reason, &why);
                }
                _ => {}
            }
        }
        if failed_open {
            self.fail_open.incidents += 1;
            self.first_fail_open = Some(self.first_fail_open.map_or(e.at_ms, |t| t.min(e.at_ms)));
            self.last_fail_open = Some(self.last_fail_open.map_or(e.at_ms, |t| t.max(e.at_ms)));
        }
    }

    fn finish(
        mut self,
        store: &Store,
        since_ms: i64,
        until_ms: i64,
        verification: &Verification,
    ) -> Report {
        let r = &mut self.requests;
        let could_reach_openai = r.with_content.saturating_sub(r.refused_locally);
        r.pre_moderated_share = if could_reach_openai == 0 {
            0.0
        } else {
            r.pre_moderated as f64 / could_reach_openai as f64
        };
        self.fail_open.first_at = self.first_fail_open.map(time::format);
        self.fail_open.last_at = self.last_fail_open.map(time::format);
        for actions in [&mut self.enforcement, &mut self.admin] {
            actions.list.sort_by(|a, b| a.at.cmp(&b.at));
        }
        Report {
            since: time::format(since_ms),
            until: time::format(until_ms),
            since_ms,
            until_ms,
            generated_at: time::format(crate::events::now_ms()),
            store: store.backend(),
            requests: self.requests,
            flags: self.flags,
            blocks: self.blocks,
            rate_limit_refusals: self.rate,
            geo_refusals: self.geo,
            fail_open: self.fail_open,
            enforcement: self.enforcement,
            admin: self.admin,
            events_by_kind: self.kinds,
            audit_chain: AuditChain {
                ok: verification.ok(),
                summary: verification.summary(),
                chains: verification.chains.len(),
                events_verified: verification.events(),
            },
            key_hygiene: None,
        }
    }
}

fn list(actions: &mut Actions, e: &StoredEvent, reason: &str, detail: Option<serde_json::Value>) {
    actions.total += 1;
    bump(&mut actions.by_action, reason);
    if actions.list.len() < MAX_LISTED {
        actions.list.push(Action {
            at: time::format(e.at_ms),
            action: reason.to_owned(),
            end_user: e.end_user.clone(),
            key: e.key_name.clone(),
            detail,
        });
    } else {
        actions.list_truncated = true;
    }
}

#[cfg(test)]
mod tests;
