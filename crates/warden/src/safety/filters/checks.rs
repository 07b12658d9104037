//! Extra checks a loose pattern's match must pass before it counts.

use super::rules::Check;

pub fn passes(check: Check, matched: &str) -> bool {
    match check {
        Check::Luhn => luhn(matched),
    }
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
}
