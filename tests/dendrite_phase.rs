//! How a dendrite phase ends: by patience, by a cap, waiting for warm-up and for a snapshot;
//! and the rate its candidates train at.

mod common;

use common::run::{base, model_with, Run};
use perforated::prelude::*;
use perforated::tracker::{Step, TrackerConfig};

/// A candidate that never takes a snapshot (no correlation can beat the margin, as with a
/// layer whose neuron error stays zero) cannot hold the run in its dendrite phase: past its
/// warm-up the phase waits `dendrite_patience` epochs past due, warning, then the candidates
/// are dropped and the run completes with the best model, the reason naming the layer.
#[test]
fn a_dendrite_phase_without_a_snapshot_ends_the_run_after_waiting() {
    let mut run = Run::new(base("no-snapshot").maximize().dendrite_patience(2));
    let never = CorrelationConfig {
        warmup_batches: 1,
        absolute_margin: 2.0,
        ..Default::default()
    };
    run.model = model_with(1, never);
    run.feed(&[0.5, 0.6, 0.6, 0.6, 0.6]);
    // two epochs before the phase is due, two waiting, then the end
    assert_eq!(run.trace, "iicRddddX");
    assert!(run.tracker.state().complete);
    assert_eq!(run.model.phase(), Phase::Neuron);
    assert_eq!(run.model.dendrite_count(), 0);
    let reason = &run.tracker.state().switches.last().unwrap().reason;
    assert!(
        reason.starts_with("no candidate snapshot in ``"),
        "{reason}"
    );
    assert_eq!(
        run.model.forward(run.x.clone()).as_vec(),
        run.outputs[1],
        "the best model (epoch 1) is back"
    );
}

/// A candidate still in its warm-up when its phase is due holds the phase (it is learning);
/// the wait for a snapshot counts only from the end of the warm-up.
#[test]
fn a_dendrite_phase_waits_for_the_warm_up() {
    let mut run = Run::new(base("warm-up").maximize().dendrite_patience(2));
    let slow = CorrelationConfig {
        // two batches an epoch: the warm-up ends after the tenth dendrite epoch
        warmup_batches: 20,
        ..Default::default()
    };
    run.model = model_with(1, slow);
    run.feed(&[0.5, 0.6, 0.6, 0.6]);
    let dendrite_epochs = run.trace.chars().filter(|c| *c == 'd').count();
    assert!(dendrite_epochs >= 10, "{}", run.trace);
    assert!(run.trace.contains("iicRdddddddddd"), "{}", run.trace);
    assert!(
        !run.tracker
            .state()
            .switches
            .iter()
            .any(|s| s.reason.starts_with("no candidate")),
        "{:?}",
        run.tracker.state().switches
    );
}

/// `max_dendrite_epochs` ends every dendrite phase after that many epochs, however much its
/// candidates still improve, accepts their snapshots and says why in the switch.
#[test]
fn a_capped_dendrite_phase_ends_after_its_cap_and_accepts() {
    // patience far above the cap: only the cap can end the phase
    let config = base("cap")
        .maximize()
        .dendrite_patience(50)
        .max_dendrites(2);
    let mut run = Run::new(config.max_dendrite_epochs(3));
    run.feed(&[0.5, 0.6, 0.6, 0.6, 0.7, 0.8, 0.8, 0.8]);
    assert!(run.trace.starts_with("iicRddRiicRddR"), "{}", run.trace);
    let switches = &run.tracker.state().switches;
    let to_neuron: Vec<_> = switches.iter().filter(|s| s.to == Phase::Neuron).collect();
    assert_eq!(to_neuron.len(), 2, "{switches:?}");
    for s in to_neuron {
        assert_eq!(s.reason, "the dendrite phase reached its cap of 3 epochs");
    }
    assert_eq!(run.model.dendrite_count(), 2);
    // without the cap the same run is still in its first dendrite phase
    let mut uncapped = Run::new(base("uncapped").maximize().dendrite_patience(50));
    uncapped.feed(&[0.5, 0.6, 0.6]);
    assert_eq!(uncapped.epoch(0.6), Step::Restructured);
    for _ in 0..5 {
        assert_eq!(uncapped.epoch(0.6), Step::Continue { improved: false });
    }
    assert_eq!(uncapped.model.phase(), Phase::Dendrite);
}

/// Candidates train at the initial rate times `candidate_lr_factor`; the next neuron phase
/// restarts by its own policy, whatever the factor.
#[test]
fn candidates_train_at_the_factor_times_the_initial_rate() {
    for factor in [1.0, 3.0] {
        let config = base("factor").maximize().candidate_lr_factor(factor);
        let mut run = Run::new(config);
        run.feed(&[0.5, 0.6, 0.6]);
        assert_eq!(run.epoch(0.6), Step::Restructured);
        assert_eq!(run.model.phase(), Phase::Dendrite, "{}", run.trace);
        assert!(
            (run.opt.lr() - 0.01 * factor).abs() < 1e-12,
            "{}",
            run.opt.lr()
        );
        while run.model.phase() == Phase::Dendrite {
            run.epoch(0.6);
        }
        assert!(
            (run.opt.lr() - 0.01).abs() < 1e-12,
            "{factor}: {}",
            run.opt.lr()
        );
    }
}

#[test]
fn dendrite_phase_settings_out_of_range_are_refused() {
    for config in [
        TrackerConfig::new("runs/x").max_dendrite_epochs(0),
        TrackerConfig::new("runs/x").candidate_lr_factor(0.0),
        TrackerConfig::new("runs/x").candidate_lr_factor(f64::NAN),
        TrackerConfig::new("runs/x").candidate_lr_factor(-1.0),
    ] {
        let e = config.validate().unwrap_err();
        assert!(matches!(e, perforated::Error::Config(_)), "{e}");
    }
    TrackerConfig::new("runs/x")
        .max_dendrite_epochs(1)
        .candidate_lr_factor(3.0)
        .validate()
        .unwrap();
}
