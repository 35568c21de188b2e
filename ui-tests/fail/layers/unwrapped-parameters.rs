// A field with parameters that is neither converted, tracked nor skipped is reported at its
// type, with the three ways out.
use perforated::prelude::*;

struct Embedding<E, D>(std::marker::PhantomData<(E, D)>);

#[perforated(custom_forward)]
struct Model {
    table: Embedding,
    fc: Linear<2, 2>,
}

fn main() {}
