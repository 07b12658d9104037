//! Virtual keys: what clients present instead of the real OpenAI key. Only a hash of each
//! secret is kept; lookup hashes the presented value, so comparison time says nothing.

pub mod countries;
pub mod lifecycle;
mod registry;

pub use registry::{DeclaredKey, KeyRegistry};

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};

use crate::config::EndUserPolicy;
use crate::identity::jwt::JwtVerifier;
use crate::secret::Secret;

pub type SecretHash = [u8; 32];

/// Where a key was declared: the config file, or `warden keys create` (the store).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOrigin {
    Config,
    Store,
}

pub struct VirtualKey {
    pub name: String,
    pub origin: KeyOrigin,
    pub end_user: EndUserPolicy,
    pub trusted_user_field: bool,
    pub jwt: Option<Arc<JwtVerifier>>,
    /// This key's own upstream key; `None` uses the default one.
    pub upstream_key: Option<http::HeaderValue>,
    pub openai_project: Option<http::HeaderValue>,
    /// What a store key may be used for; `None`: no restriction beyond `[limits]`.
    pub scope: Option<KeyScope>,
    /// `shared_objects = true`: sees every stored object, not only the ones it created.
    pub shared_objects: bool,
}

/// Models (exact or `prefix*`) and endpoint labels a key is limited to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyScope {
    pub models: Option<Vec<String>>,
    pub endpoints: Option<Vec<String>>,
}

impl std::fmt::Debug for VirtualKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtualKey")
            .field("name", &self.name)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

pub fn hash_secret(secret: &str) -> SecretHash {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, secret.as_bytes()).as_ref());
    out
}

pub fn hash_hex(hash: &SecretHash) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn parse_hash_hex(text: &str) -> Option<SecretHash> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = u8::from_str_radix(text.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

/// A new client secret: `wk-` and 32 random bytes, shown once and never stored.
pub fn generate_secret() -> Result<Secret, ring::error::Unspecified> {
    let mut bytes = [0u8; 32];
    SystemRandom::new().fill(&mut bytes)?;
    Ok(Secret::new(format!("wk-{}", URL_SAFE_NO_PAD.encode(bytes))))
}

/// The first characters of a secret, safe to show in listings to tell keys apart.
pub fn display_prefix(secret: &str) -> String {
    secret.chars().take(8).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn hex_round_trip() {
        let h = hash_secret("abc");
        assert_eq!(parse_hash_hex(&hash_hex(&h)), Some(h));
        assert_eq!(parse_hash_hex("zz"), None);
    }

    #[test]
    fn generated_secrets_are_unique_and_long() {
        let a = generate_secret().unwrap();
        let b = generate_secret().unwrap();
        assert_ne!(a, b);
        assert!(a.expose().starts_with("wk-"));
        assert!(a.expose().len() > 40);
    }
}
