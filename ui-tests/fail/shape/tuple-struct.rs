// A tuple struct is refused at its fields: layer names become checkpoint paths.
use perforated::prelude::*;

#[perforated]
struct Model(Linear<2, 2>);

fn main() {}
