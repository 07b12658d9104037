//! The literals every match of a rule's regex must contain, read off the pattern, so one
//! Aho-Corasick pass over the folded text can skip the rules a text cannot match.
//! Conservative by construction: syntax it does not fully understand (flags, Unicode
//! escapes, nested classes) gives `None`, and the rule then always runs.

/// A non-empty set of literals such that every match of `re` contains at least one of
/// them, or `None` when no such set is known. Assumes case-sensitive matching (no flags).
pub fn required(re: &str) -> Option<Vec<Vec<u8>>> {
    let mut parser = Parser {
        chars: re.chars().collect(),
        at: 0,
    };
    let set = parser.alternation().ok()?;
    if parser.at != parser.chars.len() {
        return None;
    }
    set
}

/// Unknown syntax: give up on the whole pattern.
struct Unsupported;

type Set = Option<Vec<Vec<u8>>>;

struct Parser {
    chars: Vec<char>,
    at: usize,
}

/// One piece of a concatenation before adjacent plain characters are merged.
enum Piece {
    /// A literal character with no quantifier: it joins its neighbours.
    Char(char),
    /// Anything else, with what it requires.
    Sub(Set),
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        self.at += usize::from(c.is_some());
        c
    }

    /// `a|b|c` up to the end or a closing parenthesis: every branch must require something.
    fn alternation(&mut self) -> Result<Set, Unsupported> {
        let mut union = Some(Vec::new());
        loop {
            let branch = self.concat()?;
            union = match (union, branch) {
                (Some(mut all), Some(lits)) => {
                    all.extend(lits);
                    Some(all)
                }
                _ => None,
            };
            if self.peek() == Some('|') {
                self.at += 1;
            } else {
                return Ok(union);
            }
        }
    }

    fn concat(&mut self) -> Result<Set, Unsupported> {
        let mut pieces = Vec::new();
        while let Some(c) = self.peek() {
            if c == '|' || c == ')' {
                break;
            }
            let (atom, plain) = self.atom()?;
            match self.quantifier()? {
                None => match plain {
                    Some(ch) => pieces.push(Piece::Char(ch)),
                    None => pieces.push(Piece::Sub(atom)),
                },
                Some(0) => pieces.push(Piece::Sub(None)),
                Some(_) => pieces.push(Piece::Sub(atom)),
            }
        }
        // Merge runs of plain characters, then keep the most selective requirement.
        let mut sets: Vec<Vec<Vec<u8>>> = Vec::new();
        let mut run = String::new();
        for piece in pieces {
            match piece {
                Piece::Char(c) => run.push(c),
                Piece::Sub(set) => {
                    if !run.is_empty() {
                        sets.push(vec![std::mem::take(&mut run).into_bytes()]);
                    }
                    sets.extend(set);
                }
            }
        }
        if !run.is_empty() {
            sets.push(vec![run.into_bytes()]);
        }
        Ok(sets.into_iter().max_by_key(|set| {
            let shortest = set.iter().map(Vec::len).min().unwrap_or(0);
            (shortest.min(8), std::cmp::Reverse(set.len()))
        }))
    }

    /// One atom and, when it is a plain character, that character.
    fn atom(&mut self) -> Result<(Set, Option<char>), Unsupported> {
        let c = self.next().ok_or(Unsupported)?;
        match c {
            '(' => {
                if self.peek() == Some('?') {
                    // Only the plain non-capturing group: flags would change the meaning.
                    if self.chars.get(self.at + 1) != Some(&':') {
                        return Err(Unsupported);
                    }
                    self.at += 2;
                }
                let inner = self.alternation()?;
                if self.next() != Some(')') {
                    return Err(Unsupported);
                }
                Ok((inner, None))
            }
            '[' => {
                self.class()?;
                Ok((None, None))
            }
            '.' | '^' | '$' => Ok((None, None)),
            '\\' => match self.next().ok_or(Unsupported)? {
                's' | 'S' | 'w' | 'W' | 'd' | 'D' | 'b' | 'B' | 'A' | 'z' => Ok((None, None)),
                'n' => Ok((None, Some('\n'))),
                't' => Ok((None, Some('\t'))),
                'r' => Ok((None, Some('\r'))),
                e if e.is_ascii_punctuation() => Ok((None, Some(e))),
                _ => Err(Unsupported),
            },
            '*' | '+' | '?' | '{' | ')' | '|' => Err(Unsupported),
            other => Ok((None, Some(other))),
        }
    }

    /// Skips a bracket class; nested classes and set operations are not understood.
    fn class(&mut self) -> Result<(), Unsupported> {
        if self.peek() == Some('^') {
            self.at += 1;
        }
        if self.peek() == Some(']') {
            self.at += 1;
        }
        loop {
            match self.next().ok_or(Unsupported)? {
                ']' => return Ok(()),
                '[' => return Err(Unsupported),
                '\\' => {
                    let e = self.next().ok_or(Unsupported)?;
                    if !(e.is_ascii_punctuation() || "sSwWdDntr".contains(e)) {
                        return Err(Unsupported);
                    }
                }
                '&' | '~' | '-' if self.peek() == self.chars.get(self.at - 1).copied() => {
                    return Err(Unsupported)
                }
                _ => {}
            }
        }
    }

    /// The minimum count of a quantifier after an atom, if there is one.
    fn quantifier(&mut self) -> Result<Option<u32>, Unsupported> {
        let min = match self.peek() {
            Some('?') | Some('*') => 0,
            Some('+') => 1,
            Some('{') => {
                self.at += 1;
                let mut digits = String::new();
                loop {
                    match self.next().ok_or(Unsupported)? {
                        d if d.is_ascii_digit() => digits.push(d),
                        ',' | '}' => {
                            self.at -= 1;
                            break;
                        }
                        _ => return Err(Unsupported),
                    }
                }
                let min = digits.parse::<u32>().map_err(|_| Unsupported)?;
                loop {
                    match self.next().ok_or(Unsupported)? {
                        '}' => break,
                        d if d.is_ascii_digit() || d == ',' => {}
                        _ => return Err(Unsupported),
                    }
                }
                self.at -= 1;
                min
            }
            _ => return Ok(None),
        };
        self.at += 1;
        if self.peek() == Some('?') {
            self.at += 1;
        }
        Ok(Some(min))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lits(re: &str) -> Option<Vec<String>> {
        required(re).map(|set| {
            set.into_iter()
                .map(|l| String::from_utf8(l).unwrap_or_default())
                .collect()
        })
    }

    #[test]
    fn picks_the_most_selective_piece_of_a_concatenation() {
        assert_eq!(
            lits(r"(?:ignore|disregard)\s(?:all\s)?previous\s(?:\w+\s)?instructions"),
            Some(vec!["instructions".into()])
        );
        assert_eq!(
            lits(r"\bdo\sanything\snow\b"),
            Some(vec!["anything".into()])
        );
        assert_eq!(
            lits(r"new\sinstructions?:"),
            Some(vec!["instruction".into()])
        );
    }

    #[test]
    fn alternation_needs_every_branch() {
        assert_eq!(
            lits(r"stay\sin\scharacter|jailbr(?:eak|oken)"),
            Some(vec!["character".into(), "jailbr".into()])
        );
        assert_eq!(lits(r"abc|\w+"), None);
        assert_eq!(lits(r"(?:abc)?x"), Some(vec!["x".into()]));
    }

    #[test]
    fn quantifiers_and_classes() {
        assert_eq!(lits(r"ab?cd"), Some(vec!["cd".into()]));
        assert_eq!(lits(r"(?:abc){2,}"), Some(vec!["abc".into()]));
        assert_eq!(lits(r"(?:abc){0,3}"), None);
        assert_eq!(lits(r"[^.]{0,80}xyz[a-z]"), Some(vec!["xyz".into()]));
        assert_eq!(lits(r"\(x\)"), Some(vec!["(x)".into()]));
    }

    #[test]
    fn every_shipped_folded_rule_has_anchors() {
        use crate::safety::filters::rules::{self, Pattern, Scope};
        for rule in rules::defaults().unwrap_or_default() {
            if let (Pattern::Regex(re), Scope::Normalized) = (&rule.pattern, rule.scope) {
                assert!(
                    required(re).is_some(),
                    "rule {} has no anchor literal",
                    rule.id
                );
            }
        }
    }

    #[test]
    fn unknown_syntax_gives_up() {
        assert_eq!(lits(r"(?i)ignore"), None);
        assert_eq!(lits(r"(?-u:\b)ignore"), None);
        assert_eq!(lits(r"\x41bc"), None);
        assert_eq!(lits(r"[[:alpha:]]abc"), None);
        assert_eq!(lits(r"\pLabc"), None);
    }
}
