// The same `pai` key twice is reported at the second.
use perforated::prelude::*;

#[perforated]
struct Model {
    #[pai(track, track)]
    norm: LayerNorm1D<2>,
}

fn main() {}
