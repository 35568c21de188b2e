// A `state` index past the layer's outputs is refused at the index.
use perforated::prelude::*;
use std::marker::PhantomData;

#[derive(Processor)]
#[processor(outputs = 2, state = 3, state_input = 1)]
struct Proc<E, D>(PhantomData<(E, D)>);

fn main() {}
