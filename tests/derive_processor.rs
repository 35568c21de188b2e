//! `#[derive(Processor)]` expresses the built-in processors: same weights, same outputs.

mod common;

use common::TestDevice;

use std::marker::PhantomData;

use perforated::layers::GruCellState;
use perforated::layers::{Gru, GruCell};
use perforated::prelude::*;

/// Like `GruState`: add to the output sequence; the last state (output 1) is what each
/// dendrite keeps and gets back as its initial state (input 1).
#[derive(Processor)]
#[processor(outputs = 2, main = 0, state = 1, state_input = 1)]
struct SequenceState<E, D>(PhantomData<(E, D)>);

/// Like `GruCellState`: one output, which is also the state.
#[derive(Processor)]
#[processor(state = 0, state_input = 1)]
struct StepState<E, D>(PhantomData<(E, D)>);

type BuiltinSeq =
    Dendritic<Gru<3, 4, f64, TestDevice>, (Batch, Time, Neurons), GruState<4, f64, TestDevice>>;
type DerivedSeq =
    Dendritic<Gru<3, 4, f64, TestDevice>, (Batch, Time, Neurons), SequenceState<f64, TestDevice>>;
type BuiltinStep =
    Dendritic<GruCell<3, 4, f64, TestDevice>, (Batch, Neurons), GruCellState<4, f64, TestDevice>>;
type DerivedStep =
    Dendritic<GruCell<3, 4, f64, TestDevice>, (Batch, Neurons), StepState<f64, TestDevice>>;
type Hidden = Tensor<(usize, Const<4>), f64, TestDevice>;

fn same_weights<
    A: DendriticModel<Dtype = f64, Device = TestDevice>,
    B: DendriticModel<Dtype = f64, Device = TestDevice>,
>(
    a: &mut A,
    b: &mut B,
    name: &str,
) {
    let path = std::env::temp_dir().join(format!(
        "perforated-derive-{}-{name}.safetensors",
        std::process::id()
    ));
    perforated::checkpoint::save(a, &path).unwrap();
    perforated::checkpoint::load(b, &path).unwrap();
}

#[test]
fn derived_sequence_processor_matches_gru_state() {
    let dev = TestDevice::seed_from_u64(4);
    let config = DendriteConfig {
        init_std: 0.5,
        ..Default::default()
    };
    let mut builtin: BuiltinSeq =
        Dendritic::new(&dev, BuildModule::build(&dev), config.clone()).unwrap();
    let mut derived: DerivedSeq = Dendritic::new(&dev, BuildModule::build(&dev), config).unwrap();
    builtin.grow_dendrites(2).unwrap();
    same_weights(&mut builtin, &mut derived, "seq");
    let h0: Tensor<(usize, Const<4>), f64, TestDevice> = dev.zeros_like(&(2, Const));
    for _ in 0..3 {
        // the same chunk three times: dendrite states carry over between calls
        let x: Tensor<(usize, usize, Const<3>), f64, TestDevice> =
            dev.sample_normal_like(&(2, 5, Const));
        let (a, ha) = builtin.forward((x.clone(), h0.clone()));
        let (b, hb) = derived.forward((x, h0.clone()));
        assert_eq!(a.as_vec(), b.as_vec());
        assert_eq!(ha.as_vec(), hb.as_vec());
    }
}

#[test]
fn derived_step_processor_matches_gru_cell_state() {
    let dev = TestDevice::seed_from_u64(5);
    let config = DendriteConfig {
        init_std: 0.5,
        ..Default::default()
    };
    let mut builtin: BuiltinStep =
        Dendritic::new(&dev, BuildModule::build(&dev), config.clone()).unwrap();
    let mut derived: DerivedStep = Dendritic::new(&dev, BuildModule::build(&dev), config).unwrap();
    builtin.grow_dendrites(1).unwrap();
    same_weights(&mut builtin, &mut derived, "step");
    let (mut ha, mut hb): (Hidden, Hidden) =
        (dev.zeros_like(&(2, Const)), dev.zeros_like(&(2, Const)));
    for _ in 0..4 {
        let x: Tensor<(usize, Const<3>), f64, TestDevice> = dev.sample_normal_like(&(2, Const));
        ha = builtin.forward((x.clone(), ha));
        hb = derived.forward((x, hb));
        assert_eq!(ha.as_vec(), hb.as_vec());
    }
}
