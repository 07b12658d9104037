#![allow(clippy::print_stdout, clippy::unwrap_used)]
use warden::safety::filters::learned::LinearModel;
use warden::safety::filters::normalize::Normalizer;
fn main() {
    let m = LinearModel::embedded().unwrap();
    let mut f = Normalizer::default();
    for t in std::env::args().skip(1) {
        let folded = f.fold(&t).to_vec();
        println!("{:?}  {}", m.probability(&folded), t);
    }
}
