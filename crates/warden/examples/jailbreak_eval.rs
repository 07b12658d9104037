//! Measures the shipped jailbreak rules on `data/eval`: recall on jailbreak.jsonl and
//! false-positive rate on benign.jsonl, per half (dev = even lines, held-out = odd lines),
//! at the block and flag thresholds, and recall per source.
//! `cargo run --release -p warden --example jailbreak_eval -- [DIR] [--misses dev|benign|everyday|unseen]`
#![allow(clippy::unwrap_used, clippy::print_stdout)]

#[path = "../tests/eval_data/mod.rs"]
mod eval_data;

use std::collections::BTreeMap;

use eval_data::{load, rate, Half};
use warden::safety::filters::{FilterPolicy, Scanner};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(dir) = args.first().filter(|a| !a.starts_with("--")) {
        std::env::set_var("WARDEN_EVAL_DIR", dir);
    }
    let dir = eval_data::data_dir();
    let policy = FilterPolicy::default();
    let scanner = Scanner::new(&policy).unwrap();
    let jailbreaks = load(&dir, "jailbreak.jsonl");
    let benign = load(&dir, "benign.jsonl");

    for (name, threshold) in [
        ("block", policy.jailbreak.block_threshold),
        ("flag", policy.jailbreak.flag_threshold),
    ] {
        println!("threshold {name} = {threshold}");
        for (label, half) in [
            ("dev", Half::Dev),
            ("held-out", Half::HeldOut),
            ("all", Half::All),
        ] {
            let (tp, p) = rate(&scanner, &jailbreaks, half, threshold);
            let (fp, n) = rate(&scanner, &benign, half, threshold);
            println!(
                "  {label:9} recall {:5.1}% ({tp}/{p})   FPR {:4.1}% ({fp}/{n})",
                100.0 * tp as f64 / p as f64,
                100.0 * fp as f64 / n as f64
            );
        }
    }

    let everyday = load(&eval_data::own_dir(), "everyday_benign.jsonl");
    let unseen = load(&eval_data::own_dir(), "unseen_jailbreaks.jsonl");
    for (name, threshold) in [
        ("block", policy.jailbreak.block_threshold),
        ("flag", policy.jailbreak.flag_threshold),
    ] {
        let (fp, n) = rate(&scanner, &everyday, Half::All, threshold);
        let (tp, p) = rate(&scanner, &unseen, Half::All, threshold);
        println!(
            "{name}: everyday benign FPR {:4.1}% ({fp}/{n})   unseen jailbreak recall {:5.1}% ({tp}/{p})",
            100.0 * fp as f64 / n as f64,
            100.0 * tp as f64 / p as f64
        );
    }

    let block = policy.jailbreak.block_threshold;
    let mut per_source: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for row in jailbreaks.iter().filter(|r| Half::HeldOut.keeps(r.line)) {
        let group = row
            .source
            .rsplit(['#', '/'])
            .next()
            .unwrap_or(&row.source)
            .to_owned();
        let entry = per_source.entry(group).or_default();
        entry.1 += 1;
        if scanner.scan(&row.text).jailbreak.score >= block {
            entry.0 += 1;
        }
    }
    println!("held-out recall per source at block threshold:");
    for (source, (hit, total)) in per_source {
        println!("  {source:45} {hit:3}/{total:3}");
    }

    // Tuning aid: lists dev-half rows of the shared data only, never held-out ones.
    if let Some(pos) = args.iter().position(|a| a == "--misses") {
        let (rows, want_hit, half) = match args.get(pos + 1).map(String::as_str) {
            Some("benign") => (&benign, true, Half::Dev),
            Some("everyday") => (&everyday, true, Half::All),
            Some("unseen") => (&unseen, false, Half::All),
            _ => (&jailbreaks, false, Half::Dev),
        };
        for row in rows.iter().filter(|r| half.keeps(r.line)) {
            let scan = scanner.scan(&row.text);
            if (scan.jailbreak.score >= block) == want_hit {
                let head: String = row.text.chars().take(160).collect();
                println!(
                    "{:.2} {:?} [{}] {}",
                    scan.jailbreak.score,
                    scan.jailbreak.families,
                    row.source.rsplit('#').next().unwrap_or(""),
                    head.replace('\n', " ")
                );
            }
        }
    }
}
