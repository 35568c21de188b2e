// A processor whose attribute is wrong reports that error once: the model that names it adds
// no "`Processor` is not implemented" errors of its own.
use perforated::prelude::*;
use std::marker::PhantomData;

#[derive(Processor)]
#[processor(outputs = 2, main = 0, state = 1)]
struct Sequence<E, D>(PhantomData<(E, D)>);

#[perforated(custom_forward)]
struct Reader {
    #[pai(processor = Sequence)]
    lstm: Lstm<8, 16>,
    head: Linear<16, 10>,
}

fn main() {}
