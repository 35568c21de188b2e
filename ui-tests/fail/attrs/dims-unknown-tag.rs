// Axis tags are Batch, Time, Any and Neurons; others are reported where written.
use perforated::prelude::*;

#[perforated]
struct Model {
    #[pai(dims = (Batch, Channels))]
    fc: Linear<2, 2>,
}

fn main() {}
