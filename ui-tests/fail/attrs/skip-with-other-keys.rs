// `skip` leaves a field out entirely, so other keys make no sense with it.
use perforated::prelude::*;

#[perforated]
struct Model {
    #[pai(skip, track)]
    fc: Linear<2, 2>,
}

fn main() {}
