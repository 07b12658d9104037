//! The fold of a pure-ASCII text in bulk: NFKC is the identity on ASCII, so the fold is a
//! lower-casing copy plus two rare fix-ups (leetspeak words, whitespace that is not a lone
//! space). Chunks of 16 bytes are tested with branch-free predicates the compiler turns
//! into vector compares, so prose with neither costs about one copy. The result is byte
//! for byte what `Normalizer`'s per-character path gives (a test holds them together).

const CHUNK: usize = 16;

/// Appends the fold of `bytes` (all ASCII) to `out`, which must be empty: leading
/// whitespace is dropped as the per-character path drops it at the start of the output.
pub fn fold(bytes: &[u8], out: &mut Vec<u8>) {
    debug_assert!(out.is_empty() && bytes.is_ascii());
    out.extend(bytes.iter().map(u8::to_ascii_lowercase));
    undo_leetspeak(bytes, out);
    collapse_whitespace(bytes, out);
}

fn is_leet(b: u8) -> bool {
    let digit = b.wrapping_sub(b'0');
    (digit < 8) & (digit != 2) & (digit != 6) | (b == b'@') | (b == b'$')
}

fn is_letter(b: u8) -> bool {
    (b | 0x20).wrapping_sub(b'a') < 26
}

/// Whitespace other than the plain space: always rewritten.
fn is_odd_space(b: u8) -> bool {
    b.wrapping_sub(0x09) < 5
}

fn is_space(b: u8) -> bool {
    b == b' ' || is_odd_space(b)
}

/// The first `i >= from` with `hit(bytes, i)`, skipping whole chunks where `any` says none.
/// `any` sees the chunk plus one byte of look-ahead when there is one.
fn find(
    bytes: &[u8],
    from: usize,
    any: impl Fn(&[u8]) -> bool,
    hit: impl Fn(&[u8], usize) -> bool,
) -> Option<usize> {
    let mut at = from;
    while at + CHUNK < bytes.len() && !any(&bytes[at..at + CHUNK + 1]) {
        at += CHUNK;
    }
    (at..bytes.len()).find(|&i| hit(bytes, i))
}

/// `h4ck` → `hack`: in a word (letters and leet symbols) where a digit or symbol sits
/// right before a letter, every leet symbol becomes its letter; `base64`, `gpt4`, `2024`
/// stay. Offsets in `bytes` and `out` agree: this runs before any byte is dropped.
fn undo_leetspeak(bytes: &[u8], out: &mut [u8]) {
    let in_word = |b: u8| is_letter(b) || is_leet(b);
    let any = |chunk: &[u8]| chunk.iter().fold(false, |seen, &b| seen | is_leet(b));
    let mut from = 0;
    while let Some(at) = find(bytes, from, any, |b, i| is_leet(b[i])) {
        let start = (0..at)
            .rev()
            .find(|&i| !in_word(bytes[i]))
            .map_or(0, |i| i + 1);
        let end = (at..bytes.len())
            .find(|&i| !in_word(bytes[i]))
            .unwrap_or(bytes.len());
        let word = &bytes[start..end];
        if word.windows(2).any(|w| is_leet(w[0]) && is_letter(w[1])) {
            for b in &mut out[start..end] {
                *b = match *b {
                    b'0' => b'o',
                    b'1' => b'i',
                    b'3' => b'e',
                    b'4' | b'@' => b'a',
                    b'5' | b'$' => b's',
                    b'7' => b't',
                    other => other,
                };
            }
        }
        from = end;
    }
}

/// Every run of whitespace becomes one space, and a run at the very start disappears.
/// Only runs that are not already a lone space cost anything.
fn collapse_whitespace(bytes: &[u8], out: &mut Vec<u8>) {
    // The first byte of a run that needs rewriting.
    let odd = |b: &[u8], i: usize| {
        is_space(b[i])
            && (i == 0 || b[i] != b' ' || b.get(i + 1).is_some_and(|&next| is_space(next)))
    };
    let any = |chunk: &[u8]| {
        chunk.windows(2).fold(false, |seen, w| {
            seen | is_odd_space(w[0]) | ((w[0] == b' ') & is_space(w[1]))
        })
    };
    // `any` sees pairs, so a lone space at the very start is the one case it cannot see.
    let next = |from: usize| {
        if from == 0 && bytes.first() == Some(&b' ') {
            Some(0)
        } else {
            find(bytes, from, any, odd)
        }
    };
    let (mut read, mut write) = (0, 0);
    while let Some(at) = next(read) {
        out.copy_within(read..at, write);
        write += at - read;
        if at > 0 {
            out[write] = b' ';
            write += 1;
        }
        read = (at..bytes.len())
            .find(|&i| !is_space(bytes[i]))
            .unwrap_or(bytes.len());
    }
    if read == 0 {
        return;
    }
    out.copy_within(read.., write);
    out.truncate(write + bytes.len() - read);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn folded(text: &str) -> String {
        let mut out = Vec::new();
        fold(text.as_bytes(), &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn whitespace_runs_become_one_space() {
        assert_eq!(folded("  a \t\n b\r\nc d  "), "a b c d ");
        assert_eq!(folded("\nx"), "x");
        assert_eq!(folded(" x"), "x");
        assert_eq!(folded("x\ty"), "x y");
        let long = format!("{}\n\n{}", "a".repeat(40), "b ".repeat(20));
        assert_eq!(
            folded(&long),
            format!("{} {}", "a".repeat(40), "b ".repeat(20))
        );
    }

    #[test]
    fn leetspeak_in_long_texts() {
        let pad = "plain words here ".repeat(3);
        assert_eq!(
            folded(&format!("{pad}1gn0r3 all, gpt4 2024 h4ck3r")),
            format!("{pad}ignore all, gpt4 2024 hacker")
        );
    }
}
