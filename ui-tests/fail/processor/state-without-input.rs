// Keeping a state needs the place the layer takes it.
use perforated::prelude::*;
use std::marker::PhantomData;

#[derive(Processor)]
#[processor(outputs = 2, state = 1)]
struct Proc<E, D>(PhantomData<(E, D)>);

fn main() {}
