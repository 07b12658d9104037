#![allow(clippy::unwrap_used, clippy::print_stdout)]
use warden::safety::filters::normalize::Normalizer;
fn main() {
    let mut n = Normalizer::default();
    for l in std::io::stdin().lines() {
        let l = l.unwrap();
        println!("{}", String::from_utf8_lossy(n.fold(&l)));
    }
}
