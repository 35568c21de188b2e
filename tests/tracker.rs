//! The tracker's decisions, rollbacks, resume and files, on a small real model.

mod common;

use common::run::{base, model_seeded, Run};
use common::TestDevice;

use perforated::prelude::*;
use perforated::tracker::{LrRestart, Schedule, Step, SwitchMode, Tracker, TrackerConfig};

/// A named run: its config, the scores fed, the decisions expected (see `Run::phases`) and
/// the dendrites the model ends with.
type Case = (&'static str, TrackerConfig, Vec<f64>, &'static str, usize);

fn check_decisions(cases: Vec<Case>) {
    for (name, config, scores, expected, dendrites) in cases {
        let mut run = Run::new(config);
        run.feed(&scores);
        assert_eq!(run.phases(), expected, "{name}: full trace {}", run.trace);
        assert_eq!(run.model.dendrite_count(), dendrites, "{name}");
    }
}

fn up(v: &[f64]) -> Vec<f64> {
    v.to_vec()
}

#[test]
fn plateau_decisions_follow_direction_thresholds_retries_and_limits() {
    let down = |v: &[f64]| v.iter().map(|s| -s).collect::<Vec<_>>();
    let retry_scores = [
        0.5, 0.6, 0.6, 0.6, 0.7, 0.7, 0.7, 0.65, 0.65, 0.65, 0.65, 0.65, 0.65, 0.65, 0.65, 0.65,
    ];
    check_decisions(vec![
        (
            "plateau, maximise: improve, plateau, a set that helps, then two that do not (one retry)",
            base("max").maximize().max_dendrites(3),
            up(&retry_scores),
            "iicRdRicRdRccRdRccX",
            1,
        ),
        (
            "plateau, minimise: the same decisions on negated scores",
            base("min").minimize().max_dendrites(3),
            down(&retry_scores),
            "iicRdRicRdRccRdRccX",
            1,
        ),
        (
            "max dendrites ends the run once reached",
            base("maxd").maximize().max_dendrites(1),
            up(&[0.5, 0.5, 0.5, 0.7, 0.7, 0.7]),
            "icRdRicX",
            1,
        ),
        (
            "threshold schedule: 50% needed without dendrites, 0 with one",
            base("thr")
                .maximize()
                .relative_threshold(Schedule(vec![0.5, 0.0]))
                .max_dendrites(1),
            up(&[0.5, 0.6, 0.7, 0.71, 0.72, 0.72, 0.72]),
            "icRdRiicX",
            1,
        ),
        (
            "grace period delays the plateau count",
            base("grace").maximize().grace_epochs(2).max_dendrites(1),
            up(&[0.5, 0.5, 0.5, 0.5, 0.5, 0.6, 0.6, 0.6, 0.6, 0.6]),
            "icccRdRicccX",
            1,
        ),
        (
            "running window smooths the score",
            base("window")
                .maximize()
                .running_window(2)
                .switch(SwitchMode::Plateau { patience: 10 }),
            up(&[0.5, 0.7, 0.6, 0.62]),
            "iiic",
            0,
        ),
        (
            "keep all dendrites: no retries, the last set stays",
            base("keepall")
                .maximize()
                .keep_all_dendrites()
                .max_dendrites(2),
            up(&[0.5, 0.6, 0.6, 0.6, 0.55, 0.55, 0.55, 0.55, 0.55, 0.55]),
            "iicRdRccRdRccX",
            2,
        ),
    ]);
}

#[test]
fn fixed_switch_modes_and_the_capacity_test() {
    check_decisions(vec![
        (
            "every n epochs, first phase longer",
            base("everyn")
                .maximize()
                .switch(SwitchMode::EveryN { first: 3, then: 2 })
                .max_dendrites(2),
            up(&[0.5, 0.5, 0.5, 0.6, 0.7, 0.8, 0.9]),
            "icRdRiRdRiX",
            2,
        ),
        (
            "every epoch",
            base("every")
                .maximize()
                .switch(SwitchMode::EveryEpoch)
                .max_dendrites(2),
            up(&[0.5, 0.6, 0.7]),
            "RRRRX",
            2,
        ),
        (
            "never switches",
            base("never").maximize().switch(SwitchMode::Never),
            up(&[0.5, 0.6, 0.6, 0.6, 0.6, 0.6]),
            "iicccc",
            0,
        ),
        (
            "capacity test: a switch every epoch, then complete",
            base("capacity").maximize().capacity_test(2),
            up(&[0.5, 0.5, 0.5]),
            "RRRRX",
            2,
        ),
    ]);
}

