//! The tracker's decisions as a table: score sequences with the calls expected, written out by
//! hand from the documented rules (`perforated::tracker`), run in both learning modes. Only
//! neuron-phase calls are traced, so the same table holds for correlation learning (each
//! new set goes through a dendrite phase, fed the last score, which no decision reads) and
//! for gradient learning (no dendrite phase).
//!
//! A call's letter: `i` a new best, `.` nothing, `S` a new set of dendrites, `R` a retry (the
//! last set did not help: rolled back, a fresh set), `X` complete.

mod common;

use common::TestDevice;
use perforated::optim::Rule;
use perforated::prelude::*;
use perforated::tracker::{Schedule, Step, SwitchMode, Tracker, TrackerConfig};

type Layer = Dendritic<perforated::dfdx::nn::modules::Linear<2, 1, f32, TestDevice>>;

/// Runs `scores` (one per neuron-phase call) through a tracker on a real layer that trains
/// two steps an epoch; returns the trace and the dendrites at the end.
fn run(
    name: &str,
    config: TrackerConfig,
    scores: &[f64],
    learning: DendriteLearning,
) -> (String, usize) {
    let dev = TestDevice::seed_from_u64(3);
    let x: Tensor<Rank2<16, 2>, f32, TestDevice> = dev.sample_normal();
    let y: Tensor<Rank2<16, 1>, f32, TestDevice> = dev.sample_normal();
    let d = std::env::temp_dir().join(format!(
        "perforated-decisions-{}-{name}-{learning:?}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    let mut config = config.graph_every(0);
    config.dir = d;
    let mut tracker = Tracker::new(config).unwrap();
    let mut opt = tracker.optimizer(Rule::Adam(AdamConfig::default()));
    let layer_config = DendriteConfig {
        learning,
        correlation: CorrelationConfig {
            warmup_batches: 1,
            ..Default::default()
        },
        ..Default::default()
    };
    let mut layer: Layer = Dendritic::new(&dev, BuildModule::build(&dev), layer_config).unwrap();
    let (mut trace, mut next, mut last) = (String::new(), 0, scores[0]);
    for _ in 0..1000 {
        let neuron = layer.phase() == Phase::Neuron;
        if neuron {
            if next == scores.len() {
                break;
            }
            last = scores[next];
            next += 1;
        }
        for _ in 0..2 {
            let grads = layer.alloc_grads().unwrap();
            let loss = mse_loss(layer.forward_mut(x.trace(grads)), y.clone());
            opt.step(&mut layer, loss.backward()).unwrap();
        }
        let step = tracker
            .add_validation_score(last, &mut layer, &mut opt)
            .unwrap();
        if neuron {
            trace.push(match step {
                Step::Continue { improved: true } => 'i',
                Step::Continue { improved: false } => '.',
                Step::Complete => 'X',
                Step::Restructured => {
                    let reason = &tracker.state().switches.last().unwrap().reason;
                    if reason.starts_with("retry") {
                        'R'
                    } else {
                        'S'
                    }
                }
            });
        }
        if step == Step::Complete {
            break;
        }
    }
    if learning == DendriteLearning::Gradient {
        assert!(
            tracker
                .state()
                .history
                .iter()
                .all(|r| r.phase == Phase::Neuron),
            "{name}: gradient learning has no dendrite phase"
        );
        assert!(
            tracker
                .state()
                .switches
                .iter()
                .all(|s| s.to == Phase::Neuron),
            "{name}: every switch of gradient learning goes to a neuron phase"
        );
    }
    (trace, layer.dendrite_count())
}

fn neg(v: &[f64]) -> Vec<f64> {
    v.iter().map(|s| -s).collect()
}

/// A case: its name, the config, the scores of the neuron-phase calls, the trace expected and
/// the dendrites at the end.
type Case = (&'static str, TrackerConfig, Vec<f64>, &'static str, usize);

// one table, long by nature: a case per rule and option
#[allow(clippy::too_many_lines)]
fn cases() -> Vec<Case> {
    let base = || {
        TrackerConfig::new("")
            .switch(SwitchMode::Plateau { patience: 2 })
            .dendrite_patience(1)
            .relative_threshold(Schedule::constant(0.0))
    };
    let never = [0.5; 9];
    vec![
        (
            "plateau-max: a set that helps, then the most dendrites",
            base().maximize().max_dendrites(1),
            vec![0.5, 0.6, 0.6, 0.6, 0.7, 0.7, 0.7],
            "ii.Si.X",
            1,
        ),
        (
            "plateau-min: the same on negated scores",
            base().minimize().max_dendrites(1),
            neg(&[0.5, 0.6, 0.6, 0.6, 0.7, 0.7, 0.7]),
            "ii.Si.X",
            1,
        ),
        (
            "sets that never help: one retry (the default), then complete at the best",
            base().maximize().max_dendrites(3),
            never.to_vec(),
            "i.S..R..X",
            0,
        ),
        (
            "no retry at all",
            base().maximize().max_dendrites(3).max_retries(0),
            never.to_vec(),
            "i.S..X",
            0,
        ),
        (
            "retry then success",
            base().maximize().max_dendrites(1),
            vec![0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.6, 0.6, 0.6],
            "i.S..Ri.X",
            1,
        ),
        (
            "best at the first call, never beaten",
            base().maximize().max_dendrites(2),
            vec![0.9, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5],
            "i.S..R..X",
            0,
        ),
        (
            "relative threshold schedule: 50% without dendrites, 0 with one",
            base()
                .maximize()
                .relative_threshold(Schedule(vec![0.5, 0.0]))
                .max_dendrites(1),
            vec![0.5, 0.6, 0.7, 0.71, 0.8, 0.8, 0.8],
            "i.Sii.X",
            1,
        ),
        (
            "absolute threshold, minimise",
            base()
                .minimize()
                .absolute_threshold(Schedule::constant(0.1))
                .max_dendrites(1),
            vec![1.0, 0.95, 0.85, 0.84, 0.84, 0.6, 0.6, 0.6],
            "i.i.Si.X",
            1,
        ),
        (
            "negative scores, maximise, relative threshold on |best|",
            base()
                .maximize()
                .relative_threshold(Schedule::constant(0.1))
                .max_dendrites(1),
            vec![-1.0, -0.95, -0.85, -0.85, -0.85, -0.5, -0.5, -0.5],
            "i.i.Si.X",
            1,
        ),
        (
            "a score of exactly 0 is a score like any other",
            base().minimize().max_dendrites(1),
            vec![0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            "ii.S..R..X",
            0,
        ),
        (
            "a new set is judged once it stops improving on its own best",
            base().maximize().max_dendrites(2),
            vec![
                0.8, 0.8, 0.8, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.85, 0.85, 0.85, 0.9, 0.9, 0.9,
            ],
            "i.S......i.Si.X",
            2,
        ),
        (
            "keep all dendrites: no retry, and the run ends with every set",
            base().maximize().max_dendrites(2).keep_all_dendrites(),
            never.to_vec(),
            "i.S..S..X",
            2,
        ),
        (
            "fixed switching: 2 epochs first, then 3",
            base()
                .maximize()
                .switch(SwitchMode::EveryN { first: 2, then: 3 })
                .max_dendrites(2),
            vec![0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8],
            "iSiiSiiX",
            2,
        ),
        (
            "switch every epoch",
            base()
                .maximize()
                .switch(SwitchMode::EveryEpoch)
                .max_dendrites(2),
            vec![0.1, 0.2, 0.3],
            "SSX",
            2,
        ),
        (
            "never switch",
            base().maximize().switch(SwitchMode::Never),
            vec![0.5, 0.5, 0.6, 0.6, 0.6],
            "i.i..",
            0,
        ),
        (
            "capacity test: a set every epoch up to 2, every set kept",
            base().maximize().capacity_test(2),
            vec![0.5, 0.5, 0.5],
            "SSX",
            2,
        ),
        (
            "running window of 2 (reset at each switch)",
            base().maximize().running_window(2).max_dendrites(1),
            vec![0.5, 0.7, 0.7, 0.7, 0.7, 0.8, 0.8, 0.8],
            "iii.Si.X",
            1,
        ),
    ]
}

#[test]
fn decisions_follow_the_documented_rules_in_both_learning_modes() {
    let cases = cases();
    for learning in [DendriteLearning::Correlation, DendriteLearning::Gradient] {
        for (i, (name, config, scores, expected, dendrites)) in cases.iter().enumerate() {
            let got = run(&format!("case{i}"), config.clone(), scores, learning);
            assert_eq!(
                got,
                (expected.to_string(), *dendrites),
                "{learning:?}: {name}"
            );
        }
    }
}
