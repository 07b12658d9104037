//! Folds text into the one form every keyword and jailbreak rule is written against:
//! NFKC, lower case, common homoglyphs to ASCII, zero-width characters dropped, whitespace
//! collapsed, leetspeak inside words undone, and spaced-out letters (`k i l l`) joined.
//! It works on bytes so the hot ASCII path is one tight loop with no allocation per char.

use unicode_normalization::UnicodeNormalization;

/// What the fold saw besides the folded text: signals for the jailbreak detector.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Signals {
    /// Zero-width, tag and variation-selector characters removed.
    pub invisible: usize,
    /// Letters from Cyrillic or Greek that look like Latin ones, folded to ASCII.
    pub homoglyphs: usize,
}

/// Reusable buffers so scanning many texts allocates once.
#[derive(Debug, Default)]
pub struct Normalizer {
    pub out: Vec<u8>,
    pub signals: Signals,
    word_start: usize,
    in_word: bool,
    word_letters: bool,
    /// The word has a letter typed as ASCII: look-alikes in it are disguise, not Russian.
    word_ascii: bool,
    word_glyphs: usize,
    from_glyph: bool,
    leet_before_letter: bool,
    last_leet: bool,
}

impl Normalizer {
    /// Folds `input` into `self.out` (replacing what was there).
    pub fn fold(&mut self, input: &str) -> &[u8] {
        self.out.clear();
        self.out.reserve(input.len());
        self.signals = Signals::default();
        self.word_start = 0;
        self.in_word = false;
        self.word_letters = false;
        self.word_ascii = false;
        self.word_glyphs = 0;
        self.leet_before_letter = false;
        self.last_leet = false;
        if input.is_ascii() {
            for &b in input.as_bytes() {
                // Hot path: a lower-case letter inside a word with no leetspeak before it
                // does exactly what `push_ascii` would, minus the bookkeeping.
                if b.is_ascii_lowercase() && self.in_word && !self.last_leet {
                    self.word_letters = true;
                    self.word_ascii = true;
                    self.out.push(b);
                } else {
                    self.push_ascii(b);
                }
            }
        } else {
            let mut invisible = 0;
            let visible = input.chars().filter(|&c| {
                let hidden = is_invisible(c);
                // Emoji sequences use the joiner and variation selectors legitimately.
                invisible +=
                    usize::from(hidden && !matches!(c, '\u{200D}' | '\u{FE00}'..='\u{FE0F}'));
                !hidden
            });
            for c in visible.nfkc() {
                self.push_char(c);
            }
            self.signals.invisible = invisible;
        }
        self.end_word();
        join_spaced_letters(&mut self.out);
        &self.out
    }

    fn push_char(&mut self, c: char) {
        if c.is_ascii() {
            return self.push_ascii(c as u8);
        }
        if let Some(ascii) = homoglyph(c) {
            // Turkish dotless i is a real letter there; fold it without counting it.
            self.word_glyphs += usize::from(c != 'ı');
            self.from_glyph = true;
            self.push_ascii(ascii);
            self.from_glyph = false;
            return;
        }
        if c.is_whitespace() {
            return self.push_ascii(b' ');
        }
        // A non-ASCII letter belongs to the word; anything else ends it.
        if c.is_alphabetic() {
            self.start_word();
            self.word_letters = true;
        } else {
            self.end_word();
        }
        let mut buf = [0u8; 4];
        for lower in c.to_lowercase() {
            self.out
                .extend_from_slice(lower.encode_utf8(&mut buf).as_bytes());
        }
    }

    fn push_ascii(&mut self, b: u8) {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' => {
                self.start_word();
                if self.last_leet {
                    self.leet_before_letter = true;
                }
                self.last_leet = false;
                self.word_letters = true;
                self.word_ascii |= !self.from_glyph;
                self.out.push(b.to_ascii_lowercase());
            }
            b'0' | b'1' | b'3' | b'4' | b'5' | b'7' | b'@' | b'$' => {
                self.start_word();
                self.last_leet = true;
                self.out.push(b);
            }
            b' ' | b'\t' | b'\n' | b'\r' | 0x0B | 0x0C => {
                self.end_word();
                if self.out.last().is_some_and(|&last| last != b' ') {
                    self.out.push(b' ');
                }
            }
            _ => {
                self.end_word();
                self.out.push(b);
            }
        }
    }

    fn start_word(&mut self) {
        if !self.in_word {
            self.in_word = true;
            self.word_start = self.out.len();
        }
    }

    /// Undoes leetspeak in the word just finished, but only when a digit or symbol sits
    /// before a letter (`h4ck`, `1gn0re`): `base64`, `gpt4` and `2024` stay as they are.
    fn end_word(&mut self) {
        if !self.in_word {
            return;
        }
        self.in_word = false;
        if self.word_letters && self.leet_before_letter {
            for b in &mut self.out[self.word_start..] {
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
        if self.word_ascii {
            self.signals.homoglyphs += self.word_glyphs;
        }
        self.word_ascii = false;
        self.word_glyphs = 0;
        self.word_letters = false;
        self.leet_before_letter = false;
        self.last_leet = false;
    }
}

/// Zero-width, bidi-control, tag and variation-selector characters: invisible when shown.
fn is_invisible(c: char) -> bool {
    matches!(c,
            '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
            | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}' | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}'
            | '\u{FFA0}' | '\u{E0000}'..='\u{E0FFF}')
}

