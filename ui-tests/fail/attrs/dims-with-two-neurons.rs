// A layer has one neuron axis.
use perforated::prelude::*;

#[perforated]
struct Model {
    #[pai(dims = (Neurons, Neurons))]
    fc: Linear<2, 2>,
}

fn main() {}
