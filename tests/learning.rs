//! Dendrites learn what the layer alone cannot: a product term.

mod common;

use common::TestDevice;

use perforated::prelude::*;

const N: usize = 256;
type Lin = perforated::dfdx::nn::modules::Linear<2, 1, f32, TestDevice>;

/// `y = x₀·x₁ + 0.5·x₀` on `[-1, 1]²`: a linear layer fits the linear part and leaves the
/// product (variance 1/9) as error.
fn data(
    dev: &TestDevice,
) -> (
    Tensor<Rank2<N, 2>, f32, TestDevice>,
    Tensor<Rank2<N, 1>, f32, TestDevice>,
) {
    let x: Tensor<Rank2<N, 2>, f32, TestDevice> = dev.sample_uniform::<Rank2<N, 2>>() * 2.0 - 1.0;
    let v = x.array();
    let y: Vec<f32> = v.iter().map(|r| r[0] * r[1] + 0.5 * r[0]).collect();
    (x, dev.tensor_from_vec(y, (Const::<N>, Const::<1>)))
}

fn train(
    layer: &mut Dendritic<Lin>,
    opt: &mut DendriticOptimizer<f32, TestDevice>,
    x: &Tensor<Rank2<N, 2>, f32, TestDevice>,
    y: &Tensor<Rank2<N, 1>, f32, TestDevice>,
    steps: usize,
) -> f32 {
    let mut best = f32::INFINITY;
    for _ in 0..steps {
        let grads = layer.alloc_grads().unwrap();
        let loss = mse_loss(layer.forward_mut(x.trace(grads)), y.clone());
        best = best.min(loss.array());
        opt.step(layer, loss.backward()).unwrap();
    }
    best
}

#[test]
fn dendrites_fit_what_a_linear_layer_cannot() {
    let dev = TestDevice::seed_from_u64(7);
    let (x, y) = data(&dev);
    let config = DendriteConfig {
        correlation: CorrelationConfig {
            warmup_batches: 20,
            ..Default::default()
        },
        ..Default::default()
    };
    let mut layer: Dendritic<Lin> = Dendritic::new(&dev, BuildModule::build(&dev), config).unwrap();
    let mut opt = DendriticOptimizer::adam(AdamConfig {
        lr: 0.03,
        ..Default::default()
    });
    let without = train(&mut layer, &mut opt, &x, &y, 400);
    assert!(
        (without - 1.0 / 9.0).abs() < 0.02,
        "the linear layer alone reaches about 1/9: {without}"
    );

    let mut scores = Vec::new();
    for round in 0..3 {
        layer.start_dendrite_phase().unwrap();
        train(&mut layer, &mut opt, &x, &y, 300);
        let report = layer.correlation().unwrap();
        scores.push(report.best_score);
        assert!(
            report.best_score > 0.05,
            "round {round}: candidate score {report:?}"
        );
        layer.accept_candidate().unwrap();
        train(&mut layer, &mut opt, &x, &y, 400);
    }
    let with = train(&mut layer, &mut opt, &x, &y, 1);
    println!("loss without dendrites {without:.4}, with 3: {with:.4}; candidate scores {scores:?}");
    assert!(
        with < 0.75 * without,
        "dendrites did not help: {with} vs {without}"
    );
}
