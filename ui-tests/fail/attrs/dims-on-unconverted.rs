// `dims` only means something for a layer that gets dendrites.
use perforated::prelude::*;

#[perforated]
struct Model {
    #[pai(track, dims = (Batch, Neurons))]
    norm: LayerNorm1D<2>,
}

fn main() {}
