//! `warden audit verify`: walks every chain in the store, recomputing each event's hash
//! from its fields and the previous hash, and reports the first broken link of each
//! chain — the event id and why (edited, deleted before it, out of order, tail missing).
//!
//! A chain starts at the genesis hash, or — after a retention cut — at its latest
//! checkpoint: the first remaining event must then carry the checkpoint's sequence
//! number + 1 and link to the checkpoint's hash.

use serde::Serialize;

use super::chain::{Link, GENESIS};
use crate::store::audit::{ChainHead, StoredEvent};
use crate::store::{Store, StoreError};

const PAGE: i64 = 2000;

#[derive(Debug, Clone, Serialize)]
pub struct ChainReport {
    pub chain_id: String,
    /// Events checked (those up to the head read at the start of the walk).
    pub events: i64,
    /// The sequence number the chain starts after (0, or a retention checkpoint).
    pub starts_after: i64,
    pub head_seq: i64,
    pub head_hash: String,
    pub broken: Option<BrokenLink>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BrokenLink {
    /// The event where the chain stops verifying (`None` when the newest events are gone
    /// and there is no event to name).
    pub event_id: Option<i64>,
    pub seq: i64,
    pub why: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    pub chains: Vec<ChainReport>,
    /// An event stored without a chain position (written around the event log).
    pub unchained_event: Option<i64>,
}

impl Verification {
    pub fn ok(&self) -> bool {
        self.unchained_event.is_none() && self.chains.iter().all(|c| c.broken.is_none())
    }

    pub fn events(&self) -> i64 {
        self.chains.iter().map(|c| c.events).sum()
    }

    /// The broken link with the lowest event id, over all chains.
    pub fn first_broken(&self) -> Option<(&str, &BrokenLink)> {
        self.chains
            .iter()
            .filter_map(|c| c.broken.as_ref().map(|b| (c.chain_id.as_str(), b)))
            .min_by_key(|(_, b)| b.event_id.unwrap_or(i64::MAX))
    }