#[test]
fn capacity_test_reports_growing_parameter_counts_and_memory() {
    let mut run = Run::new(base("capacity-params").maximize().capacity_test(2));
    run.feed(&[0.5, 0.5, 0.5]);
    let params: Vec<usize> = run
        .tracker
        .state()
        .history
        .iter()
        .map(|r| r.params)
        .collect();
    assert_eq!(params.first(), Some(&3));
    assert!(
        params.windows(2).all(|w| w[0] <= w[1]) && params.last() > params.first(),
        "{params:?}"
    );
    let best =
        std::fs::read_to_string(run.tracker.config().dir.join("best_test_scores.csv")).unwrap();
    assert_eq!(
        best.lines().count(),
        4,
        "one row per dendrite count:\n{best}"
    );
}

#[test]
fn completion_rolls_back_to_the_best_weights_and_learning_rate_exactly() {
    let mut run = Run::new(base("rollback").maximize().max_dendrites(3));
    run.feed(&[
        0.5, 0.6, 0.6, 0.6, 0.7, 0.7, 0.7, 0.65, 0.65, 0.65, 0.65, 0.65, 0.65, 0.65, 0.65, 0.65,
    ]);
    let state = run.tracker.state();
    assert!(state.complete);
    let best = state.best.clone().unwrap();
    assert_eq!(best.dendrites, 1);
    assert_eq!(
        run.model.forward(run.x.clone()).as_vec(),
        run.outputs[best.epoch],
        "weights of the best epoch"
    );
    // the learning-rate schedule is the one saved with the best model
    let saved = state.history[best.epoch].lr;
    assert_eq!(run.opt.lr(), saved);
}

#[test]
fn nan_scores_are_refused_and_not_recorded() {
    let mut run = Run::new(base("nan").maximize());
    run.epoch(0.5);
    run.train();
    for bad in [f64::NAN, f64::INFINITY] {
        let e = run
            .tracker
            .add_validation_score(bad, &mut run.model, &mut run.opt)
            .unwrap_err();
        assert!(e.to_string().contains("not finite"), "{e}");
    }
    assert_eq!(run.tracker.state().history.len(), 1);
    run.model.start_dendrite_phase().unwrap();
    let e = run
        .tracker
        .add_validation_score(0.5, &mut run.model, &mut run.opt)
        .unwrap_err();
    assert!(
        e.to_string().contains("dendrite phase"),
        "phase changed behind the tracker: {e}"
    );
}

#[test]
fn lr_restarts_after_dendrites_by_policy() {
    for (policy, expected) in [
        (LrRestart::Initial, 0.01),
        (LrRestart::Decayed { decays: 2 }, 0.0025),
    ] {
        let mut run = Run::new(base("lr").maximize().lr_restart(policy.clone()));
        run.feed(&[0.5, 0.5, 0.5]);
        while run.model.phase() == Phase::Dendrite {
            run.epoch(0.5);
        }
        assert!(
            (run.opt.lr() - expected).abs() < 1e-12,
            "{policy:?}: {}",
            run.opt.lr()
        );
    }
}

/// A run with learning-rate trials of 2 epochs and one decay, past its first restructure and
/// dendrite phase, at the start of the neuron phase whose rates it trials.
fn trial_run_in_its_first_neuron_phase(name: &str) -> Run {
    let config = base(name).maximize().lr_restart(LrRestart::Trial {
        epochs: 2,
        decays: 1,
    });
    let mut run = Run::new(config);
    run.feed(&[0.5, 0.5, 0.5]);
    while run.model.phase() == Phase::Dendrite {
        run.epoch(0.5);
    }
    run
}

