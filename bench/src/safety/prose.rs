//! Deterministic filler prose for the content-safety runs. Each seed gives a different text,
//! so every answer (and every window of a streamed answer) is new to Warden's moderation
//! cache and really costs a Moderation call, as a real model's answers would.

/// Plain support-chat vocabulary: nothing a filter or the jailbreak judge should react to.
const WORDS: &[&str] = &[
    "the",
    "backpack",
    "order",
    "arrives",
    "within",
    "three",
    "working",
    "days",
    "and",
    "the",
    "carrier",
    "scans",
    "each",
    "parcel",
    "at",
    "the",
    "first",
    "hub",
    "so",
    "tracking",
    "updates",
    "tomorrow",
    "your",
    "tent",
    "poles",
    "are",
    "aluminium",
    "with",
    "a",
    "spare",
    "segment",
    "in",
    "the",
    "repair",
    "kit",
    "returns",
    "are",
    "free",
    "for",
    "thirty",
    "days",
    "if",
    "the",
    "tags",
    "stay",
    "on",
    "we",
    "can",
    "exchange",
    "the",
    "size",
    "or",
    "colour",
    "boots",
    "need",
    "a",
    "short",
    "break-in",
    "walk",
    "before",
    "a",
    "long",
    "trip",
    "wax",
    "the",
    "leather",
    "after",
    "rain",
    "and",
    "dry",
    "it",
    "slowly",
    "away",
    "from",
    "heat",
];

/// `chars` ASCII characters of prose picked by a small LCG seeded with `seed`.
pub fn prose(seed: u64, chars: usize) -> String {
    // Knuth's MMIX constants; quality is irrelevant, only determinism and variety matter.
    let step = |s: u64| {
        s.wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407)
    };
    let mut state = step(seed ^ 0x5eed);
    let mut out = String::with_capacity(chars + 16);
    while out.len() < chars {
        state = step(state);
        let index = usize::try_from(state >> 33).unwrap_or(0) % WORDS.len();
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(WORDS.get(index).copied().unwrap_or("gear"));
    }
    // Every word is ASCII, so any byte offset is a character boundary.
    out.truncate(chars);
    // The text travels in a header (`x-standin-reply`), and HTTP trims a trailing space.
    if out.ends_with(' ') {
        out.pop();
        out.push('.');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prose_has_the_asked_length_and_differs_by_seed() {
        let a = prose(1, 300);
        assert_eq!(a.len(), 300);
        assert_eq!(a, prose(1, 300), "same seed, same text");
        assert_ne!(a, prose(2, 300));
        assert!(a.is_ascii());
        for seed in 0..200 {
            assert!(!prose(seed, 37).ends_with(' '), "seed {seed}");
        }
    }
}
