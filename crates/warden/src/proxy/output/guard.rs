//! The local filters on a stream: each choice's text is held back until releasing it
//! cannot cut a secret in two, then scanned and released with secrets redacted, so no
//! character of a secret reaches the client even when it is split across many chunks.
//!
//! What is held: for each choice (lane), the text after its last whitespace (a secret is
//! one token; the cut moves back further when a match reaches the end of the text, e.g.
//! a private key block still arriving, or would straddle the cut). Each scan also reads
//! a short stretch of already-released text, so a match that began there is still seen
//! and the rest of it removed. A lane's text is all released at its end (finish reason,
//! `.done` event, end of stream). Held text is bounded by `MAX_HOLD_BYTES`.

use std::ops::Range;
use std::sync::Arc;

use super::filters::FILTER_STAGE;
use crate::events::flags::{self, Flag};
use crate::safety::filters::normalize::Normalizer;
use crate::safety::filters::{Action, Scanner};

/// Released text kept as context for the next scan (covers a private key header).
const CONTEXT_BYTES: usize = 64;
/// New text that makes a scan worth it: scanning at every delta would read the held
/// tail and the context again each time; this bounds that to a few bytes per new byte.
const RESCAN_BYTES: usize = 32;
/// Always held at the end of a lane's text: longer than any shipped secret rule can run
/// before its regex first matches (a GitHub token's 40, a private key header's ~40), so
/// a secret still being written either matches (and is held whole) or is held anyway.
const TAIL_HOLD_BYTES: usize = 48;
/// Held text of one lane that forces a release even without a safe cut.
const MAX_HOLD_BYTES: usize = 16 * 1024;

pub struct Guard {
    scanner: Arc<Scanner>,
    fold: Normalizer,
    /// `choices` or `output`: how findings name the field.
    param: &'static str,
    lanes: Vec<Lane>,
    /// Text pushed since the last plan.
    unscanned: usize,
}

struct Lane {
    index: usize,
    /// Offset, in this lane's text so far, where `held` starts.
    start: usize,
    held: String,
    /// The end of the released text, as upstream wrote it.
    context: String,
    done: bool,
    /// Findings already recorded, by rule and start.
    recorded: Vec<(Arc<str>, usize)>,
}

/// Where one delta's text sits in its lane.
#[derive(Debug, Clone)]
pub struct Segment {
    lane: usize,
    range: Range<usize>,
}

#[derive(Debug)]
struct Redaction {
    lane: usize,
    range: Range<usize>,
    /// `None` when the match began in text already released: the rest is just removed.
    label: Option<String>,
}

/// A redact or flag finding in held text, in lane offsets (spanless: `usize::MAX`).
struct Match {
    lane: usize,
    rule: Arc<str>,
    category: Arc<str>,
    action: Action,
    span: Range<usize>,
}

/// What may go to the client now.
pub enum Plan {
    /// A `block` rule matched held text.
    Block {
        categories: String,
        flags: Vec<Flag>,
    },
    Release(Release),
}

pub struct Release {
    /// How many of the held events go out, from the front.
    pub events: usize,
    upto: Vec<usize>,
    redactions: Vec<Redaction>,
    pub flags: Vec<Flag>,
}

impl Guard {
    pub fn new(scanner: Arc<Scanner>, param: &'static str) -> Self {
        Self {
            scanner,
            fold: Normalizer::default(),
            param,
            lanes: Vec::new(),
            unscanned: 0,
        }
    }

    /// Whether a plan can release something worth the scan: enough new text, a lane
    /// that ended, or nothing held (events without text go straight through).
    pub fn due(&self) -> bool {
        self.unscanned >= RESCAN_BYTES
            || self.lanes.iter().any(|l| l.done && !l.held.is_empty())
            || self.lanes.iter().all(|l| l.held.is_empty())
    }

    pub fn scanner(&self) -> &Scanner {
        &self.scanner
    }

    fn lane(&mut self, index: usize) -> usize {
        match self.lanes.iter().position(|l| l.index == index) {
            Some(at) => at,
            None => {
                self.lanes.push(Lane {
                    index,
                    start: 0,
                    held: String::new(),
                    context: String::new(),
                    done: false,
                    recorded: Vec::new(),
                });
                self.lanes.len() - 1
            }
        }
    }

    /// Holds one delta of choice `index`.
    pub fn push(&mut self, index: usize, text: &str) -> Segment {
        let lane = self.lane(index);
        let l = &mut self.lanes[lane];
        let from = l.start + l.held.len();
        // Text after an end (a second content part of one output item) is held again.
        l.done = false;
        l.held.push_str(text);
        self.unscanned += text.len();
        Segment {
            lane,
            range: from..from + text.len(),
        }
    }