#[test]
fn lr_trial_keeps_the_better_rate() {
    let mut run = trial_run_in_its_first_neuron_phase("trial");
    // first trial (initial rate) scores better than the second (half the rate)
    assert_eq!(run.opt.lr(), 0.01);
    assert_eq!(run.epoch(0.9), Step::Continue { improved: true });
    let end_of_first = run.epoch(0.9);
    assert_eq!(end_of_first, Step::Restructured, "back to the trial start");
    let first_output = run.outputs.last().unwrap().clone();
    assert_eq!(run.opt.lr(), 0.005);
    run.epoch(0.8);
    assert_eq!(
        run.epoch(0.8),
        Step::Restructured,
        "the first rate won: its end state comes back"
    );
    assert_eq!(run.opt.lr(), 0.01);
    assert_eq!(run.model.forward(run.x.clone()).as_vec(), first_output);
}

#[test]
fn resume_makes_the_decisions_of_the_uninterrupted_run() {
    let scores = [
        0.5, 0.6, 0.6, 0.6, 0.7, 0.7, 0.7, 0.65, 0.65, 0.65, 0.65, 0.65, 0.65, 0.65, 0.65, 0.65,
    ];
    let mut whole = Run::new(base("whole").maximize().max_dendrites(3));
    whole.feed(&scores);

    // the same run, stopped after 6 epochs (inside the first dendrite phase or just after),
    // then resumed into a model built from another seed.
    for stop in [5, 6, 9] {
        let name = format!("resumed-{stop}");
        let mut first = Run::new(base(&name).maximize().max_dendrites(3));
        let mut fed = 0;
        let mut last = scores[0];
        for _ in 0..stop {
            if first.model.phase() == Phase::Neuron {
                last = scores[fed];
                fed += 1;
            }
            first.epoch(last);
        }
        let trace = first.trace.clone();
        let dir = first.tracker.config().dir.clone();
        let (x, y) = (first.x.clone(), first.y.clone());
        drop(first);
        let mut model = model_seeded(77);
        let (tracker, opt) = Tracker::resume(&dir, &mut model).unwrap();
        let mut second = Run {
            tracker,
            model,
            opt,
            x,
            y,
            trace,
            outputs: Vec::new(),
        };
        // finish the neuron scores from where the first part stopped
        second.feed_from(last, &scores[fed..]);
        assert_eq!(second.trace, whole.trace, "stopped after {stop} epochs");
        assert_eq!(
            second.model.forward(second.x.clone()).as_vec(),
            whole.model.forward(whole.x.clone()).as_vec(),
            "stopped after {stop} epochs"
        );
    }
}

#[test]
fn damaged_or_foreign_checkpoints_do_not_resume() {
    let mut run = Run::new(base("damaged").maximize());
    for _ in 0..3 {
        run.epoch(0.5);
    }
    let dir = run.tracker.config().dir.clone();
    let latest = dir.join("latest.safetensors");
    let bytes = std::fs::read(&latest).unwrap();
    std::fs::write(&latest, &bytes[..bytes.len() / 3]).unwrap();
    let e = Tracker::resume(&dir, &mut model_seeded(2)).unwrap_err();
    assert!(e.to_string().contains("corrupt"), "{e}");
    // a plain model checkpoint has no tracker state
    perforated::checkpoint::save(&mut model_seeded(2), &latest).unwrap();
    let e = Tracker::resume(&dir, &mut model_seeded(2)).unwrap_err();
    assert!(e.to_string().contains("tracker_config"), "{e}");
    // another model type
    std::fs::write(&latest, &bytes).unwrap();
    let mut other: Dendritic<perforated::dfdx::nn::modules::Linear<3, 1, f32, TestDevice>> = {
        let dev = TestDevice::default();
        Dendritic::new(&dev, BuildModule::build(&dev), DendriteConfig::default()).unwrap()
    };
    let e = Tracker::resume(&dir, &mut other).unwrap_err();
    assert!(e.to_string().contains("neurons.weight"), "{e}");
}

