// `dims` takes a tuple of tags.
use perforated::prelude::*;

#[perforated]
struct Model {
    #[pai(dims = Neurons)]
    fc: Linear<2, 2>,
}

fn main() {}
