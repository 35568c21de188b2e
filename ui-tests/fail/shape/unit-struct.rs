// A unit struct has no layers.
use perforated::prelude::*;

#[perforated]
struct Model;

fn main() {}