#[test]
fn files_for_people_are_written() {
    let mut run = Run::new(base("files").maximize().graph_every(1).max_dendrites(1));
    run.tracker.add_test_score(0.4).unwrap();
    run.tracker.add_train_loss(1.5).unwrap();
    run.tracker.add_extra_score("f1", 0.3).unwrap();
    run.feed(&[0.5, 0.5, 0.5, 0.6, 0.6, 0.6]);
    let dir = run.tracker.config().dir.clone();
    let header = |f: &str| {
        std::fs::read_to_string(dir.join(f))
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .to_string()
    };
    assert_eq!(
        header("scores.csv"),
        "epoch,phase,score,running,test,train_loss,lr,dendrites,params,bytes,seconds,f1"
    );
    assert_eq!(header("switches.csv"), "epoch,to,dendrites,reason");
    assert_eq!(header("params.csv"), "epoch,dendrites,params");
    assert_eq!(
        header("best_test_scores.csv"),
        "dendrites,params,best_val,test_at_best_val,epoch"
    );
    assert_eq!(header("correlations.csv"), "epoch,layer,best_correlation");
    let scores = std::fs::read_to_string(dir.join("scores.csv")).unwrap();
    assert!(
        scores
            .lines()
            .nth(1)
            .unwrap()
            .starts_with("0,neuron,0.5,0.5,0.4,1.5,0.01,0,3,"),
        "{scores}"
    );
    // every row has a value per named column (`bytes` once had no name)
    let columns = |line: &str| line.split(',').count();
    let mut lines = scores.lines();
    let named = columns(lines.next().unwrap());
    assert!(lines.all(|l| columns(l) == named), "{scores}");
    let switches = std::fs::read_to_string(dir.join("switches.csv")).unwrap();
    assert_eq!(switches.lines().count(), 3, "{switches}");
    let png = std::fs::read(dir.join("graph.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert!(png.len() > 20_000, "a real drawing: {} bytes", png.len());
    for f in ["latest", "best", "switch_001", "switch_002"] {
        assert!(dir.join(format!("{f}.safetensors")).exists(), "{f}");
    }
}

#[test]
fn inference_export_loads_into_the_same_model_type() {
    let mut run = Run::new(base("export").maximize().max_dendrites(1));
    run.feed(&[0.5, 0.5, 0.5, 0.6, 0.6]);
    assert_eq!(run.model.dendrite_count(), 1);
    let path = run.tracker.config().dir.join("model.safetensors");
    perforated::checkpoint::export_inference(&mut run.model, &path).unwrap();
    let mut fresh = model_seeded(9);
    let extras = perforated::checkpoint::load(&mut fresh, &path).unwrap();
    assert!(extras.tensors.is_empty() && !extras.metadata.contains_key("tracker_state"));
    assert_eq!(
        fresh.forward(run.x.clone()).as_vec(),
        run.model.forward(run.x.clone()).as_vec()
    );
    run.model.start_dendrite_phase().unwrap();
    assert!(perforated::checkpoint::export_inference(&mut run.model, &path).is_err());
}

#[test]
fn a_best_epoch_that_ends_a_trial_stage_is_saved_before_the_stage_switch() {
    let mut run = trial_run_in_its_first_neuron_phase("trial-best");
    run.epoch(0.9);
    // the stage's last epoch is a new best, and the stage switch then loads the trial start
    assert_eq!(run.epoch(0.95), Step::Restructured);
    let best = run.tracker.state().best.clone().unwrap();
    assert_eq!(best.score, 0.95);
    let mut saved = model_seeded(5);
    perforated::checkpoint::load(
        &mut saved,
        run.tracker.config().dir.join("best.safetensors"),
    )
    .unwrap();
    assert_eq!(
        saved.forward(run.x.clone()).as_vec(),
        run.outputs[best.epoch],
        "best holds the best epoch's weights"
    );
}
