//! `k i l l`, `k.i.l.l` and `k-i-l-l` become `kill`: three or more single letters, each
//! separated by exactly one space, dot, dash, underscore or star. Most texts have no such
//! run, so one cheap search for the first one decides whether anything is rewritten.

fn is_sep(b: u8) -> bool {
    matches!(b, b' ' | b'.' | b'-' | b'_' | b'*')
}

/// Per byte: bit 0 for a letter or digit, bit 1 for a separator.
const CLASS: [u8; 256] = {
    let mut class = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let byte = b as u8;
        if byte.is_ascii_alphanumeric() {
            class[b] = 1;
        } else if matches!(byte, b' ' | b'.' | b'-' | b'_' | b'*') {
            class[b] = 2;
        }
        b += 1;
    }
    class
};

/// Where the first run of three or more single letters starts, if any. The classes of the
/// last seven bytes roll through one integer, two bits each, and one compare per byte
/// tests `?A S A S A ?` where both `?` are not letters or digits. Outside the text counts
/// as neither.
fn first_run(out: &[u8]) -> Option<usize> {
    // Oldest byte in the highest bits: ?, A, S, A, S, A, ?.
    const MASK: u32 = 0b01_01_10_01_10_01_01;
    const WANT: u32 = 0b00_01_10_01_10_01_00;
    let mut state = 0u32;
    for (i, &b) in out.iter().chain(std::iter::once(&0)).enumerate() {
        state = (state << 2) | u32::from(CLASS[usize::from(b)]);
        if state & MASK == WANT && i >= 5 {
            return Some(i - 5);
        }
    }
    None
}

pub fn join(out: &mut Vec<u8>) {
    if let Some(first) = first_run(out) {
        // Everything before the first run would be copied onto itself.
        join_from(out, first);
    }
}

/// Joins the runs in `out[from..]`, compacting in place.
fn join_from(out: &mut Vec<u8>, from: usize) {
    let n = out.len();
    let single = |i: usize, out: &[u8]| -> bool {
        out[i].is_ascii_alphanumeric()
            && (i == 0 || !out[i - 1].is_ascii_alphanumeric())
            && (i + 1 == n || !out[i + 1].is_ascii_alphanumeric())
    };
    let (mut read, mut write) = (from, from);
    while read < n {
        // Measure a run of single letters starting here.
        let mut end = read;
        let mut count = 0;
        while end < n && single(end, out) {
            count += 1;
            if end + 2 < n && is_sep(out[end + 1]) && single(end + 2, out) {
                end += 2;
            } else {
                end += 1;
                break;
            }
        }
        if count >= 3 {
            for i in (read..end).step_by(2) {
                out[write] = out[i];
                write += 1;
            }
            read = end;
        } else {
            out[write] = out[read];
            write += 1;
            read += 1;
        }
    }
    out.truncate(write);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn joined(text: &str) -> String {
        let mut out = text.as_bytes().to_vec();
        join(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn runs_anywhere_in_long_texts_are_found() {
        let pad = "nothing to see here ".repeat(4);
        for at in (0..pad.len()).filter(|&at| at == 0 || pad.as_bytes()[at - 1] == b' ') {
            let text = format!("{}k i l l {}", &pad[..at], &pad[at..]);
            let want = format!("{}kill {}", &pad[..at], &pad[at..]);
            assert_eq!(joined(&text), want, "run at {at}");
        }
        assert_eq!(joined("a.b.c"), "abc");
        assert_eq!(joined("xa.b.c"), "xa.b.c");
        assert_eq!(joined("a.b.cx"), "a.b.cx");
        assert_eq!(joined("a b"), "a b");
        assert_eq!(joined(&pad), pad);
    }

    #[test]
    fn skipping_to_the_first_run_changes_nothing() {
        let pieces = [
            "a", "b", "7", " ", ".", "-", "_", "*", "xy", "\u{e9}", "k i l l", ",",
        ];
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            let mut text = Vec::new();
            for _ in 0..(state % 40) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                text.extend_from_slice(pieces[state as usize % pieces.len()].as_bytes());
            }
            let (mut fast, mut full) = (text.clone(), text.clone());
            join(&mut fast);
            join_from(&mut full, 0);
            assert_eq!(fast, full, "{:?}", String::from_utf8_lossy(&text));
        }
    }
}