    /// No more text follows for choice `index`.
    pub fn finish(&mut self, index: usize) {
        let lane = self.lane(index);
        self.lanes[lane].done = true;
    }

    pub fn finish_all(&mut self) {
        for lane in &mut self.lanes {
            lane.done = true;
        }
    }

    /// Scans the held text and decides how many held events (given by their segments,
    /// in order) may be released, and what to redact in them.
    pub fn plan(&mut self, events: &[&[Segment]]) -> Plan {
        self.unscanned = 0;
        let mut limits = Vec::with_capacity(self.lanes.len());
        let mut matches: Vec<Match> = Vec::new();
        for (li, lane) in self.lanes.iter().enumerate() {
            let end = lane.start + lane.held.len();
            if lane.held.is_empty() {
                limits.push(end);
                continue;
            }
            let forced = lane.held.len() > MAX_HOLD_BYTES;
            let mut limit = if lane.done || forced {
                end
            } else {
                let word = lane
                    .held
                    .rfind(char::is_whitespace)
                    .map_or(0, |at| at + next_char_len(&lane.held, at));
                let mut tail = lane.held.len().saturating_sub(TAIL_HOLD_BYTES);
                while !lane.held.is_char_boundary(tail) {
                    tail -= 1;
                }
                lane.start + word.min(tail)
            };
            let text = format!("{}{}", lane.context, lane.held);
            let base = lane.start - lane.context.len();
            let scan = self.scanner.findings_with(&mut self.fold, &text);
            for finding in &scan.findings {
                if finding.action == Action::Score {
                    continue;
                }
                let span = finding.span.as_ref().map(|s| base + s.start..base + s.end);
                if let Some(span) = &span {
                    if span.end <= lane.start {
                        continue; // wholly in released text: handled then
                    }
                }
                if finding.action == Action::Block {
                    let param = format!("{}[{}]", self.param, lane.index);
                    let flag = Flag::new(FILTER_STAGE, flags::BLOCK)
                        .categories([&*finding.category])
                        .param(param)
                        .rule(&*finding.rule);
                    return Plan::Block {
                        categories: finding.category.to_string(),
                        flags: vec![flag],
                    };
                }
                let span = span.unwrap_or(usize::MAX..usize::MAX);
                // A match running to the end may go on in the next chunk.
                if !lane.done && !forced && span.end == end {
                    limit = limit.min(span.start.max(lane.start));
                }
                if span.start < limit && limit < span.end {
                    limit = span.start.max(lane.start);
                }
                matches.push(Match {
                    lane: li,
                    rule: finding.rule.clone(),
                    category: finding.category.clone(),
                    action: finding.action,
                    span,
                });
            }
            limits.push(limit);
        }
        // Events go out whole and in order; a release that would end inside a match
        // holds the match back entirely.
        let (events_out, upto) = loop {
            let mut upto: Vec<usize> = self.lanes.iter().map(|l| l.start).collect();
            let mut n = 0;
            for segments in events {
                if segments.iter().any(|s| s.range.end > limits[s.lane]) {
                    break;
                }
                for s in segments.iter() {
                    upto[s.lane] = upto[s.lane].max(s.range.end);
                }
                n += 1;
            }
            let mut tightened = false;
            for m in &matches {
                if m.span.start < upto[m.lane] && upto[m.lane] < m.span.end {
                    limits[m.lane] = m.span.start.max(self.lanes[m.lane].start);
                    tightened = true;
                }
            }
            if !tightened {
                break (n, upto);
            }
        };
        let mut release = Release {
            events: events_out,
            upto,
            redactions: Vec::new(),
            flags: Vec::new(),
        };
        for Match {
            lane: li,
            rule,
            category,
            action,
            span,
        } in matches
        {
            let lane = &mut self.lanes[li];
            let released = span.end <= release.upto[li]
                || (span.start == usize::MAX && release.upto[li] > lane.start);
            if !released {
                continue;
            }
            if action == Action::Redact {
                release.redactions.push(Redaction {
                    lane: li,
                    range: span.start.max(lane.start)..span.end,
                    label: (span.start >= lane.start).then(|| format!("[REDACTED:{rule}]")),
                });
            }
            let seen = (rule.clone(), span.start);
            if lane.recorded.contains(&seen) {
                continue;
            }
            lane.recorded.push(seen);
            let label = if action == Action::Redact {
                flags::REDACT
            } else {
                flags::FLAG
            };
            release.flags.push(
                Flag::new(FILTER_STAGE, label)
                    .categories([&*category])
                    .param(format!("{}[{}]", self.param, lane.index))
                    .rule(&*rule),
            );
        }
        release.redactions.sort_by_key(|r| (r.lane, r.range.start));
        Plan::Release(release)
    }

