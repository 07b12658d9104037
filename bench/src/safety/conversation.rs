//! A multi-turn chat through Warden, as real clients send it (the whole history every turn),
//! and what reached the Moderation endpoint each turn, against re-moderating the whole
//! conversation every turn. Also a check: no turn may re-send text moderated before.

use anyhow::Context as _;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use http_body_util::BodyExt as _;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

use super::prose::prose;
use super::recorded::{self, Call};
use crate::pool::Pool;
use crate::workload::{Side, Target};

/// Length of each scripted assistant answer: a few sentences, like a support reply.
const ANSWER_CHARS: usize = 600;
/// Short texts on purpose: under 15 words the jailbreak detector uses its rule cues only, and
/// its learned judge flags some plain support prompts (a flag is a strike, and the history
/// is scanned again every turn, so one false flag would suspend the user within a few turns).
const SYSTEM: &str = "Support assistant of an outdoor gear shop: help with orders, shipping, returns and product care.";
const TOPICS: &[&str] = &[
    "Which torso length does the Alpine Trek 45 fit?",
    "Do the Ridge boots run small? I usually wear a 44.",
    "How should I wash the down sleeping bag after the trip?",
    "Is the rain cover included with the backpack?",
    "Can I exchange the blue jacket for the green one?",
    "What does the warranty on the trekking poles cover?",
    "When will my parcel arrive? Tracking has not changed since yesterday.",
    "Can I return the tent if I only pitched it once?",
];
const REPLY_HEADER: HeaderName = HeaderName::from_static("x-standin-reply");

/// Calls, text items and bytes of text sent to the Moderation endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sent {
    pub calls: usize,
    pub inputs: usize,
    pub bytes: usize,
}

impl Sent {
    fn add(&mut self, texts: &[String]) {
        self.calls += 1;
        self.inputs += texts.len();
        self.bytes += texts.iter().map(String::len).sum::<usize>();
    }

    pub fn plus(self, other: Sent) -> Sent {
        Sent {
            calls: self.calls + other.calls,
            inputs: self.inputs + other.inputs,
            bytes: self.bytes + other.bytes,
        }
    }
}

/// One turn: what Warden sent for the request (input) and for the answer (output), and what
/// moderating the whole request would have sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Turn {
    pub number: usize,
    pub input: Sent,
    pub output: Sent,
    pub naive: Sent,
}

/// The turns, and every way a turn broke the "moderate only what is new" promise.
#[derive(Debug, Default)]
pub struct Conversation {
    pub turns: Vec<Turn>,
    pub violations: Vec<String>,
}

impl Conversation {
    pub fn total(&self, pick: impl Fn(&Turn) -> Sent) -> Sent {
        self.turns
            .iter()
            .map(pick)
            .fold(Sent::default(), Sent::plus)
    }
}

/// Drives `turns` turns through Warden at `warden` and reads back from the stand-in what it
/// was asked to moderate. Nothing else may call the stand-in meanwhile.
pub async fn run(
    standin: SocketAddr,
    warden: SocketAddr,
    turns: usize,
) -> anyhow::Result<Conversation> {
    let target = Target::new(Side::Warden, warden)?;
    let pool = Pool::open(warden, 1).await?;
    let mut messages = vec![json!({"role": "system", "content": SYSTEM})];
    let mut seen = HashSet::new();
    let mut known = recorded::fetch(standin).await?.len();
    let mut out = Conversation::default();
    for number in 1..=turns {
        let topic = TOPICS.get(number % TOPICS.len()).copied().unwrap_or("");
        let question = format!("{topic} (order NW-{})", 20_930 + number);
        messages.push(json!({"role": "user", "content": question}));
        let body = json!({"model": "gpt-4o-mini", "max_tokens": 400, "messages": messages});
        let answer = ask(&pool, &target, &body, &prose(number as u64, ANSWER_CHARS))
            .await
            .with_context(|| format!("turn {number}"))?;
        let calls = recorded::fetch(standin).await?;
        let new = calls.get(known..).unwrap_or_default();
        known = calls.len();
        let texts: Vec<String> = messages
            .iter()
            .filter_map(|m| m["content"].as_str().map(str::to_owned))
            .collect();
        let (turn, mut violations) = account(number, new, &texts, &mut seen);
        out.turns.push(turn);
        out.violations.append(&mut violations);
        messages.push(json!({"role": "assistant", "content": answer}));
    }
    Ok(out)
}

