//! Extra checks a loose pattern's match must pass before it counts.

use super::rules::Check;

pub fn passes(check: Check, matched: &str) -> bool {
    match check {
        Check::Luhn => luhn(matched),
        Check::Credential => credential(matched),
    }
}

/// Whether a labelled value reads like a real credential rather than code or a
/// placeholder: `password = get_password()`, `api_key: process.env.API_KEY`,
/// `postgres://user:password@host` and `token = "<your token>"` all carry the label but
/// no secret. A real one mixes character kinds (`hunter2Xq`, `wJalrXUtnFEMI/K7MDENG`).
pub fn credential(value: &str) -> bool {
    if value.len() < 6 {
        return false;
    }
    let lower = value.to_ascii_lowercase();
    const PLACEHOLDERS: [&str; 13] = [
        "example",
        "your",
        "xxxx",
        "placeholder",
        "changeme",
        "redacted",
        "password",
        "secret",
        "token",
        "dummy",
        "sample",
        "****",
        "...",
    ];
    if PLACEHOLDERS.iter().any(|p| lower.contains(p)) {
        return false;
    }
    // Template and variable references: ${DB_PASS}, {{ token }}, $(cat key), %(pw)s.
    if value.starts_with(['$', '{', '%', '<', '(', '[']) {
        return false;
    }
    let identifier = |part: &str| {
        part.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    // A call or a dotted path (`settings.API_KEY`, `os.getenv(`) is code.
    let (path, call) = match value.split_once('(') {
        Some((path, _)) => (path, true),
        None => (value.trim_end_matches(';'), false),
    };
    let path = path.replace("::", ".").replace("->", ".");
    if path.split('.').all(identifier) && (path.contains('.') || call) {
        return false;
    }
    let has = |f: fn(&char) -> bool| value.chars().any(|c| f(&c));
    let kinds = [
        has(char::is_ascii_lowercase),
        has(char::is_ascii_uppercase),
        has(char::is_ascii_digit),
        has(|c| c.is_ascii_punctuation() && *c != '_'),
    ];
    let mixed = kinds.iter().filter(|&&k| k).count() >= 2;
    // snake_case or SHOUTING_CASE words with nothing else are a name, not a secret.
    let words_only = value.chars().all(|c| c.is_ascii_alphabetic() || c == '_')
        && (value.contains('_') || value.len() < 16);
    mixed && !words_only
}

/// The payment-card checksum over the digits of `text` (separators ignored), 13-19 digits.
pub fn luhn(text: &str) -> bool {
    let digits: Vec<u32> = text.chars().filter_map(|c| c.to_digit(10)).collect();
    if !(13..=19).contains(&digits.len()) || digits.iter().all(|&d| d == digits[0]) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                let doubled = d * 2;
                if doubled > 9 {
                    doubled - 9
                } else {
                    doubled
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_accepts_real_test_numbers_and_rejects_typos() {
        assert!(luhn("4111 1111 1111 1111"));
        assert!(luhn("5500-0000-0000-0004"));
        assert!(luhn("378282246310005"));
        assert!(!luhn("4111 1111 1111 1112"));
        assert!(!luhn("1234567890123"));
        // Too short, and the all-zero number that passes the sum but is no card.
        assert!(!luhn("4111"));
        assert!(!luhn("0000000000000000"));
    }

    #[test]
    fn credentials_are_told_from_code_and_placeholders() {
        for real in [
            "Tr0ub4dor&3horse",
            "wJalrXUtnFEMI/K7MDENG",
            "9f8e7d6c5b4a3928",
            "p4ss-2026",
        ] {
            assert!(credential(real), "{real}");
        }
        for not in [
            "get_api_key_from_config()",
            "os.getenv(\"KEY\")",
            "settings.SECRET_KEY",
            "process.env.API_KEY;",
            "std::env::current_dir()?;",
            "${DB_PASS}",
            "YOUR_API_KEY",
            "changeme123",
            "password",
            "abc",
            "REPLACE_ME",
        ] {
            assert!(!credential(not), "{not}");
        }
    }
}