    /// The text a released segment carries after redaction, if it changed.
    pub fn rewrite(&self, release: &Release, segment: &Segment) -> Option<String> {
        let lane = &self.lanes[segment.lane];
        let seg = &segment.range;
        let hits: Vec<&Redaction> = release
            .redactions
            .iter()
            .filter(|r| {
                r.lane == segment.lane && r.range.start < seg.end && seg.start < r.range.end
            })
            .collect();
        if hits.is_empty() {
            return None;
        }
        let text = lane
            .held
            .get(seg.start - lane.start..seg.end - lane.start)?;
        let mut out = String::with_capacity(text.len());
        let mut at = seg.start;
        for r in hits {
            let from = r.range.start.max(seg.start);
            if from > at {
                out.push_str(text.get(at - seg.start..from - seg.start)?);
            }
            if r.range.start >= seg.start {
                if let Some(label) = &r.label {
                    out.push_str(label);
                }
            }
            at = at.max(r.range.end.min(seg.end));
        }
        out.push_str(text.get(at - seg.start..)?);
        Some(out)
    }

    /// The released text leaves the hold (its end stays as context).
    pub fn commit(&mut self, release: &Release) {
        for (lane, upto) in self.lanes.iter_mut().zip(&release.upto) {
            let cut = upto.saturating_sub(lane.start).min(lane.held.len());
            if cut == 0 {
                continue;
            }
            lane.context.extend(lane.held.drain(..cut));
            lane.start += cut;
            if lane.context.len() > CONTEXT_BYTES {
                let mut from = lane.context.len() - CONTEXT_BYTES;
                while !lane.context.is_char_boundary(from) {
                    from += 1;
                }
                lane.context.drain(..from);
            }
        }
    }
}

fn next_char_len(text: &str, at: usize) -> usize {
    text[at..].chars().next().map_or(1, char::len_utf8)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;
    use crate::safety::filters::FilterPolicy;

    const KEY: &str = "sk-proj-Zx9Qw8Er7Ty6Ui5Op4As3Df2Gh1Jk0LmNbVcXz";

    /// Feeds one delta per event through the guard, releasing after each, and returns
    /// what the client would see.
    fn run(pieces: &[&str]) -> (String, Vec<Flag>) {
        let scanner = Arc::new(Scanner::new(&FilterPolicy::default()).unwrap());
        let mut guard = Guard::new(scanner, "choices");
        let mut held: Vec<(Segment, String)> = Vec::new();
        let (mut out, mut flags) = (String::new(), Vec::new());
        let mut step = |guard: &mut Guard, held: &mut Vec<(Segment, String)>| {
            let segments: Vec<[Segment; 1]> = held.iter().map(|(s, _)| [s.clone()]).collect();
            let refs: Vec<&[Segment]> = segments.iter().map(|s| &s[..]).collect();
            let Plan::Release(release) = guard.plan(&refs) else {
                panic!("blocked")
            };
            for (segment, text) in held.drain(..release.events) {
                out.push_str(&guard.rewrite(&release, &segment).unwrap_or(text));
            }
            flags.extend(release.flags.iter().cloned());
            guard.commit(&release);
        };
        for piece in pieces {
            let segment = guard.push(0, piece);
            held.push((segment, (*piece).to_owned()));
            step(&mut guard, &mut held);
        }
        guard.finish_all();
        step(&mut guard, &mut held);
        (out, flags)
    }

    #[test]
    fn a_key_split_into_tiny_chunks_never_shows() {
        let text = format!("Here: {KEY} and the rest.");
        let pieces: Vec<String> = text
            .chars()
            .collect::<Vec<_>>()
            .chunks(3)
            .map(|c| c.iter().collect())
            .collect();
        let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
        let (out, flags) = run(&refs);
        assert_eq!(out, "Here: [REDACTED:openai-api-key] and the rest.");
        assert_eq!(flags.len(), 1);
        assert_eq!(flags[0].action, "redact");
    }

    #[test]
    fn clean_text_passes_whole_words_at_a_time() {
        let (out, flags) = run(&["Hello ", "wor", "ld, how ", "are you?"]);
        assert_eq!(out, "Hello world, how are you?");
        assert!(flags.is_empty());
    }

    #[test]
    fn a_private_key_block_is_held_until_it_ends() {
        let pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAx1\nabcdef\n-----END RSA PRIVATE KEY-----";
        let text = format!("key:\n{pem}\ndone");
        let pieces: Vec<String> = text
            .chars()
            .collect::<Vec<_>>()
            .chunks(5)
            .map(|c| c.iter().collect())
            .collect();
        let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
        let (out, _) = run(&refs);
        assert!(!out.contains("MIIE") && !out.contains("abcdef"), "{out}");
        assert!(out.contains("[REDACTED:private-key-block]"), "{out}");
        assert!(out.ends_with("\ndone"), "{out}");
    }
}
