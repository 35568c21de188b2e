// `dims` must mark the neuron axis.
use perforated::prelude::*;

#[perforated]
struct Model {
    #[pai(dims = (Batch, Any))]
    fc: Linear<2, 2>,
}

fn main() {}
