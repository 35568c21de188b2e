// Generated code names only fully qualified paths: shadowing the prelude changes nothing,
// and the layer names need not even be in scope.
#![allow(dead_code)]

struct Option;
struct Result;
struct Vec;
struct Box;

#[perforated::perforated]
struct Model {
    fc1: Linear<4, 8>,
    act: perforated::prelude::ReLU,
    fc2: Linear<8, 2>,
}

fn main() {
    use perforated::prelude::*;
    let dev: Cpu = Default::default();
    let model = <Model as BuildDendritic>::build(&dev).unwrap();
    let x: Tensor<Rank2<3, 4>, f32, Cpu> = dev.zeros();
    let _ = model.forward(x);
}