    /// One line a person reads: "OK: …" or "BROKEN: …".
    pub fn summary(&self) -> String {
        if let Some(id) = self.unchained_event {
            return format!(
                "BROKEN: event {id} carries no chain position (written around the event log, or its chain fields were erased)"
            );
        }
        match self.first_broken() {
            None => format!(
                "OK: {} event(s) in {} chain(s) verified",
                self.events(),
                self.chains.len()
            ),
            Some((chain, b)) => match b.event_id {
                Some(id) => format!(
                    "BROKEN: first broken link at event {id} (chain {chain}, seq {}): {}",
                    b.seq, b.why
                ),
                None => format!("BROKEN: chain {chain} after seq {}: {}", b.seq, b.why),
            },
        }
    }
}

impl Verification {
    /// What `warden audit verify --json` prints and `/admin/v1/audit/verify` answers.
    pub fn document(&self) -> serde_json::Value {
        serde_json::json!({
            "object": "audit_verification",
            "ok": self.ok(),
            "summary": self.summary(),
            "events": self.events(),
            "chains": self.chains,
            "unchained_event": self.unchained_event,
        })
    }
}

pub async fn verify(store: &Store) -> Result<Verification, StoreError> {
    let mut chains = Vec::new();
    for head in store.audit_chains().await? {
        chains.push(verify_chain(store, &head).await?);
    }
    Ok(Verification {
        chains,
        unchained_event: store.first_unchained_event().await?,
    })
}

async fn verify_chain(store: &Store, head: &ChainHead) -> Result<ChainReport, StoreError> {
    let checkpoint = store.audit_checkpoint(&head.chain_id).await?;
    let (start, mut expected_prev) = match &checkpoint {
        Some(cp) => (cp.seq, cp.hash.clone()),
        None => (0, GENESIS.to_owned()),
    };
    let mut report = ChainReport {
        chain_id: head.chain_id.clone(),
        events: 0,
        starts_after: start,
        head_seq: head.last_seq,
        head_hash: head.last_hash.clone(),
        broken: None,
    };
    // Events beyond the head read above were written during the walk: not checked now.
    let until = if head.last_seq < 0 {
        i64::MAX
    } else {
        head.last_seq
    };
    let mut expected_seq = start + 1;
    let mut last_id = None;
    let mut after = start;
    loop {
        let page = store
            .chain_events(&head.chain_id, after, until, PAGE)
            .await?;
        let Some(last) = page.last() else {
            break;
        };
        after = last.chain_seq.unwrap_or(after);
        for event in &page {
            if let Some(why) = check(event, expected_seq, &expected_prev) {
                report.broken = Some(BrokenLink {
                    event_id: Some(event.id),
                    seq: event.chain_seq.unwrap_or(0),
                    why,
                });
                return Ok(report);
            }
            report.events += 1;
            expected_seq += 1;
            expected_prev = event.hash.clone().unwrap_or_default();
            last_id = Some(event.id);
        }
        if (page.len() as i64) < PAGE {
            break;
        }
    }
    let last_seq = expected_seq - 1;
    if head.last_seq < 0 {
        report.broken = Some(BrokenLink {
            event_id: last_id,
            seq: last_seq,
            why: "the chain's head record (audit_chains) is missing".into(),
        });
    } else if last_seq < head.last_seq {
        report.broken = Some(BrokenLink {
            event_id: None,
            seq: last_seq,
            why: format!(
                "the chain's head is seq {} but the newest event is seq {last_seq}{}: {} event(s) at the end were deleted",
                head.last_seq,
                last_id.map(|id| format!(" (event {id})")).unwrap_or_default(),
                head.last_seq - last_seq
            ),
        });
    } else if expected_prev != head.last_hash {
        report.broken = Some(BrokenLink {
            event_id: last_id,
            seq: last_seq,
            why: "the newest event's hash differs from the chain head's".into(),
        });
    }
    Ok(report)
}

/// Why `event` does not continue the chain, if it does not.
fn check(event: &StoredEvent, expected_seq: i64, expected_prev: &str) -> Option<String> {
    let seq = event.chain_seq.unwrap_or(0);
    if seq != expected_seq {
        return Some(if seq > expected_seq {
            format!(
                "expected seq {expected_seq} but found {seq}: {} event(s) before it are missing (deleted, or lost before they were stored: see warden_events_dropped_total)",
                seq - expected_seq
            )
        } else {
            format!("expected seq {expected_seq} but found {seq}: out of order")
        });
    }
    let prev = event.prev_hash.as_deref().unwrap_or_default();
    if prev != expected_prev {
        return Some(
            "its prev_hash does not match the previous event's hash (the previous event was edited, replaced or deleted)"
                .into(),
        );
    }
    let chain_id = event.chain_id.as_deref().unwrap_or_default();
    let link = Link {
        chain_id,
        seq,
        request_id: &event.request_id,
        at_ms: event.at_ms,
        kind: &event.kind,
        key_name: event.key_name.as_deref(),
        end_user: event.end_user.as_deref(),
        safety_identifier: event.safety_identifier.as_deref(),
        client_ip: event.client_ip.as_deref(),
        endpoint: event.endpoint.as_deref(),
        model: event.model.as_deref(),
        stream: event.stream,
        status: event.status,
        outcome: &event.outcome,
        reason: event.reason.as_deref(),
        latency_us: event.latency_us,
        upstream_us: event.upstream_us,
        detail: event.detail.as_deref(),
        content_sha256: event.content_sha256.as_deref(),
        content_len: event.content_len,
        country: event.country.as_deref(),
    };
    if link.hash(prev) != event.hash.as_deref().unwrap_or_default() {
        return Some("its contents do not match its hash (the event was edited)".into());
    }
    None
}
