// `custom_forward` twice is reported at the second.
use perforated::prelude::*;

#[perforated(custom_forward, custom_forward)]
struct Model {
    fc: Linear<2, 2>,
}

fn main() {}
