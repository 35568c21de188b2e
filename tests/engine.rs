//! Invariants of the method, checked exactly, on a hand-written model.

mod common;

use common::TestDevice;

use common::{mse_step, quick_config, snapshot, Mlp};
use perforated::prelude::*;

fn data(
    dev: &TestDevice,
) -> (
    Tensor<Rank2<32, 4>, f32, TestDevice>,
    Tensor<Rank2<32, 3>, f32, TestDevice>,
) {
    let x: Tensor<Rank2<32, 4>, f32, TestDevice> = dev.sample_normal();
    let y: Tensor<Rank2<32, 3>, f32, TestDevice> = dev.sample_normal();
    (x, y)
}

fn adam(lr: f64) -> DendriticOptimizer<f32, TestDevice> {
    DendriticOptimizer::adam(AdamConfig {
        lr,
        ..Default::default()
    })
}

/// Trains one neuron phase, one dendrite phase, accepts, and trains neurons again, so that
/// the model has a dendrite per layer with non-zero output weights.
fn model_with_trained_dendrites(
    learning: DendriteLearning,
    dev: &TestDevice,
) -> (
    Mlp<4, 8, 3, f32, TestDevice>,
    DendriticOptimizer<f32, TestDevice>,
) {
    let (x, y) = data(dev);
    let mut model = Mlp::<4, 8, 3, f32, TestDevice>::new(dev, quick_config(learning));
    let mut opt = adam(1e-2);
    for _ in 0..10 {
        mse_step(&mut model, &mut opt, &x, &y);
    }
    model.start_dendrite_phase().unwrap();
    for _ in 0..20 {
        mse_step(&mut model, &mut opt, &x, &y);
    }
    model.accept_dendrites().unwrap();
    for _ in 0..10 {
        mse_step(&mut model, &mut opt, &x, &y);
    }
    (model, opt)
}

#[test]
fn accepting_a_dendrite_leaves_outputs_bit_identical() {
    for learning in [DendriteLearning::Correlation, DendriteLearning::Gradient] {
        let dev = TestDevice::seed_from_u64(1);
        let (x, y) = data(&dev);
        let (mut model, mut opt) = model_with_trained_dendrites(learning, &dev);
        model.start_dendrite_phase().unwrap();
        for _ in 0..20 {
            mse_step(&mut model, &mut opt, &x, &y);
        }
        let before = model.forward(x.clone()).as_vec();
        model.accept_dendrites().unwrap();
        assert_eq!(model.dendrite_count(), 4, "{learning:?}");
        let after = model.forward(x.clone()).as_vec();
        assert_eq!(before, after, "{learning:?}: accepting changed the output");
    }
}

#[test]
fn dendrite_phase_steps_change_only_the_candidate() {
    let dev = TestDevice::seed_from_u64(2);
    let (x, y) = data(&dev);
    let (mut model, mut opt) = model_with_trained_dendrites(DendriteLearning::Correlation, &dev);
    // the accepted dendrites matter: their output weights have trained away from zero.
    let trained = snapshot(&mut model);
    assert!(trained
        .iter()
        .filter(|(p, _, _)| p.ends_with("dendrites.0.output"))
        .all(|(_, _, v)| v.iter().any(|w| *w != 0.0)));

    model.start_dendrite_phase().unwrap();
    let out_before = model.forward(x.clone()).as_vec();
    let params_before = snapshot(&mut model);
    for _ in 0..25 {
        mse_step(&mut model, &mut opt, &x, &y);
    }
    let out_after = model.forward(x.clone()).as_vec();
    let params_after = snapshot(&mut model);
    assert_eq!(
        out_before, out_after,
        "the dendrite phase changed the output"
    );
    let mut candidate_moved = false;
    let after: std::collections::HashMap<_, _> = params_after
        .iter()
        .map(|(p, _, v)| (p.as_str(), v))
        .collect();
    for (path, role, a) in &params_before {
        let b = after[path.as_str()];
        if *role == Role::Candidate {
            candidate_moved |= a != b;
        } else if !path.contains(".candidate.") {
            // everything else, the candidate's statistics and snapshot aside, is frozen
            assert_eq!(
                a,
                b,
                "{path} ({}) changed in the dendrite phase",
                role.name()
            );
        }
    }
    assert!(candidate_moved, "the candidate did not train");
}

