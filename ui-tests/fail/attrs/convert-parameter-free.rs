// An activation has nothing to convert.
use perforated::prelude::*;

#[perforated]
struct Model {
    #[pai(convert)]
    act: ReLU,
}

fn main() {}
