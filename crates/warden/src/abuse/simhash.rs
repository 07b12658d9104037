//! SimHash fingerprints of normalised prompts: templated prompts ("Describe product 123
//! as JSON", "Describe product 124 as JSON") land a few bits apart, unrelated prompts
//! about half the bits apart.

/// Fingerprints at most this distance apart are near-duplicates. Measured (120 pairs of
/// short, unrelated chat prompts; 66 pairs of one product-description template with two
/// slots varied): unrelated prompts sit at 17-38 bits, except "What is the capital of
/// X?"-style pairs (13), which are templates themselves; variants of one template sit
/// at 0-9 bits when one slot differs, 11-15 when two do. A templated stream needs only
/// one earlier close variant per request to count, so 12 catches it while ordinary
/// traffic stays clear.
pub const NEAR_DUPLICATE_BITS: u32 = 12;

/// Lower case; every digit becomes `0` (ids and counters are what templates vary);
/// anything else that is not a letter separates words.
pub fn normalise(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    for c in text.chars() {
        if c.is_alphabetic() {
            word.extend(c.to_lowercase());
        } else if c.is_numeric() {
            if !word.ends_with('0') {
                word.push('0');
            }
        } else if !word.is_empty() {
            words.push(std::mem::take(&mut word));
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

/// FNV-1a: stable across processes and versions (the std hasher is not).
fn fnv(parts: &[&str]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            hash ^= 0x1f;
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        for b in part.bytes() {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

/// 64-bit SimHash over words and word pairs; `None` for text with no words.
pub fn simhash(text: &str) -> Option<u64> {
    let words = normalise(text);
    if words.is_empty() {
        return None;
    }
    let mut weights = [0i32; 64];
    let mut add = |h: u64| {
        for (bit, w) in weights.iter_mut().enumerate() {
            if h >> bit & 1 == 1 {
                *w += 1;
            } else {
                *w -= 1;
            }
        }
    };
    for word in &words {
        add(fnv(&[word]));
    }
    for pair in words.windows(2) {
        add(fnv(&[&pair[0], &pair[1]]));
    }
    Some(
        weights
            .iter()
            .enumerate()
            .filter(|(_, w)| **w > 0)
            .fold(0u64, |acc, (bit, _)| acc | 1 << bit),
    )
}

pub fn distance(a: u64, b: u64) -> u32 {
    (a ^ b).count_ones()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn templated_prompts_are_near_and_different_prompts_far() {
        let a = simhash("Generate a detailed JSON record for product #1042 in category Garden tools, with fields name, price, rating.").unwrap();
        let b = simhash("Generate a detailed JSON record for product #77 in category Garden tools, with fields name, price, rating.").unwrap();
        let c = simhash("What's a good recipe for a vegetarian lasagna that my kids will eat?")
            .unwrap();
        let d = simhash("Explain the difference between TCP and UDP to a new network engineer.")
            .unwrap();
        assert!(distance(a, b) <= NEAR_DUPLICATE_BITS, "{}", distance(a, b));
        assert!(distance(a, c) > NEAR_DUPLICATE_BITS, "{}", distance(a, c));
        assert!(distance(c, d) > NEAR_DUPLICATE_BITS, "{}", distance(c, d));
        assert_eq!(normalise("Item 12, x3!"), vec!["item", "0", "x0"]);
        assert!(simhash("  123 ").is_some());
        assert!(simhash(" !! ").is_none());
    }
}
