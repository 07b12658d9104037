//! Prints the jailbreak score, the rule cues alone and the families of each argument:
//! `cargo run --release -p warden --example probe_learned -- "text" ...`
#![allow(clippy::print_stdout, clippy::unwrap_used)]

use warden::safety::filters::{FilterPolicy, Scanner};

fn main() {
    let scanner = Scanner::new(&FilterPolicy::default()).unwrap();
    for text in std::env::args().skip(1) {
        let found = scanner.scan(&text).jailbreak;
        println!(
            "{:.2} (cues {:.2}) {:?}  {text}",
            found.score, found.cues, found.families
        );
    }
}
