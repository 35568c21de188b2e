//! Recurrent layers converted through processors: each dendrite keeps its own state.

mod common;

use common::TestDevice;

use perforated::layers::{last_step, Gru, GruCell, Lstm};
use perforated::layers::{GruCellState, GruState, LstmLast};
use perforated::params::{Param, ParamVisitor};
use perforated::prelude::*;

type Cell = GruCell<3, 4, f64, TestDevice>;
type Hidden = Tensor<(usize, Const<4>), f64, TestDevice>;

#[test]
fn stepped_gru_cell_dendrites_keep_their_own_state_until_reset() {
    let dev = TestDevice::seed_from_u64(8);
    let config = DendriteConfig {
        init_std: 0.5,
        ..Default::default()
    };
    let mut layer: StepGru = Dendritic::new(&dev, BuildModule::build(&dev), config).unwrap();
    layer.grow_dendrites(2).unwrap();
    common::set_outputs(&mut layer, |k| 0.25 * (k + 1) as f64);
    let cascade: Tensor<Rank1<4>, f64, TestDevice> =
        dev.tensor(<[f64; 4]>::try_from(read(&mut layer, "dendrites.1.cascade.0")).unwrap());
    let xs: Vec<Tensor<(usize, Const<3>), f64, TestDevice>> = (0..4)
        .map(|_| dev.sample_normal_like(&(2, Const)))
        .collect();

    // by hand: the neuron steps from the layer's output, each dendrite from its own output
    let zeros = || -> Hidden { dev.zeros_like(&(2, Const)) };
    let expected = |layer: &StepGru| {
        let (d0, d1) = (
            layer.dendrite_module(0).unwrap(),
            layer.dendrite_module(1).unwrap(),
        );
        let (mut h, mut s0, mut s1) = (zeros(), zeros(), zeros());
        let mut out = Vec::new();
        for x in &xs {
            let n = layer.neurons().forward((x.clone(), h.clone()));
            s0 = d0.forward((x.clone(), s0));
            s1 = d1.forward((x.clone(), s1));
            let a0 = s0.clone().sigmoid();
            // dendrite 1 cascades from dendrite 0 with the weights the layer drew
            let c = cascade.clone().broadcast_like(&(2, Const::<4>));
            let a1 = (s1.clone() + c * a0.clone()).sigmoid();
            h = n + a0 * 0.25 + a1 * 0.5;
            out.push(h.as_vec());
        }
        out
    };
    let run = |layer: &StepGru| {
        let mut h = zeros();
        let mut out = Vec::new();
        for x in &xs {
            h = layer.forward((x.clone(), h));
            out.push(h.as_vec());
        }
        out
    };
    let want = expected(&layer);
    let got = run(&layer);
    for (a, b) in want.iter().flatten().zip(got.iter().flatten()) {
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    }
    // without a reset the dendrites continue from their last state: different outputs
    assert_ne!(run(&layer), got);
    // after a reset they start from zeros again: the same outputs
    layer.reset_state();
    assert_eq!(run(&layer), got);
}

/// The values of the tensor at `path`.
fn read(layer: &mut StepGru, path: &str) -> Vec<f64> {
    struct Find<'a>(&'a str, Option<Vec<f64>>);
    impl ParamVisitor<f64, TestDevice> for Find<'_> {
        fn visit<S: Shape>(
            &mut self,
            p: Param<'_, f64, TestDevice>,
            t: &mut Tensor<S, f64, TestDevice>,
        ) -> perforated::Result<()> {
            if p.path == self.0 {
                self.1 = Some(t.as_vec());
            }
            Ok(())
        }
    }
    let mut find = Find(path, None);
    layer.visit_params("", &mut find).unwrap();
    find.1.unwrap()
}

type Seq = Tensor<(usize, usize, Const<3>), f64, TestDevice>;
type SeqGru =
    Dendritic<Gru<3, 4, f64, TestDevice>, (Batch, Time, Neurons), GruState<4, f64, TestDevice>>;
