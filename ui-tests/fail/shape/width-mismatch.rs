// Consecutive layers whose widths differ are reported at the struct, naming both fields, and
// nothing else is reported (dfdx alone would fail at the `forward` call, as a `TryMatMul`
// bound).
use perforated::prelude::*;

#[perforated]
struct Mlp {
    fc1: Linear<64, 16>,
    act: ReLU,
    fc2: Linear<32, 10>,
}

fn main() {
    let dev: Cpu = Default::default();
    let model = Mlp::<f32, Cpu>::build(&dev).unwrap();
    let x: Tensor<Rank2<4, 64>, f32, Cpu> = dev.zeros();
    let _ = model.forward(x);
}
