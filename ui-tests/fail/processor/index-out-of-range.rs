// A `main` index past the layer's outputs is refused at the index.
use perforated::prelude::*;
use std::marker::PhantomData;

#[derive(Processor)]
#[processor(outputs = 2, main = 2)]
struct Proc<E, D>(PhantomData<(E, D)>);

fn main() {}
