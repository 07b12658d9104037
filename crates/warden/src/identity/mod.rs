//! Who a request is for: the end user behind it and the identifier OpenAI sees for them.

pub mod jwt;
pub mod safety_id;

use crate::error::WardenError;

/// Where the end-user id came from, kept on events for review.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserSource {
    Header,
    Token,
    BodyField,
}

impl UserSource {
    pub fn label(self) -> &'static str {
        match self {
            UserSource::Header => "header",
            UserSource::Token => "token",
            UserSource::BodyField => "body",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndUser {
    pub id: String,
    pub source: UserSource,
}

pub const MAX_USER_ID_CHARS: usize = 256;

/// An end-user id is 1-256 printable characters; anything else is refused, not trimmed.
pub fn validate_user_id(id: &str) -> Result<(), WardenError> {
    if id.trim().is_empty() {
        return Err(WardenError::InvalidEndUser("it is empty".into()));
    }
    if id.chars().count() > MAX_USER_ID_CHARS {
        return Err(WardenError::InvalidEndUser(format!(
            "it is longer than {MAX_USER_ID_CHARS} characters"
        )));
    }
    if id.chars().any(char::is_control) {
        return Err(WardenError::InvalidEndUser(
            "it contains control characters".into(),
        ));
    }
    // An id that carries a credential would be stored, listed and served by the admin API
    // and the CLI: refuse it rather than keep someone's key.
    if let Some(kind) = crate::logs::mask::shared().and_then(|m| m.secret_in(id)) {
        return Err(WardenError::InvalidEndUser(format!(
            "it looks like a credential ({kind}); send a stable user id, never a key"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_are_checked() {
        assert!(validate_user_id("alice@example.com").is_ok());
        assert!(validate_user_id("  ").is_err());
        assert!(validate_user_id("a\u{0}b").is_err());
        assert!(validate_user_id(&"x".repeat(257)).is_err());
        assert!(validate_user_id("ünïcødé").is_ok());
        let key = format!("sk-proj-{}", "A1b2C3d4E5f6G7h8I9j0".repeat(3));
        assert!(validate_user_id(&key).is_err());
    }
}

#[cfg(test)]
mod secret_ids {
    use super::*;

    /// Ordinary ids, hashed ids (what OpenAI recommends) and session ids are not
    /// mistaken for credentials.
    #[test]
    fn ordinary_and_hashed_ids_pass() {
        for id in [
            "alice@example.com",
            "user_12345",
            "550e8400-e29b-41d4-a716-446655440000",
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            "sess_8fJ2kL9qPz",
            "bXlfdXNlcl9pZA==",
            "auth0|5f7c8ec7c33c6c004bbafe82",
        ] {
            assert!(validate_user_id(id).is_ok(), "{id}");
        }
    }
}