type StepGru = Dendritic<Cell, (Batch, Neurons), GruCellState<4, f64, TestDevice>>;

/// A GRU over sequences whose candidates warm up for 2 batches.
fn seq_gru(dev: &TestDevice) -> SeqGru {
    let config = DendriteConfig {
        correlation: CorrelationConfig {
            warmup_batches: 2,
            ..Default::default()
        },
        ..Default::default()
    };
    Dendritic::new(dev, BuildModule::build(dev), config).unwrap()
}

#[test]
fn gru_over_sequences_keeps_the_invariants() {
    let dev = TestDevice::seed_from_u64(9);
    let x: Seq = dev.sample_normal_like(&(2, 5, Const));
    let target: Tensor<(usize, usize, Const<4>), f64, TestDevice> =
        dev.sample_normal_like(&(2, 5, Const));
    let mut layer = seq_gru(&dev);
    let h0: Hidden = dev.zeros_like(&(2, Const));
    let mut opt = DendriticOptimizer::adam(AdamConfig {
        lr: 0.02,
        ..Default::default()
    });
    let mut step = |layer: &mut SeqGru| {
        layer.reset_state();
        let grads = layer.alloc_grads().unwrap();
        let (out, _) = layer.forward_mut((x.trace(grads), h0.clone()));
        let loss = mse_loss(out, target.clone());
        opt.step(layer, loss.backward()).unwrap();
    };
    let infer = |layer: &SeqGru| {
        layer.reset_state();
        layer.forward((x.clone(), h0.clone())).0.as_vec()
    };
    for _ in 0..4 {
        step(&mut layer);
    }
    layer.start_dendrite_phase().unwrap();
    let before = infer(&layer);
    for _ in 0..5 {
        step(&mut layer);
    }
    assert_eq!(infer(&layer), before, "the dendrite phase moved the output");
    assert!(layer.correlation().unwrap().batches == 5);
    layer.accept_candidate().unwrap();
    assert_eq!(infer(&layer), before, "acceptance changed the output");
    for _ in 0..4 {
        step(&mut layer);
    }
    assert_ne!(infer(&layer), before, "the neurons train again");
}

#[test]
fn lstm_final_hidden_state_processor_adds_to_the_last_step() {
    let dev = TestDevice::seed_from_u64(10);
    let x: Seq = dev.sample_normal_like(&(2, 5, Const));
    let zeros = || -> Hidden { dev.zeros_like(&(2, Const)) };
    let mut layer: Dendritic<
        Lstm<3, 4, f64, TestDevice>,
        (Batch, Neurons),
        LstmLast<4, f64, TestDevice>,
    > = Dendritic::new(&dev, BuildModule::build(&dev), DendriteConfig::default()).unwrap();
    let plain = layer.neurons().forward((x.clone(), (zeros(), zeros())));
    let (last, (h, _)) = layer.forward((x.clone(), (zeros(), zeros())));
    assert_eq!(last.shape(), &(2, Const::<4>));
    assert_eq!(
        last.as_vec(),
        h.as_vec(),
        "no dendrites: the last step is the final hidden state"
    );
    assert_eq!(&plain.0.as_vec()[4 * 4..5 * 4], &last.as_vec()[..4]);
    layer.grow_dendrites(1).unwrap();
    common::set_outputs(&mut layer, |k| 0.25 * (k + 1) as f64);
    layer.reset_state();
    let (with, _) = layer.forward((x.clone(), (zeros(), zeros())));
    assert_ne!(
        with.as_vec(),
        last.as_vec(),
        "the dendrite adds to the final hidden state"
    );
    // and it trains through the final state
    let grads = layer.alloc_grads().unwrap();
    let (out, _) = layer.forward_mut((x.trace(grads), (zeros(), zeros())));
    let g = out.sum::<Rank0, _>().backward();
    assert!(g
        .get(&layer.neurons().cell.x_i.weight)
        .as_vec()
        .iter()
        .any(|v| *v != 0.0));
}

