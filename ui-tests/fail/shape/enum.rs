// `#[perforated]` on an enum is refused at the `enum` keyword.
use perforated::prelude::*;

#[perforated]
enum Model {
    A,
}

fn main() {}
