//! `#[perforated]` models: what the expansion builds, walks and runs.

mod common;

use common::TestDevice;

use perforated::prelude::*;

/// The DESIGN example.
#[perforated]
struct Mlp {
    fc1: Linear<64, 16>,
    act: ReLU,
    fc2: Linear<16, 10>,
}

#[perforated]
struct Generator {
    fc1: Linear<4, 16>,
    act: Tanh,
    fc2: Linear<16, 2>,
}

#[perforated]
struct Discriminator {
    fc1: Linear<2, 16>,
    act: ReLU,
    fc2: Linear<16, 1>,
}

/// Two networks converted together; the pair runs them itself.
#[perforated(custom_forward)]
struct Pair {
    generator: Generator,
    discriminator: Discriminator,
}

#[perforated]
struct Cnn {
    block: PaiSequential<Conv2d<1, 4, 3, 1, 1>, BatchNorm2D<4>>,
    act: ReLU,
    pool: MaxPool2d<2>,
    flat: Flatten<36>,
    head: Linear<36, 10>,
}

#[perforated]
struct Tracked {
    fc: Linear<8, 8>,
    #[pai(track)]
    norm: LayerNorm1D<8>,
    head: Linear<8, 2>,
}

#[perforated(custom_forward)]
struct Recurrent {
    #[pai(processor = GruState, dims = (Batch, Time, Neurons))]
    gru: Gru<3, 5>,
    head: Linear<5, 2>,
}

#[test]
fn the_design_example_builds_trains_and_reports() {
    let dev: TestDevice = Default::default();
    let mut model = Mlp::build(&dev).unwrap();
    assert_eq!(model.layers().len(), 2);
    assert_eq!(
        model.param_counts().unwrap().get(Role::Neuron),
        64 * 16 + 16 + 16 * 10 + 10
    );
    let x: Tensor<Rank2<8, 64>, f32, TestDevice> = dev.sample_normal();
    let y: Tensor<Rank2<8, 10>, f32, TestDevice> =
        dev.sample_normal::<Rank2<8, 10>>().softmax::<Axis<1>>();
    let mut opt = DendriticOptimizer::adam(AdamConfig::default());
    let grads = model.alloc_grads().unwrap();
    let loss = cross_entropy_with_logits_loss(model.forward_mut(x.trace(grads)), y);
    opt.step(&mut model, loss.backward()).unwrap();
    model.start_dendrite_phase().unwrap();
    assert_eq!(model.phase(), Phase::Dendrite);
    assert!(Mlp::<f32, TestDevice>::PERFORATED_SUMMARY.contains("fc1: Linear<64,16> — converted"));
    assert!(Mlp::<f32, TestDevice>::PERFORATED_SUMMARY.contains("act: ReLU — no parameters"));
}

#[test]
fn nested_networks_are_converted_together() {
    let dev: TestDevice = Default::default();
    let mut pair = Pair::build(&dev).unwrap();
    let paths: Vec<String> = pair.layers().into_iter().map(|l| l.path).collect();
    assert_eq!(
        paths,
        [
            "generator.fc1",
            "generator.fc2",
            "discriminator.fc1",
            "discriminator.fc2"
        ]
    );
    pair.start_dendrite_phase().unwrap();
    assert_eq!(pair.generator.phase(), Phase::Dendrite);
    assert_eq!(pair.discriminator.phase(), Phase::Dendrite);
    let z: Tensor<Rank2<3, 4>, f32, TestDevice> = dev.sample_normal();
    let score = pair.discriminator.forward(pair.generator.forward(z));
    assert_eq!(score.shape(), &(Const::<3>, Const::<1>));
}

#[test]
fn conv_groups_pools_and_flatten_compose() {
    let dev: TestDevice = Default::default();
    let mut cnn = Cnn::build(&dev).unwrap();
    let x: Tensor<(usize, Const<1>, usize, usize), f32, TestDevice> =
        dev.sample_normal_like(&(2, Const, 6, 6));
    let grads = cnn.alloc_grads().unwrap();
    let y = cnn.forward_mut(x.trace(grads));
    assert_eq!(y.shape(), &(2, Const::<10>));
    let paths: Vec<String> = cnn.layers().into_iter().map(|l| l.path).collect();
    assert_eq!(paths, ["block", "head"]);
}

#[test]
fn tracked_layers_train_without_dendrites() {
    let dev: TestDevice = Default::default();
    let mut model = Tracked::build(&dev).unwrap();
    let counts = model.param_counts().unwrap();
    assert_eq!(counts.get(Role::Tracked), 16);
    assert_eq!(model.layers().len(), 2);
    let x: Tensor<Rank2<4, 8>, f32, TestDevice> = dev.sample_normal();
    let _ = model.forward(x);
}

impl<E: perforated::Float, D: Device<E>> Recurrent<E, D> {
    fn run(&self, x: Tensor<(usize, usize, Const<3>), E, D>) -> Tensor<(usize, Const<2>), E, D> {
        let b = x.shape().0;
        let h0 = x.device().zeros_like(&(b, Const::<5>));
        let (_, last) = self.gru.forward((x, h0));
        self.head.forward(last)
    }
}

#[test]
fn recurrent_layers_convert_through_their_processor() {
    let dev: TestDevice = Default::default();
    let mut model = Recurrent::<f64, TestDevice>::build(&dev).unwrap();
    model.gru.grow_dendrites(1).unwrap();
    let x: Tensor<(usize, usize, Const<3>), f64, TestDevice> =
        dev.sample_normal_like(&(2, 4, Const));
    assert_eq!(model.run(x).shape(), &(2, Const::<2>));
    assert_eq!(model.layers()[0].dendrites, 1);
}

/// Const generics stay: one definition for every hidden size.
#[perforated]
struct Sized<const H: usize> {
    fc1: Linear<4, H>,
    act: ReLU,
    fc2: Linear<H, 2>,
}

#[test]
fn const_generic_models() {
    let dev: TestDevice = Default::default();
    let mut small = Sized::<3, f32, TestDevice>::build(&dev).unwrap();
    let mut large = Sized::<30, f32, TestDevice>::build(&dev).unwrap();
    let x: Tensor<Rank2<2, 4>, f32, TestDevice> = dev.zeros();
    let _ = small.forward(x.clone());
    let _ = large.forward(x);
    assert_eq!(
        small.param_counts().unwrap().inference(),
        4 * 3 + 3 + 3 * 2 + 2
    );
    assert_eq!(
        large.param_counts().unwrap().inference(),
        4 * 30 + 30 + 30 * 2 + 2
    );
}