#[test]
fn first_output_processor_adds_to_the_first_element_and_passes_the_rest() {
    let dev = TestDevice::seed_from_u64(11);
    let x: Seq = dev.sample_normal_like(&(2, 3, Const));
    let mut layer: Dendritic<
        Gru<3, 4, f64, TestDevice>,
        (Batch, Time, Neurons),
        perforated::processor::FirstOutput,
    > = Dendritic::new(&dev, BuildModule::build(&dev), DendriteConfig::default()).unwrap();
    let (plain_seq, plain_last) = layer.neurons().forward(x.clone());
    layer.grow_dendrites(1).unwrap();
    common::set_outputs(&mut layer, |_| 1.0);
    let (seq, last) = layer.forward(x.clone());
    assert_eq!(
        last.as_vec(),
        plain_last.as_vec(),
        "the rest passes through"
    );
    // every output element moved by the dendrite's activation, in (0, 1) for a sigmoid
    for (a, b) in seq.as_vec().iter().zip(plain_seq.as_vec()) {
        assert!(a - b > 0.0 && a - b < 1.0);
    }
}

#[test]
fn zero_length_sequences_give_empty_outputs_and_keep_the_state() {
    let dev = TestDevice::seed_from_u64(12);
    let empty: Seq = dev.zeros_like(&(2, 0, Const));
    let h0: Hidden = dev.sample_normal_like(&(2, Const));
    let mut layer = seq_gru(&dev);
    layer.grow_dendrites(1).unwrap();
    let (out, h) = layer.forward((empty.clone(), h0.clone()));
    assert_eq!(out.shape(), &(2, 0, Const::<4>));
    assert_eq!(
        h.as_vec(),
        h0.as_vec(),
        "no step: the state is the initial one"
    );
    let err = last_step(out).unwrap_err();
    assert!(
        matches!(err, perforated::Error::EmptySequence { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("final state"), "{err}");

    // a training step and a dendrite-phase step on an empty batch
    let mut opt = DendriticOptimizer::adam(AdamConfig::default());
    let mut step = |layer: &mut SeqGru, x: Seq| {
        layer.reset_state();
        let grads = layer.alloc_grads().unwrap();
        let (out, _) = layer.forward_mut((x.trace(grads), h0.clone()));
        // dfdx cannot sum an empty tensor: the loss is a scalar on the output's tape
        let (out, tape) = out.split_tape();
        let loss = match out.shape().1 {
            0 => dev.zeros::<Rank0>().put_tape(tape),
            _ => out.put_tape(tape).square().sum::<Rank0, _>(),
        };
        opt.step(layer, loss.backward())
    };
    step(&mut layer, empty.clone()).unwrap();
    layer.start_dendrite_phase().unwrap();
    step(&mut layer, empty.clone()).unwrap();
    let x: Seq = dev.sample_normal_like(&(2, 5, Const));
    for _ in 0..3 {
        step(&mut layer, x.clone()).unwrap();
    }
    let report = layer.correlation().unwrap();
    assert_eq!(
        report.batches, 3,
        "an empty batch is not a batch of statistics"
    );
    assert!(
        report.per_neuron.iter().all(|s| s.is_finite()),
        "{report:?}"
    );

    // the LSTM alike, and its final-state processor on an empty sequence
    let lstm: Dendritic<
        Lstm<3, 4, f64, TestDevice>,
        (Batch, Neurons),
        LstmLast<4, f64, TestDevice>,
    > = Dendritic::new(&dev, BuildModule::build(&dev), DendriteConfig::default()).unwrap();
    let c0: Hidden = dev.sample_normal_like(&(2, Const));
    let (last, (h, c)) = lstm.forward((empty.clone(), (h0.clone(), c0.clone())));
    assert_eq!(
        last.as_vec(),
        h0.as_vec(),
        "no step: the final state is the initial one"
    );
    assert_eq!((h.as_vec(), c.as_vec()), (h0.as_vec(), c0.as_vec()));
}