/// One non-streamed turn; the stand-in answers `answer` (Warden forwards the header).
async fn ask(
    pool: &Arc<Pool>,
    target: &Target,
    body: &Value,
    answer: &str,
) -> anyhow::Result<String> {
    let mut request = target.request(1, &Bytes::from(body.to_string()));
    request
        .headers_mut()
        .insert(REPLY_HEADER, HeaderValue::from_str(answer)?);
    let mut lease = pool.checkout().await?;
    let response = lease.sender().send_request(request).await?;
    let status = response.status();
    let bytes = response.into_body().collect().await?.to_bytes();
    lease.release();
    let text = String::from_utf8_lossy(&bytes);
    anyhow::ensure!(status == StatusCode::OK, "status {status}: {text}");
    let reply: Value = serde_json::from_slice(&bytes).context("reply is not JSON")?;
    reply["choices"][0]["message"]["content"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("no answer text in {text}"))
}

/// Splits one turn's new upstream calls into input moderation (before the chat call) and
/// output moderation (after it), and checks them against everything moderated earlier
/// (`seen`, updated here). `texts` are the message texts of the turn's request, newest last.
pub fn account(
    number: usize,
    calls: &[Call],
    texts: &[String],
    seen: &mut HashSet<String>,
) -> (Turn, Vec<String>) {
    let mut violations = Vec::new();
    let mut turn = Turn {
        number,
        input: Sent::default(),
        output: Sent::default(),
        naive: Sent::default(),
    };
    turn.naive.add(texts);
    let chat = calls.iter().position(|c| *c == Call::Chat);
    if chat.is_none() {
        violations.push(format!(
            "turn {number}: no chat completion reached the stand-in"
        ));
    }
    let mut this_turn = Vec::new();
    for (i, call) in calls.iter().enumerate() {
        let Call::Moderation(inputs) = call else {
            continue;
        };
        let is_input = chat.is_none_or(|at| i < at);
        if is_input {
            turn.input.add(inputs);
            for text in inputs.iter().filter(|t| seen.contains(*t)) {
                violations.push(format!(
                    "turn {number}: re-sent text moderated in an earlier turn: {:?}",
                    excerpt(text)
                ));
            }
        } else {
            turn.output.add(inputs);
        }
        this_turn.extend(inputs.iter().cloned());
    }
    if let Some(newest) = texts.last() {
        if !seen.contains(newest) && !this_turn.contains(newest) {
            violations.push(format!(
                "turn {number}: the new message was not moderated: {:?}",
                excerpt(newest)
            ));
        }
    }
    seen.extend(this_turn);
    (turn, violations)
}

fn excerpt(text: &str) -> String {
    text.chars().take(60).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn input_and_output_are_split_at_the_chat_call_and_the_naive_side_counts_everything() {
        let mut seen = HashSet::new();
        let calls = [
            Call::Moderation(strings(&["system", "hello"])),
            Call::Chat,
            Call::Moderation(strings(&["answer"])),
        ];
        let (turn, violations) = account(1, &calls, &strings(&["system", "hello"]), &mut seen);
        assert!(violations.is_empty(), "{violations:?}");
        assert_eq!(
            turn.input,
            Sent {
                calls: 1,
                inputs: 2,
                bytes: 11
            }
        );
        assert_eq!(
            turn.output,
            Sent {
                calls: 1,
                inputs: 1,
                bytes: 6
            }
        );
        assert_eq!(
            turn.naive,
            Sent {
                calls: 1,
                inputs: 2,
                bytes: 11
            }
        );

        // Turn 2 sends only the new message: clean.
        let texts = strings(&["system", "hello", "answer", "more"]);
        let calls = [Call::Moderation(strings(&["more"])), Call::Chat];
        let (turn, violations) = account(2, &calls, &texts, &mut seen);
        assert!(violations.is_empty(), "{violations:?}");
        assert_eq!(turn.input.bytes, 4);
        assert_eq!(turn.naive.bytes, 21);
    }

    #[test]
    fn re_sending_an_earlier_turn_or_skipping_the_new_message_is_a_violation() {
        let mut seen = HashSet::new();
        let first = [Call::Moderation(strings(&["system", "hello"])), Call::Chat];
        account(1, &first, &strings(&["system", "hello"]), &mut seen);

        let texts = strings(&["system", "hello", "answer", "more"]);
        let resent = [Call::Moderation(strings(&["system", "more"])), Call::Chat];
        let (_, violations) = account(2, &resent, &texts, &mut seen.clone());
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert!(violations[0].contains("re-sent"));

        let skipped = [Call::Chat];
        let (_, violations) = account(2, &skipped, &texts, &mut seen);
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert!(violations[0].contains("not moderated"));
    }
}
