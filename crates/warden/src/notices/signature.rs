//! Standard Webhooks signatures, as OpenAI signs its webhooks: HMAC-SHA256 keyed with the
//! base64 secret after `whsec_`, over `<webhook-id>.<webhook-timestamp>.<raw body>`; the
//! `webhook-signature` header lists one or more `v1,<base64>` entries.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ring::hmac;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("webhook-timestamp is not a unix time in seconds")]
    BadTimestamp,
    #[error("webhook-timestamp is {0} s away from now (tolerance {1} s)")]
    Stale(i64, u64),
    #[error("no v1 signature matches")]
    NoMatch,
}

/// The HMAC key inside a `whsec_…` secret.
pub fn decode_secret(secret: &str) -> Option<Vec<u8>> {
    let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
    STANDARD.decode(encoded).ok().filter(|k| !k.is_empty())
}

/// The headers of one delivery, as received.
pub struct Delivery<'a> {
    pub id: Option<&'a str>,
    pub timestamp: Option<&'a str>,
    pub signatures: Option<&'a str>,
    pub body: &'a [u8],
}

/// Checks one delivery against the key; `now` in unix seconds.
pub fn verify(
    key: &[u8],
    delivery: &Delivery<'_>,
    now: i64,
    tolerance_secs: u64,
) -> Result<(), Rejected> {
    let id = delivery.id.ok_or(Rejected::MissingHeader("webhook-id"))?;
    let timestamp = delivery
        .timestamp
        .ok_or(Rejected::MissingHeader("webhook-timestamp"))?;
    let signatures = delivery
        .signatures
        .ok_or(Rejected::MissingHeader("webhook-signature"))?;
    let sent: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| Rejected::BadTimestamp)?;
    let skew = now - sent;
    if skew.unsigned_abs() > tolerance_secs {
        return Err(Rejected::Stale(skew, tolerance_secs));
    }
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut signed = Vec::with_capacity(id.len() + timestamp.len() + delivery.body.len() + 2);
    signed.extend_from_slice(id.as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(timestamp.trim().as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(delivery.body);
    let matched = signatures
        .split_whitespace()
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .filter_map(|b64| STANDARD.decode(b64).ok())
        // ring's verify compares in constant time.
        .any(|tag| hmac::verify(&key, &signed, &tag).is_ok());
    if matched {
        Ok(())
    } else {
        Err(Rejected::NoMatch)
    }
}

/// Signs like OpenAI does: the `webhook-signature` value for a delivery (tests, demo).
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut signed = format!("{id}.{timestamp}.").into_bytes();
    signed.extend_from_slice(body);
    format!("v1,{}", STANDARD.encode(hmac::sign(&key, &signed).as_ref()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn delivery<'a>(sig: &'a str, ts: &'a str, body: &'a [u8]) -> Delivery<'a> {
        Delivery {
            id: Some("msg_1"),
            timestamp: Some(ts),
            signatures: Some(sig),
            body,
        }
    }

    #[test]
    fn accepts_its_own_signature_among_several() {
        let key = decode_secret(SECRET).unwrap();
        let body = br#"{"type":"safety.warning_issued"}"#;
        let good = sign(&key, "msg_1", 1_000, body);
        let header = format!("v1,AAAA {good} v2,zzz");
        assert_eq!(
            verify(&key, &delivery(&header, "1000", body), 1_100, 300),
            Ok(())
        );
    }

    #[test]
    fn refuses_tampering_staleness_and_missing_headers() {
        let key = decode_secret(SECRET).unwrap();
        let body = br#"{"a":1}"#;
        let good = sign(&key, "msg_1", 1_000, body);
        assert_eq!(
            verify(&key, &delivery(&good, "1000", br#"{"a":2}"#), 1_000, 300),
            Err(Rejected::NoMatch)
        );
        assert_eq!(
            verify(&key, &delivery(&good, "1000", body), 1_301, 300),
            Err(Rejected::Stale(301, 300))
        );
        assert_eq!(
            verify(&key, &delivery(&good, "abc", body), 1_000, 300),
            Err(Rejected::BadTimestamp)
        );
        let mut missing = delivery(&good, "1000", body);
        missing.id = None;
        assert_eq!(
            verify(&key, &missing, 1_000, 300),
            Err(Rejected::MissingHeader("webhook-id"))
        );
        assert!(decode_secret("whsec_!!!").is_none());
    }
}
