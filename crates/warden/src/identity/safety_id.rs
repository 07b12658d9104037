//! The `safety_identifier` OpenAI sees: a keyed hash of (virtual key, end user), stable per
//! user, never the raw id, and different for the same id on another key.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::hmac;
use std::sync::OnceLock;

use crate::secret::Secret;

/// Prefix that names the scheme, so a later change of derivation can be told apart.
const PREFIX: &str = "wsi1_";

pub struct SafetyIdentifiers {
    /// Unset only while a gateway that started without its store waits for the secret
    /// kept there; requests are refused until then (`ready`).
    key: OnceLock<hmac::Key>,
}

impl SafetyIdentifiers {
    pub fn new(secret: &Secret) -> Self {
        let ids = Self::pending();
        ids.set(secret);
        ids
    }

    /// Without a secret yet: `set` gives it once the store answers.
    pub fn pending() -> Self {
        Self {
            key: OnceLock::new(),
        }
    }

    /// Gives the secret; a second call changes nothing.
    pub fn set(&self, secret: &Secret) {
        let _ = self.key.set(hmac::Key::new(
            hmac::HMAC_SHA256,
            secret.expose().as_bytes(),
        ));
    }

    /// Whether identifiers can be derived.
    pub fn ready(&self) -> bool {
        self.key.get().is_some()
    }

    /// 48 characters: within OpenAI's 64-character limit on chat and responses.
    pub fn for_user(&self, key_name: &str, user_id: Option<&str>) -> String {
        let Some(key) = self.key.get() else {
            // Not reached: the handler refuses requests until `ready`, and nothing else
            // derives identifiers before a request does. Never an identifier OpenAI sees.
            debug_assert!(
                false,
                "safety identifier asked for before the secret is known"
            );
            return format!("{PREFIX}pending");
        };
        let mut ctx = hmac::Context::with_key(key);
        // Length-prefixed parts, so ("ab","c") and ("a","bc") never collide.
        ctx.update(&(key_name.len() as u64).to_be_bytes());
        ctx.update(key_name.as_bytes());
        match user_id {
            Some(user) => {
                ctx.update(b"u");
                ctx.update(user.as_bytes());
            }
            // Traffic with no end user on an optional key gets one identifier per key,
            // so OpenAI can still act on that service rather than the organization.
            None => ctx.update(b"-"),
        }
        let tag = ctx.sign();
        let mut out = String::with_capacity(48);
        out.push_str(PREFIX);
        URL_SAFE_NO_PAD.encode_string(tag.as_ref(), &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> SafetyIdentifiers {
        SafetyIdentifiers::new(&Secret::new("0123456789abcdef-test"))
    }

    #[test]
    fn stable_short_and_opaque() {
        let a = ids().for_user("chat", Some("alice"));
        assert_eq!(a, ids().for_user("chat", Some("alice")));
        assert!(a.len() <= 64);
        assert!(!a.contains("alice"));
    }

    #[test]
    fn bound_to_the_key_and_the_user() {
        let ids = ids();
        let a = ids.for_user("chat", Some("alice"));
        assert_ne!(a, ids.for_user("chat", Some("bob")));
        assert_ne!(a, ids.for_user("other", Some("alice")));
        assert_ne!(ids.for_user("ab", Some("c")), ids.for_user("a", Some("bc")));
        assert_ne!(ids.for_user("chat", None), ids.for_user("chat", Some("")));
    }

    #[test]
    fn depends_on_the_secret() {
        let other = SafetyIdentifiers::new(&Secret::new("another-secret-value"));
        assert_ne!(
            ids().for_user("k", Some("u")),
            other.for_user("k", Some("u"))
        );
    }
}