/// `loss = sum(y ⊙ g)` with `g` fixed, so the gradient reaching `x` depends only on the paths
/// from `x` to `y`, not on the values of `y`.
fn input_gradient(
    layer: &mut Dendritic<perforated::dfdx::nn::modules::Linear<4, 3, f32, TestDevice>>,
    x: &Tensor<Rank2<5, 4>, f32, TestDevice>,
    g: &Tensor<Rank2<5, 3>, f32, TestDevice>,
) -> Vec<f32> {
    let x = x.clone().leaky_traced();
    let handle = x.retaped::<NoneTape>();
    let y = layer.forward_mut(x);
    let grads = (y * g.clone()).sum().backward();
    grads.get(&handle).as_vec()
}

#[test]
fn perforated_dendrites_send_no_gradient_upstream() {
    let dev = TestDevice::seed_from_u64(3);
    let x: Tensor<Rank2<5, 4>, f32, TestDevice> = dev.sample_normal();
    let g: Tensor<Rank2<5, 3>, f32, TestDevice> = dev.sample_normal();
    for learning in [DendriteLearning::Correlation, DendriteLearning::Gradient] {
        let config = DendriteConfig {
            learning,
            init_std: 0.5,
            ..Default::default()
        };
        let mut layer: Dendritic<_> =
            Dendritic::new(&dev, dev.build_module::<Linear<4, 3>, f32>(), config).unwrap();
        let without = input_gradient(&mut layer, &x, &g);
        layer.grow_dendrites(2).unwrap();
        // non-zero output weights, so the dendrites are really in the output.
        common::set_outputs(&mut layer, |_| 0.7);
        let with = input_gradient(&mut layer, &x, &g);
        match learning {
            DendriteLearning::Correlation => assert_eq!(without, with),
            DendriteLearning::Gradient => {
                assert_ne!(without, with, "gradient mode must not detach");
            }
        }
    }
}

#[test]
fn optimizer_keeps_state_of_tensors_that_survive_a_restructure() {
    let dev = TestDevice::seed_from_u64(4);
    let (x, y) = data(&dev);
    let mut model =
        Mlp::<4, 8, 3, f32, TestDevice>::new(&dev, quick_config(DendriteLearning::Correlation));
    let mut opt = adam(1e-2);
    for _ in 0..3 {
        mse_step(&mut model, &mut opt, &x, &y);
    }
    assert_eq!(opt.steps("fc1.neurons.weight"), Some(3));
    model.start_dendrite_phase().unwrap();
    for _ in 0..8 {
        mse_step(&mut model, &mut opt, &x, &y);
    }
    assert_eq!(
        opt.steps("fc1.neurons.weight"),
        Some(3),
        "frozen in the dendrite phase"
    );
    assert_eq!(opt.steps("fc1.candidate.module.weight"), Some(8));
    model.accept_dendrites().unwrap();
    mse_step(&mut model, &mut opt, &x, &y);
    assert_eq!(
        opt.steps("fc1.neurons.weight"),
        Some(4),
        "state kept across the restructure"
    );
    assert_eq!(
        opt.steps("fc1.candidate.module.weight"),
        None,
        "the candidate is gone"
    );
    assert_eq!(opt.steps("fc1.dendrites.0.output"), Some(1));
    assert_eq!(
        opt.steps("fc1.dendrites.0.module.weight"),
        None,
        "accepted dendrites are frozen"
    );
    model.start_dendrite_phase().unwrap();
    mse_step(&mut model, &mut opt, &x, &y);
    assert_eq!(
        opt.steps("fc1.candidate.module.weight"),
        Some(1),
        "a new candidate starts over"
    );
}

