// `outputs = 0` is refused at the count, once (the macro panicked on it before).
use perforated::prelude::*;
use std::marker::PhantomData;

#[derive(Processor)]
#[processor(outputs = 0)]
struct Proc<E, D>(PhantomData<(E, D)>);

fn main() {}
