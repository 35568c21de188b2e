// Tags that do not fit the layer's output shape are refused where the model is used.
use perforated::prelude::*;

#[perforated]
struct Model {
    #[pai(dims = (Batch, Time, Neurons))]
    fc: Linear<2, 2>,
}

fn main() {
    let dev: Cpu = Default::default();
    let model = Model::<f32, Cpu>::build(&dev).unwrap();
    let x: Tensor<Rank2<3, 2>, f32, Cpu> = dev.zeros();
    let _ = model.fc.forward(x);
}
