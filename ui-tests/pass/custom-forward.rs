// A residual block supplies its own forward and keeps everything else generated.
use perforated::prelude::*;

#[perforated(custom_forward)]
struct Residual {
    fc: Linear<4, 4>,
}

impl<E: perforated::Float, D: Device<E>> Module<Tensor<Rank2<2, 4>, E, D>> for Residual<E, D> {
    type Output = Tensor<Rank2<2, 4>, E, D>;
    type Error = D::Err;
    fn try_forward(&self, x: Tensor<Rank2<2, 4>, E, D>) -> Result<Self::Output, D::Err> {
        Ok(self.fc.try_forward(x.clone())? + x)
    }
}

fn main() {
    let dev: Cpu = Default::default();
    let block = Residual::<f32, Cpu>::build(&dev).unwrap();
    assert_eq!(block.layers().len(), 1);
    let _ = block.forward(dev.zeros());
}