/// Cyrillic and Greek letters that render like Latin ones (after lower-casing).
fn homoglyph(c: char) -> Option<u8> {
    Some(match c {
        'а' | 'А' | 'α' | 'Α' => b'a',
        'в' | 'В' | 'β' | 'Β' => b'b',
        'с' | 'С' | 'ϲ' => b'c',
        'е' | 'Е' | 'ε' | 'Ε' => b'e',
        'н' | 'Н' | 'η' | 'Η' => b'h',
        'і' | 'І' | 'ı' | 'ι' | 'Ι' => b'i',
        'ј' | 'Ј' => b'j',
        'к' | 'К' | 'κ' | 'Κ' => b'k',
        'м' | 'М' | 'Μ' => b'm',
        'о' | 'О' | 'ο' | 'Ο' => b'o',
        'р' | 'Р' | 'ρ' | 'Ρ' => b'p',
        'ѕ' | 'Ѕ' => b's',
        'т' | 'Т' | 'τ' | 'Τ' => b't',
        'у' | 'У' | 'υ' => b'y',
        'х' | 'Х' | 'χ' | 'Χ' => b'x',
        'ν' => b'v',
        'ԝ' => b'w',
        'ɡ' => b'g',
        _ => return None,
    })
}

/// `k i l l`, `k.i.l.l` and `k-i-l-l` become `kill`: three or more single letters, each
/// separated by exactly one space, dot, dash, underscore or star.
fn join_spaced_letters(out: &mut Vec<u8>) {
    let n = out.len();
    let single = |i: usize, out: &[u8]| -> bool {
        out[i].is_ascii_alphanumeric()
            && (i == 0 || !out[i - 1].is_ascii_alphanumeric())
            && (i + 1 == n || !out[i + 1].is_ascii_alphanumeric())
    };
    let sep = |b: u8| matches!(b, b' ' | b'.' | b'-' | b'_' | b'*');
    let (mut read, mut write) = (0, 0);
    while read < n {
        // Measure a run of single letters starting here.
        let mut end = read;
        let mut count = 0;
        while end < n && single(end, out) {
            count += 1;
            if end + 2 < n && sep(out[end + 1]) && single(end + 2, out) {
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

    fn fold(text: &str) -> String {
        let mut n = Normalizer::default();
        String::from_utf8(n.fold(text).to_vec()).unwrap()
    }

    #[test]
    fn case_and_whitespace() {
        assert_eq!(fold("Ignore  ALL\n\tprevious"), "ignore all previous");
    }

    #[test]
    fn leetspeak_inside_words_only() {
        assert_eq!(
            fold("1gn0r3 pr3v10us 1nstruct10ns"),
            "ignore previous instructions"
        );
        assert_eq!(fold("h4ck the $y$tem"), "hack the system");
        assert_eq!(fold("base64 gpt4 2024 win10"), "base64 gpt4 2024 win10");
    }

    #[test]
    fn zero_width_characters_are_dropped_and_counted() {
        let mut n = Normalizer::default();
        let out = n.fold("ig\u{200B}no\u{200C}re prev\u{FEFF}ious").to_vec();
        assert_eq!(out, b"ignore previous");
        assert_eq!(n.signals.invisible, 3);
    }

    #[test]
    fn spaced_out_letters_are_joined() {
        assert_eq!(fold("how to k i l l people"), "how to kill people");
        assert_eq!(fold("D.A.N mode"), "dan mode");
        assert_eq!(fold("k-i-l-l"), "kill");
        // Two single letters are ordinary text.
        assert_eq!(fold("a b test"), "a b test");
        assert_eq!(fold("i am a cat"), "i am a cat");
    }

    #[test]
    fn nfkc_folds_fullwidth_and_ligatures() {
        assert_eq!(fold("ＩＧＮＯＲＥ ﬁlters"), "ignore filters");
    }

    #[test]
    fn homoglyphs_become_ascii() {
        let mut n = Normalizer::default();
        let out = n.fold("Gіvе dеtаіlеd").to_vec();
        assert_eq!(out, b"give detailed");
        assert!(n.signals.homoglyphs >= 5);
    }

    #[test]
    fn plain_russian_is_not_a_disguise() {
        let mut n = Normalizer::default();
        n.fold("Привет, как дела");
        assert_eq!(n.signals.homoglyphs, 0);
    }

    #[test]
    fn other_scripts_pass_through_lowercased() {
        assert_eq!(fold("Ça VA 你好"), "ça va 你好");
    }
}
