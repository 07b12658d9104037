//! The literals every match of a folded-text rule starts with, read off the parsed pattern
//! with regex-syntax. Whole phrases (`if you are`, `when asked`) make far better anchors
//! than the single most selective word `literals` finds (`are`, which benign text is full
//! of), so a rule runs only on texts that hold one of its openings.

use regex_syntax::hir::literal::{ExtractKind, Extractor};
use regex_syntax::hir::{Class, Hir, HirKind, Repetition};

/// Prefixes of every match of `re` on folded text, or `None` when they are not a finite
/// set of non-empty literals. Folded text has no whitespace but the space, so `\s` is
/// read as a space first: the same matches on folded text, and one literal instead of six.
pub fn of_folded(re: &str) -> Option<Vec<Vec<u8>>> {
    let hir = regex_syntax::ParserBuilder::new()
        .unicode(false)
        .utf8(false)
        .build()
        .parse(re)
        .ok()?;
    let prefixes = Extractor::new()
        .kind(ExtractKind::Prefix)
        .extract(&spaces_only(&hir));
    let literals = prefixes.literals()?;
    if literals.is_empty() || literals.iter().any(|l| l.as_bytes().is_empty()) {
        return None;
    }
    Some(literals.iter().map(|l| l.as_bytes().to_vec()).collect())
}

/// `hir` with every class of ASCII whitespace that holds the space replaced by the space.
fn spaces_only(hir: &Hir) -> Hir {
    match hir.kind() {
        HirKind::Class(Class::Bytes(class)) if is_whitespace(class) => Hir::literal(*b" "),
        HirKind::Repetition(rep) => Hir::repetition(Repetition {
            sub: Box::new(spaces_only(&rep.sub)),
            ..rep.clone()
        }),
        HirKind::Capture(cap) => Hir::capture(regex_syntax::hir::Capture {
            sub: Box::new(spaces_only(&cap.sub)),
            ..cap.clone()
        }),
        HirKind::Concat(parts) => Hir::concat(parts.iter().map(spaces_only).collect()),
        HirKind::Alternation(parts) => Hir::alternation(parts.iter().map(spaces_only).collect()),
        _ => hir.clone(),
    }
}

fn is_whitespace(class: &regex_syntax::hir::ClassBytes) -> bool {
    let space = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r');
    class
        .ranges()
        .iter()
        .all(|r| (r.start()..=r.end()).all(space))
        && class
            .ranges()
            .iter()
            .any(|r| (r.start()..=r.end()).contains(&b' '))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefixes(re: &str) -> Option<Vec<String>> {
        of_folded(re).map(|set| {
            set.into_iter()
                .map(|l| String::from_utf8_lossy(&l).into_owned())
                .collect()
        })
    }

    #[test]
    fn openings_become_whole_phrases() {
        assert_eq!(
            prefixes(r"(?:if\s(?:you\sare|asked)|when\sasked)[^.]{0,80}say"),
            Some(vec![
                "if you are".into(),
                "if asked".into(),
                "when asked".into()
            ])
        );
        assert_eq!(prefixes(r"\bdo\snot\b"), Some(vec!["do not".into()]));
    }

    #[test]
    fn no_finite_opening_gives_none() {
        assert_eq!(prefixes(r"\w+\sthis"), None);
        assert_eq!(prefixes(r"(?:abc)?x|y*"), None);
    }
}
