//! The jailbreak data the trainer and the leave-one-family-out evaluation read, each row
//! with its family (the unit left out) and, for benign rows, the genre the issue reports
//! false positives by. Paths are relative to the repository root.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

pub struct Row {
    pub text: String,
    pub jailbreak: bool,
    pub family: String,
    /// Benign rows only: ordinary, short, persona, long instructions, security text,
    /// questions about attacks.
    pub genre: Option<&'static str>,
    /// Never trained on: Warden's own sets and GPL-3.0 rows.
    pub test_only: bool,
    /// data/eval only: the development (even) half the shipped model trains on.
    pub eval_dev: Option<bool>,
    pub set: &'static str,
}

pub const GENRES: [&str; 6] = [
    "ordinary requests",
    "short messages",
    "persona prompts",
    "long instructions",
    "defensive security text",
    "questions about attacks",
];

/// Families scored but never trained on. `multilingual-harmful-query` is plain harmful
/// questions in other languages with no wrapper (the shared README's caveat): it taught
/// the judge "non-English and asks something → jailbreak" and made it block multilingual
/// commonsense questions. Harmful requests are the Moderation stage's job.
pub const NOT_TRAINED: &[&str] = &["multilingual-harmful-query"];

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn lines(path: &Path) -> Vec<serde_json::Value> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The garak probe groups of data/eval, by what the attack does.
fn eval_family(source: &str) -> &'static str {
    let (path, probe) = source.split_once('#').unwrap_or((source, ""));
    if path.contains("inthewild") {
        "eval:in-the-wild"
    } else if path.contains("sysprompt_extraction") {
        "eval:sysprompt-extraction"
    } else if probe.starts_with("Latent") {
        "eval:latent-injection"
    } else if probe.starts_with("Hijack") {
        "eval:promptinject-hijack"
    } else if probe.starts_with("Inject") {
        "eval:encoding"
    } else if matches!(probe, "GCGCached" | "AdaptiveAttacks") {
        "eval:adversarial-suffix"
    } else if probe.contains("Exfil")
        || probe.contains("XSS")
        || probe.contains("SQLInjection")
        || probe.contains("Jinja")
        || probe.contains("Colab")
    {
        "eval:exfil-and-code-injection"
    } else if probe.starts_with("DRA")
        || probe.contains("Homoglyph")
        || probe.contains("BadCharacters")
        || probe.starts_with("Bypass")
    {
        "eval:obfuscation"
    } else {
        "eval:dan-tap-and-other"
    }
}

fn train_genre(family: &str) -> &'static str {
    match family {
        "short-query" | "assistant-smalltalk" => "short messages",
        "persona-zh" => "persona prompts",
        "system-prompt" => "long instructions",
        "system-prompt-defensive"
        | "guardrail-prompt"
        | "security-request"
        | "security-request-multilingual" => "defensive security text",
        _ => "ordinary requests",
    }
}

/// The unit of leaving out: a family, except that BIPIA's e-mails with and without the
/// planted instruction share one.
pub fn fold_key(family: &str) -> &str {
    match family {
        "train:document-qa-email" | "train:indirect-injection-email" => "train:bipia-email",
        other => other,
    }
}

/// data/eval, data/train (or `$WARDEN_TRAIN_DIR`, e.g. the full shared copy with its GPL
/// rows, which are then tested on but never trained on) and Warden's own sets.
pub fn load_all() -> Vec<Row> {
    let root = repo();
    let mut rows = Vec::new();
    for (file, jailbreak) in [("jailbreak.jsonl", true), ("benign.jsonl", false)] {
        for (line, v) in lines(&root.join("data/eval").join(file))
            .into_iter()
            .enumerate()
        {
            let source = v["source"].as_str().unwrap();
            rows.push(Row {
                text: v["text"].as_str().unwrap().to_owned(),
                jailbreak,
                family: if jailbreak {
                    eval_family(source).to_owned()
                } else {
                    "eval:awesome-chatgpt-prompts".to_owned()
                },
                genre: (!jailbreak).then_some("persona prompts"),
                test_only: false,
                eval_dev: Some(line % 2 == 0),
                set: "eval",
            });
        }
    }
    let train = std::env::var_os("WARDEN_TRAIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("data/train"));
    for (file, jailbreak) in [("jailbreak.jsonl", true), ("benign.jsonl", false)] {
        for v in lines(&train.join(file)) {
            let family = v["family"].as_str().unwrap();
            let license = v["license"].as_str().unwrap_or("");
            rows.push(Row {
                text: v["text"].as_str().unwrap().to_owned(),
                jailbreak,
                family: format!("train:{family}"),
                genre: (!jailbreak).then(|| train_genre(family)),
                test_only: license.to_ascii_uppercase().starts_with("GPL")
                    || NOT_TRAINED.contains(&family),
                eval_dev: None,
                set: "train",
            });
        }
    }
    let own = root.join("crates/warden/tests/eval_data");
    for (file, jailbreak, family, genre) in [
        (
            "unseen_jailbreaks.jsonl",
            true,
            "warden:unseen-families",
            None,
        ),
        (
            "everyday_benign.jsonl",
            false,
            "warden:everyday",
            Some("short messages"),
        ),
        (
            "questions_about_attacks.jsonl",
            false,
            "warden:questions-about-attacks",
            Some("questions about attacks"),
        ),
        (
            "defensive_instructions.jsonl",
            false,
            "warden:defensive-instructions",
            Some("defensive security text"),
        ),
    ] {
        let path = own.join(file);
        if !path.is_file() {
            continue;
        }
        for v in lines(&path) {
            rows.push(Row {
                text: v["text"].as_str().unwrap().to_owned(),
                jailbreak,
                family: family.to_owned(),
                genre,
                test_only: true,
                eval_dev: None,
                set: "own",
            });
        }
    }
    rows
}
