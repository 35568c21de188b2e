// A block of your own must state its neuron axis.
use perforated::prelude::*;

#[perforated]
struct Model {
    #[pai(convert)]
    block: MyBlock,
}

struct MyBlock;

fn main() {}