#[test]
fn misuse_is_an_error_that_says_what_to_do() {
    let dev = TestDevice::seed_from_u64(5);
    let (x, y) = data(&dev);
    let mut model =
        Mlp::<4, 8, 3, f32, TestDevice>::new(&dev, quick_config(DendriteLearning::Correlation));
    let err = model.accept_dendrites().unwrap_err().to_string();
    assert!(
        err.contains("`fc1`") && err.contains("needs the dendrite phase"),
        "{err}"
    );
    model.start_dendrite_phase().unwrap();
    let err = model.start_dendrite_phase().unwrap_err().to_string();
    assert!(
        err.contains("already") || err.contains("is in the dendrite phase"),
        "{err}"
    );
    let err = model.accept_dendrites().unwrap_err().to_string();
    assert!(
        err.contains("no candidate snapshot") && err.contains("warm-up"),
        "{err}"
    );
    // `forward` (no tape) in the dendrite phase: the candidate never sees the neuron error,
    // and the step says so instead of training nothing in silence
    let before = snapshot(&mut model);
    let grads = model.alloc_grads().unwrap();
    let _ = mse_loss(model.forward(x.clone()), y.clone());
    let err = adam(1e-2).step(&mut model, grads).unwrap_err().to_string();
    assert!(
        err.contains("`fc1`") && err.contains("forward_mut") && err.contains("x.trace(grads)"),
        "{err}"
    );
    assert_eq!(before, snapshot(&mut model));
    // a NaN loss gradient is reported by the step, and nothing is updated.
    let before = snapshot(&mut model);
    let grads = model.alloc_grads().unwrap();
    let bad = y.clone() * f32::NAN;
    let loss = mse_loss(model.forward_mut(x.trace(grads)), bad);
    let err = DendriticOptimizer::adam(AdamConfig::default())
        .step(&mut model, loss.backward())
        .unwrap_err()
        .to_string();
    assert!(err.contains("neuron error") && err.contains("fc1"), "{err}");
    assert_eq!(before, snapshot(&mut model));
    // and the layer still works afterwards.
    for _ in 0..8 {
        mse_step(&mut model, &mut adam(1e-2), &x, &y);
    }
    model.accept_dendrites().unwrap();
}

#[test]
fn one_reused_gradient_buffer_trains_exactly_as_a_fresh_one_per_step() {
    // neuron phase, dendrite phase, accept, neuron phase, a second dendrite phase, accept,
    // neuron phase: every phase change leaves tensors in the buffer that the new phase does
    // not train, or brings new ones, so a gradient carried over or dropped would show.
    for learning in [DendriteLearning::Correlation, DendriteLearning::Gradient] {
        let run = |reuse: bool| {
            let dev = TestDevice::seed_from_u64(4);
            let (x, y) = data(&dev);
            let mut model = Mlp::<4, 8, 3, f32, TestDevice>::new(&dev, quick_config(learning));
            let mut opt = adam(1e-2);
            let mut grads = model.alloc_grads().unwrap();
            let mut losses = Vec::new();
            for phase in 0..7 {
                for _ in 0..8 {
                    if reuse {
                        model.zero_grads(&mut grads).unwrap();
                        let loss = mse_loss(model.forward_mut(x.trace(grads)), y.clone());
                        losses.push(loss.array());
                        grads = loss.backward();
                        opt.update(&mut model, &mut grads).unwrap();
                    } else {
                        losses.push(mse_step(&mut model, &mut opt, &x, &y));
                    }
                }
                match phase % 2 {
                    0 if phase < 6 => model.start_dendrite_phase().unwrap(),
                    1 => model.accept_dendrites().unwrap(),
                    _ => {}
                }
            }
            assert_eq!(model.fc1.dendrite_count(), 3, "{learning:?}");
            (losses, snapshot(&mut model))
        };
        let (fresh_losses, fresh) = run(false);
        let (reused_losses, reused) = run(true);
        assert_eq!(fresh_losses, reused_losses, "{learning:?}: losses");
        assert_eq!(fresh, reused, "{learning:?}: every tensor");
    }
}
