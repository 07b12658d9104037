//! The audit hash chain: every stored event carries the hash of the one before it in its
//! chain, so an edit, an insertion or a deletion breaks a link `warden audit verify` finds.
//!
//! One chain per writer: each Warden process starts its own chain (a random id) at start-up
//! and is its only writer, so replicas sharing one PostgreSQL never contend for a chain
//! head and the order inside a chain is the writer's own order. A chain's head (last
//! sequence number and hash) is kept in `audit_chains`, updated in the same transaction
//! as the events, so deleting the newest events is noticed too.
//!
//! hash = SHA-256( "warden-event-v1" ‖ prev_hash ‖ field₁ ‖ field₂ ‖ … ), each field in a
//! fixed order as a tag byte (0 = absent, 1 = text, 2 = integer) followed by, for text,
//! its byte length as u64 big-endian and the bytes; for an integer, i64 big-endian.
//! Absent and empty therefore differ, and no field can bleed into the next.

use ring::digest::{Context, SHA256};

use super::content::hex;
use super::EventRecord;

/// `prev_hash` of the first event of a chain.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
const DOMAIN: &[u8] = b"warden-event-v1";

/// The chained fields of one event, borrowed from a record (writing) or a stored row
/// (verifying), so both hash exactly the same bytes.
#[derive(Debug, Clone, Copy)]
pub struct Link<'a> {
    pub chain_id: &'a str,
    pub seq: i64,
    pub request_id: &'a str,
    pub at_ms: i64,
    pub kind: &'a str,
    pub key_name: Option<&'a str>,
    pub end_user: Option<&'a str>,
    pub safety_identifier: Option<&'a str>,
    pub client_ip: Option<&'a str>,
    pub endpoint: Option<&'a str>,
    pub model: Option<&'a str>,
    pub stream: bool,
    pub status: i64,
    pub outcome: &'a str,
    pub reason: Option<&'a str>,
    pub latency_us: i64,
    pub upstream_us: Option<i64>,
    pub detail: Option<&'a str>,
    pub content_sha256: Option<&'a str>,
    pub content_len: Option<i64>,
    pub country: Option<&'a str>,
}

impl<'a> Link<'a> {
    pub fn of(chain_id: &'a str, seq: i64, e: &'a EventRecord) -> Link<'a> {
        Link {
            chain_id,
            seq,
            request_id: &e.request_id,
            at_ms: e.at_ms,
            kind: e.kind,
            key_name: e.key_name.as_deref(),
            end_user: e.end_user.as_deref(),
            safety_identifier: e.safety_identifier.as_deref(),
            client_ip: e.client_ip.as_deref(),
            endpoint: Some(e.endpoint),
            model: e.model.as_deref(),
            stream: e.stream,
            status: i64::from(e.status),
            outcome: e.outcome,
            reason: e.reason.as_deref(),
            latency_us: e.latency_us,
            upstream_us: e.upstream_us,
            detail: e.detail.as_deref(),
            content_sha256: e.content_sha256.as_deref(),
            content_len: e.content_len,
            country: e.country.as_deref(),
        }
    }

    /// The event's hash given the previous event's (lower-case hex).
    pub fn hash(&self, prev_hash: &str) -> String {
        let mut h = Enc(Context::new(&SHA256));
        h.0.update(DOMAIN);
        h.text(Some(prev_hash));
        h.text(Some(self.chain_id));
        h.int(Some(self.seq));
        h.text(Some(self.request_id));
        h.int(Some(self.at_ms));
        h.text(Some(self.kind));
        h.text(self.key_name);
        h.text(self.end_user);
        h.text(self.safety_identifier);
        h.text(self.client_ip);
        h.text(self.endpoint);
        h.text(self.model);
        h.int(Some(i64::from(self.stream)));
        h.int(Some(self.status));
        h.text(Some(self.outcome));
        h.text(self.reason);
        h.int(Some(self.latency_us));
        h.int(self.upstream_us);
        h.text(self.detail);
        h.text(self.content_sha256);
        h.int(self.content_len);
        h.text(self.country);
        hex(h.0.finish().as_ref())
    }
}

struct Enc(Context);

impl Enc {
    fn text(&mut self, value: Option<&str>) {
        match value {
            None => self.0.update(&[0]),
            Some(text) => {
                self.0.update(&[1]);
                self.0.update(&(text.len() as u64).to_be_bytes());
                self.0.update(text.as_bytes());
            }
        }
    }

    fn int(&mut self, value: Option<i64>) {
        match value {
            None => self.0.update(&[0]),
            Some(n) => {
                self.0.update(&[2]);
                self.0.update(&n.to_be_bytes());
            }
        }
    }
}

/// A new chain id: unique per process start, sortable by start time.
pub fn new_chain_id() -> String {
    format!("c{:013}-{:016x}", super::now_ms(), fastrand::u64(..))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> EventRecord {
        EventRecord {
            request_id: "wrq_1".into(),
            at_ms: 1_700_000_000_000,
            kind: "request",
            endpoint: "chat.completions",
            outcome: "allowed",
            status: 200,
            key_name: Some("app".into()),
            ..EventRecord::default()
        }
    }

    #[test]
    fn every_field_and_the_previous_hash_count() {
        let e = record();
        let base = Link::of("c1", 1, &e).hash(GENESIS);
        assert_eq!(base.len(), 64);
        assert_eq!(base, Link::of("c1", 1, &e).hash(GENESIS), "deterministic");
        assert_ne!(base, Link::of("c1", 2, &e).hash(GENESIS));
        assert_ne!(base, Link::of("c2", 1, &e).hash(GENESIS));
        assert_ne!(base, Link::of("c1", 1, &e).hash(&base));
        let mut edited = record();
        edited.status = 400;
        assert_ne!(base, Link::of("c1", 1, &edited).hash(GENESIS));
        // Absent and empty are different values.
        let mut empty = record();
        empty.key_name = Some(String::new());
        let mut absent = record();
        absent.key_name = None;
        assert_ne!(
            Link::of("c1", 1, &empty).hash(GENESIS),
            Link::of("c1", 1, &absent).hash(GENESIS)
        );
        // A field's bytes cannot move into its neighbour.
        let mut a = record();
        a.end_user = Some("ab".into());
        a.safety_identifier = Some("c".into());
        let mut b = record();
        b.end_user = Some("a".into());
        b.safety_identifier = Some("bc".into());
        assert_ne!(
            Link::of("c1", 1, &a).hash(GENESIS),
            Link::of("c1", 1, &b).hash(GENESIS)
        );
    }
}
