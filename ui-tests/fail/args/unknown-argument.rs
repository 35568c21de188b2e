// An unknown `#[perforated(...)]` argument names the one that exists.
use perforated::prelude::*;

#[perforated(custom)]
struct Model {
    fc: Linear<2, 2>,
}

fn main() {}
