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
    }
}
