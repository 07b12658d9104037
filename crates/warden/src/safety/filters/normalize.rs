//! Folds text into the one form every keyword and jailbreak rule is written against:
//! NFKC, lower case, common homoglyphs to ASCII, zero-width characters dropped, whitespace
//! collapsed, leetspeak inside words undone, and spaced-out letters (`k i l l`) joined.
//! Pure-ASCII text takes a bulk path (`ascii_fold`); other text goes character by
//! character, with NFKC applied only where it can change something.

use unicode_normalization::char::canonical_combining_class;
use unicode_normalization::{is_nfkc_quick, IsNormalized, UnicodeNormalization};

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
    /// Characters NFKC must see together (reused between texts).
    stretch: String,
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
            super::ascii_fold::fold(input.as_bytes(), &mut self.out);
        } else {
            self.fold_chars(input);
        }
        self.end_word();
        super::spaced::join(&mut self.out);
        &self.out
    }

    /// The fold by the per-character path alone, whatever the text: the reference the
    /// bulk ASCII path is tested against.
    #[cfg(test)]
    pub(super) fn fold_by_char(&mut self, input: &str) -> &[u8] {
        self.out.clear();
        self.signals = Signals::default();
        self.fold_chars(input);
        self.end_word();
        super::spaced::join(&mut self.out);
        &self.out
    }

    /// The per-character fold: invisible characters dropped, then NFKC, then each
    /// character folded. NFKC runs only on the stretches it can change (see `nfkc`), and
    /// ASCII runs skip it: an ASCII byte is its own NFKC unless a combining mark follows,
    /// so only the last byte of a run goes along with the non-ASCII text after it.
    fn fold_chars(&mut self, input: &str) {
        let bytes = input.as_bytes();
        let mut invisible = 0;
        let mut stretch = std::mem::take(&mut self.stretch);
        let mut at = 0;
        while at < bytes.len() {
            let run_end = bytes[at..]
                .iter()
                .position(|b| !b.is_ascii())
                .map_or(bytes.len(), |i| at + i);
            let plain_end = if run_end == bytes.len() {
                run_end
            } else {
                run_end.saturating_sub(1).max(at)
            };
            for &b in &bytes[at..plain_end] {
                self.push_ascii(b);
            }
            let next_run = bytes[run_end..]
                .iter()
                .position(u8::is_ascii)
                .map_or(bytes.len(), |i| run_end + i);
            // Both ends are ASCII bytes or the text's ends: character boundaries.
            let visible = input[plain_end..next_run].chars().filter(|&c| {
                let hidden = !c.is_ascii() && is_invisible(c);
                // Emoji sequences use the joiner and variation selectors legitimately.
                invisible +=
                    usize::from(hidden && !matches!(c, '\u{200D}' | '\u{FE00}'..='\u{FE0F}'));
                !hidden
            });
            nfkc(visible, &mut stretch, |c| self.push_char(c));
            at = next_run;
        }
        self.stretch = stretch;
        self.signals.invisible = invisible;
    }

    fn push_char(&mut self, c: char) {
        if c.is_ascii() {
            return self.push_ascii(c as u8);
        }
        if is_caseless_letter(c) {
            // What the general path below does for these, minus its table look-ups.
            self.start_word();
            self.word_letters = true;
            let mut buf = [0u8; 4];
            self.out
                .extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            return;
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

/// NFKC of `chars`, handed to `each`. A character that is its own NFKC and has combining
/// class 0 cannot combine with, or reorder against, anything before it, so the text splits
/// there into stretches that normalize independently; a stretch of one such character
/// (almost every character of real text) is passed through without the NFKC machinery.
fn nfkc(chars: impl Iterator<Item = char>, stretch: &mut String, mut each: impl FnMut(char)) {
    let mut chars = chars.peekable();
    while let Some(c) = chars.next() {
        if starts_stretch(c) && chars.peek().is_none_or(|&next| starts_stretch(next)) {
            each(c);
            continue;
        }
        stretch.clear();
        stretch.push(c);
        while let Some(next) = chars.next_if(|&next| !starts_stretch(next)) {
            stretch.push(next);
        }
        stretch.nfkc().for_each(&mut each);
    }
}

/// A normalization boundary before `c` (NFKC quick check "yes" and combining class 0).
#[inline]
fn starts_stretch(c: char) -> bool {
    c.is_ascii() || is_caseless_letter(c) || matches!(c, '\u{C0}'..='\u{FF}') || is_stable(c)
}

/// Han ideographs, kana and Hangul syllables: letters with no case, no look-alike and no
/// NFKC change, which make up most of CJK text (a test checks every one of them).
fn is_caseless_letter(c: char) -> bool {
    matches!(c, '\u{4E00}'..='\u{9FFF}' | '\u{3041}'..='\u{3096}' | '\u{30A1}'..='\u{30FA}'
        | '\u{AC00}'..='\u{D7A3}')
}

fn is_stable(c: char) -> bool {
    canonical_combining_class(c) == 0 && is_nfkc_quick(std::iter::once(c)) == IsNormalized::Yes
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

    /// A small deterministic generator, so failures reproduce.
    fn texts(alphabet: &[&str], count: usize, max_len: usize) -> Vec<String> {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as usize
        };
        (0..count)
            .map(|_| {
                let len = next() % max_len;
                (0..len)
                    .map(|_| alphabet[next() % alphabet.len()])
                    .collect()
            })
            .collect()
    }

    #[test]
    fn the_bulk_ascii_path_equals_the_per_character_path() {
        let alphabet = [
            "a", "b", "K", "I", "l", "Z", "0", "1", "2", "3", "4", "5", "6", "7", "9", "@", "$",
            " ", " ", " ", "  ", "\t", "\n", "\r", "\x0b", ".", "-", "_", "*", ",", "!", "h4ck",
            "1gn0re", "gpt4", "k i l l", "D.A.N", "word", "\x00",
        ];
        let (mut bulk, mut by_char) = (Normalizer::default(), Normalizer::default());
        for text in texts(&alphabet, 20_000, 60) {
            let fast = bulk.fold(&text).to_vec();
            assert_eq!(fast, by_char.fold_by_char(&text), "{text:?}");
            assert_eq!(bulk.signals, Signals::default());
        }
    }

    #[test]
    fn nfkc_by_stretches_equals_nfkc_of_the_whole_text() {
        // Starters, combining marks out of order, compatibility forms, Hangul jamo that
        // compose across what looks like a boundary, and characters that decompose.
        let alphabet = [
            "a", "e", "A", " ", "é", "\u{301}", "\u{323}", "\u{308}", "\u{327}", "ﬁ", "Ａ", "①",
            "\u{1100}", "\u{1161}", "\u{11A8}", "\u{3161}", "가", "\u{AC00}", "Å", "\u{212B}", "ｶ",
            "\u{FF9E}", "カ", "\u{3099}", "ﾞ", "你", "\u{0F73}", "ǅ", "²", "\u{1E9B}", "\u{0344}",
            "\u{0958}", "\u{2126}",
        ];
        let mut stretch = String::new();
        for text in texts(&alphabet, 20_000, 12) {
            let mut ours = String::new();
            nfkc(text.chars(), &mut stretch, |c| ours.push(c));
            let whole: String = text.nfkc().collect();
            assert_eq!(ours, whole, "{text:?}");
        }
    }

    #[test]
    fn the_fast_character_classes_agree_with_the_unicode_tables() {
        for c in ('\u{80}'..='\u{FFFF}').filter(|&c| is_caseless_letter(c)) {
            assert!(c.is_alphabetic() && !c.is_whitespace(), "{c:?}");
            assert!(c.to_lowercase().eq([c]) && homoglyph(c).is_none(), "{c:?}");
            assert!(!is_invisible(c) && is_stable(c), "{c:?}");
        }
        for c in '\u{C0}'..='\u{FF}' {
            assert!(is_stable(c), "{c:?}");
        }
    }

    #[test]
    fn other_scripts_pass_through_lowercased() {
        assert_eq!(fold("Ça VA 你好"), "ça va 你好");
    }
}
