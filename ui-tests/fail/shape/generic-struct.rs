// The macro adds `<E, D>` itself: user generics are refused at the first parameter.
use perforated::prelude::*;

#[perforated]
struct Model<T> {
    fc: Linear<2, 2>,
    marker: std::marker::PhantomData<T>,
}

fn main() {}
