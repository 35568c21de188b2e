// A bare normalisation layer is refused: group it with the layer before it.
use perforated::prelude::*;

#[perforated]
struct Model {
    fc: Linear<2, 4>,
    norm: BatchNorm1D<4>,
}

fn main() {}
