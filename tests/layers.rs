//! The engine's invariants hold for convolutional and grouped layers too.

mod common;

use common::TestDevice;

use perforated::layers::{Conv2d, PaiSequential};
use perforated::prelude::*;

type Img = Tensor<(usize, Const<2>, usize, usize), f32, TestDevice>;
type Conv = Conv2d<2, 3, 3, f32, TestDevice, 1, 1>;
type Group = PaiSequential<Conv, perforated::dfdx::nn::modules::BatchNorm2D<3, f32, TestDevice>>;

use common::values;

macro_rules! invariants {
    ($test:ident, $layer:ty) => {
        #[test]
        fn $test() {
            let dev = TestDevice::seed_from_u64(5);
            let x: Img = dev.sample_normal_like(&(4, Const, 5, 5));
            let target: Tensor<(usize, Const<3>, usize, usize), f32, TestDevice> =
                dev.sample_normal_like(&(4, Const, 5, 5));
            let config = DendriteConfig {
                correlation: CorrelationConfig {
                    warmup_batches: 2,
                    ..Default::default()
                },
                ..Default::default()
            };
            let mut layer: Dendritic<$layer> =
                Dendritic::new(&dev, BuildModule::build(&dev), config).unwrap();
            let mut opt = DendriticOptimizer::adam(AdamConfig {
                lr: 0.02,
                ..Default::default()
            });
            let step = |layer: &mut Dendritic<$layer>,
                        opt: &mut DendriticOptimizer<f32, TestDevice>| {
                let grads = layer.alloc_grads().unwrap();
                let loss = mse_loss(layer.forward_mut(x.trace(grads)), target.clone());
                opt.step(layer, loss.backward()).unwrap();
            };
            for round in 0..2 {
                for _ in 0..5 {
                    step(&mut layer, &mut opt);
                }
                // dendrite phase: only the candidate (and its own statistics) move
                layer.start_dendrite_phase().unwrap();
                let out = layer.forward(x.clone()).as_vec();
                let before = values(&mut layer);
                for _ in 0..6 {
                    step(&mut layer, &mut opt);
                }
                assert_eq!(
                    layer.forward(x.clone()).as_vec(),
                    out,
                    "round {round}: output moved"
                );
                let after = values(&mut layer);
                let mut candidate_moved = false;
                for (path, (role, v)) in &before {
                    if path.starts_with("candidate.") {
                        candidate_moved |= *role == Role::Candidate && after[path].1 != *v;
                    } else {
                        assert_eq!(&after[path].1, v, "round {round}: {path} moved");
                    }
                }
                assert!(candidate_moved, "round {round}");
                // acceptance: bit-identical output
                layer.accept_candidate().unwrap();
                assert_eq!(
                    layer.forward(x.clone()).as_vec(),
                    out,
                    "round {round}: acceptance changed the output"
                );
            }
            // the accepted dendrites matter after another neuron phase
            for _ in 0..5 {
                step(&mut layer, &mut opt);
            }
            assert!(values(&mut layer)["dendrites.1.output"]
                .1
                .iter()
                .any(|w| *w != 0.0));
            // perforation: the input gradient of a linear loss ignores the dendrites
            let g: Tensor<(usize, Const<3>, usize, usize), f32, TestDevice> =
                dev.sample_normal_like(&(4, Const, 5, 5));
            let input_grad = |layer: &mut Dendritic<$layer>| {
                let t = x.clone().leaky_traced();
                let h = t.retaped::<NoneTape>();
                let y = layer.forward_mut(t);
                (y * g.clone())
                    .sum::<Rank0, _>()
                    .backward()
                    .get(&h)
                    .as_vec()
            };
            let with = input_grad(&mut layer);
            layer.truncate_dendrites(0).unwrap();
            let without = input_grad(&mut layer);
            // a BatchNorm in training mode sees the same batch either way: identical
            assert_eq!(with, without);
        }
    };
}

invariants!(conv_layer_keeps_the_invariants, Conv);
invariants!(conv_batchnorm_group_keeps_the_invariants, Group);

#[test]
fn grouped_dendrites_keep_their_own_running_statistics() {
    let dev = TestDevice::seed_from_u64(6);
    let x: Img = dev.sample_normal_like(&(4, Const, 5, 5)) * 3.0 + 1.0;
    let target: Tensor<(usize, Const<3>, usize, usize), f32, TestDevice> =
        dev.sample_normal_like(&(4, Const, 5, 5));
    let config = DendriteConfig {
        correlation: CorrelationConfig {
            warmup_batches: 2,
            ..Default::default()
        },
        ..Default::default()
    };
    let mut layer: Dendritic<Group> =
        Dendritic::new(&dev, BuildModule::build(&dev), config).unwrap();
    let mut opt = DendriticOptimizer::adam(AdamConfig::default());
    let mut step = |layer: &mut Dendritic<Group>| {
        let grads = layer.alloc_grads().unwrap();
        let loss = mse_loss(layer.forward_mut(x.trace(grads)), target.clone());
        opt.step(layer, loss.backward()).unwrap();
    };
    let stats = |layer: &mut Dendritic<Group>, path: &str| values(layer)[path].1.clone();
    for _ in 0..3 {
        step(&mut layer);
    }
    let neuron_mean = stats(&mut layer, "neurons.norm.running_mean");
    assert!(
        neuron_mean.iter().any(|m| *m != 0.0),
        "the neurons' statistics train"
    );
    layer.start_dendrite_phase().unwrap();
    let fresh = stats(&mut layer, "candidate.module.norm.running_mean");
    assert!(
        fresh.iter().all(|m| *m == 0.0),
        "a candidate starts with its own fresh statistics"
    );
    for _ in 0..4 {
        step(&mut layer);
    }
    let candidate_mean = stats(&mut layer, "candidate.module.norm.running_mean");
    assert_ne!(
        candidate_mean, fresh,
        "the candidate's statistics train in the dendrite phase"
    );
    assert_eq!(
        stats(&mut layer, "neurons.norm.running_mean"),
        neuron_mean,
        "the neurons' are frozen"
    );
    layer.accept_candidate().unwrap();
    let dendrite_mean = stats(&mut layer, "dendrites.0.module.norm.running_mean");
    for _ in 0..3 {
        step(&mut layer);
    }
    assert_eq!(
        stats(&mut layer, "dendrites.0.module.norm.running_mean"),
        dendrite_mean,
        "accepted: frozen"
    );
    assert_ne!(
        stats(&mut layer, "neurons.norm.running_mean"),
        neuron_mean,
        "the neurons' train again"
    );
}
