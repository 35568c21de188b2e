// A misspelt `processor` key lists the valid ones.
use perforated::prelude::*;
use std::marker::PhantomData;

#[derive(Processor)]
#[processor(mian = 0)]
struct Proc<E, D>(PhantomData<(E, D)>);

fn main() {}
