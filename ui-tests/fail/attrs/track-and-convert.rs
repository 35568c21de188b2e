// A field cannot both get dendrites and train without them.
use perforated::prelude::*;

#[perforated]
struct Model {
    #[pai(track, convert)]
    fc: Linear<2, 2>,
}

fn main() {}
