//! Loads the evaluation data (`data/eval` at the repository root, a copy of the public
//! sets described in its README) and splits it deterministically: rows at even 0-based line
//! indexes are the development half (rules were tuned on it), odd ones are held out.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use warden::safety::filters::Scanner;

pub struct Row {
    pub text: String,
    pub source: String,
    pub line: usize,
}

/// `$WARDEN_EVAL_DIR`, or `<repo root>/data/eval`. Missing data fails loudly.
pub fn data_dir() -> PathBuf {
    let dir = match std::env::var_os("WARDEN_EVAL_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/eval"),
    };
    assert!(
        dir.join("jailbreak.jsonl").is_file() && dir.join("benign.jsonl").is_file(),
        "jailbreak eval data not found in {} (set WARDEN_EVAL_DIR)",
        dir.display()
    );
    dir
}

/// Warden's own test sets beside this file (never trained on): short everyday prompts
/// and jailbreaks written for families the shared data has few of.
pub fn own_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/eval_data")
}

pub fn load(dir: &Path, file: &str) -> Vec<Row> {
    let text = std::fs::read_to_string(dir.join(file)).unwrap();
    text.lines()
        .enumerate()
        .map(|(line, l)| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            Row {
                text: v["text"].as_str().unwrap().to_owned(),
                source: v["source"].as_str().unwrap().to_owned(),
                line,
            }
        })
        .collect()
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Half {
    Dev,
    HeldOut,
    All,
}

impl Half {
    pub fn keeps(self, line: usize) -> bool {
        match self {
            Half::Dev => line.is_multiple_of(2),
            Half::HeldOut => line % 2 == 1,
            Half::All => true,
        }
    }
}

/// Share of the half's rows whose jailbreak score reaches `threshold`.
pub fn rate(scanner: &Scanner, rows: &[Row], half: Half, threshold: f32) -> (usize, usize) {
    let kept: Vec<&Row> = rows.iter().filter(|r| half.keeps(r.line)).collect();
    let hits = kept
        .iter()
        .filter(|r| scanner.scan(&r.text).jailbreak.score >= threshold)
        .count();
    (hits, kept.len())
}
