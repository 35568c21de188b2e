// Two networks converted together inside one pair struct.
use perforated::prelude::*;

#[perforated]
struct Generator {
    fc: Linear<2, 4>,
}

#[perforated]
struct Critic {
    fc: Linear<4, 1>,
}

#[perforated]
struct Pair {
    generator: Generator,
    critic: Critic,
}

fn main() {
    let dev: Cpu = Default::default();
    let mut pair = Pair::build(&dev).unwrap();
    pair.start_dendrite_phase().unwrap();
    let z: Tensor<Rank2<3, 2>, f32, Cpu> = dev.zeros();
    let _ = pair.forward(z);
}
