// A misspelt `pai` key lists the valid ones.
use perforated::prelude::*;

#[perforated]
struct Model {
    #[pai(conver)]
    fc: Linear<2, 2>,
}

fn main() {}
