//! The robustness suite: a hostile user's inputs, each numbered case of issue 21 as a
//! regression test, truncations and bit flips over a real checkpoint, and a kill -9 of a
//! training process that must resume bit-identical. Every outcome is a clear `Err` or correct
//! behaviour, never a panic, a hang or an abort.

mod common;
mod robust;

use std::panic::{catch_unwind, AssertUnwindSafe};

use common::{sealed, snapshot};
use perforated::checkpoint::{load, save};
use perforated::prelude::*;
use perforated::tracker::{LrRestart, Step, SwitchMode, Tracker, TrackerConfig};
use perforated::Error;
use robust::{config, csv, data, dir, epoch, model, outcome, outcome_is_complete, run_to, start};

/// A run of a few epochs ending in the dendrite phase: `latest.safetensors` then holds
/// dendrites, a candidate, optimizer moments and tracker state.
fn real_checkpoint(name: &str) -> (std::path::PathBuf, Vec<u8>) {
    let d = dir(name);
    let (mut tracker, mut m, mut opt) = start(config(&d));
    run_to(&mut tracker, &mut m, &mut opt, &data(), 9);
    assert_eq!(m.phase(), Phase::Dendrite, "the run is in a dendrite phase");
    assert_eq!(m.dendrite_count(), 2, "with a dendrite in each layer");
    let path = d.join("latest.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    (path, bytes)
}

#[test]
fn truncations_and_bit_flips_are_refused_or_harmless() {
    let (path, bytes) = real_checkpoint("flips");
    let mut saved = model();
    load(&mut saved, &path).unwrap();
    let reference = snapshot(&mut saved);
    let header = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let case = path.with_file_name("case.safetensors");
    let (mut tried, mut errors, mut panics, mut harmless) = (0, 0, 0, 0);
    let mut try_bytes = |b: &[u8], in_data: bool| {
        std::fs::write(&case, b).unwrap();
        let mut m = model();
        tried += 1;
        match catch_unwind(AssertUnwindSafe(|| load(&mut m, &case).map(|_| ()))) {
            Err(_) => panics += 1,
            Ok(Err(_)) => errors += 1,
            Ok(Ok(())) => {
                assert!(
                    !in_data,
                    "a flipped bit in the tensor data loaded without error"
                );
                assert_eq!(snapshot(&mut m), reference, "a load that succeeds is exact");
                harmless += 1;
            }
        }
    };
    for cut in (0..bytes.len())
        .step_by(bytes.len() / 300 + 1)
        .chain([bytes.len() - 1])
    {
        try_bytes(&bytes[..cut], true);
    }
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(21);
    // every byte of the data section, a random bit each; every 7th byte of the header
    for at in (8..header).step_by(7).chain(header..bytes.len()) {
        let mut flipped = bytes.clone();
        flipped[at] ^= 1 << rand::Rng::gen_range(&mut rng, 0..8);
        try_bytes(&flipped, at >= header);
    }
    println!(
        "robustness: {tried} truncated or flipped checkpoints tried, {errors} errors, \
         {harmless} loaded exactly, {panics} panics"
    );
    assert_eq!(panics, 0);
    assert!(tried > 1000, "{tried}");
}

/// Item 1: a dendrite count in the metadata is checked against the tensors present before
/// anything grows (1e9 used to allocate until the process aborted).
#[test]
fn item01_a_declared_dendrite_count_needs_its_tensors() {
    let (path, bytes) = real_checkpoint("item01");
    for huge in ["1000000000", "3000", "0"] {
        let edited = sealed::edit_metadata(&bytes, |m| {
            let s = m.get_mut("structure").unwrap();
            *s = s.replacen(r#""dendrites":1"#, &format!(r#""dendrites":{huge}"#), 1);
        });
        std::fs::write(&path, edited).unwrap();
        let mut m = model();
        let e = load(&mut m, &path).unwrap_err().to_string();
        assert!(
            e.contains("dendrite(s) declared") && e.contains("fc1"),
            "{e}"
        );
        assert_eq!(m.dendrite_count(), 0, "the model is untouched");
    }
}

/// Item 2: a flipped bit in the data is detected by the checksum; non-finite values are
/// refused at load.
#[test]
fn item02_damage_and_non_finite_values_are_refused() {
    let (path, bytes) = real_checkpoint("item02");
    let mut flipped = bytes.clone();
    let last = flipped.len() - 3;
    flipped[last] ^= 0x10;
    std::fs::write(&path, &flipped).unwrap();
    let e = load(&mut model(), &path).unwrap_err().to_string();
    assert!(e.contains("checksum mismatch"), "{e}");

    let mut m = model();
    common::set_outputs(&mut m, |_| f64::NAN);
    let mut plain = model();
    struct Poison;
    impl perforated::params::ParamVisitor<f32, common::TestDevice> for Poison {
        fn visit<S: Shape>(
            &mut self,
            p: perforated::params::Param<'_, f32, common::TestDevice>,
            t: &mut Tensor<S, f32, common::TestDevice>,
        ) -> perforated::Result<()> {
            if p.path == "fc2.neurons.bias" {
                let mut v = t.as_vec();
                v[0] = f32::INFINITY;
                t.copy_from(&v);
            }
            Ok(())
        }
    }
    plain.visit_params("", &mut Poison).unwrap();
    save(&mut plain, &path).unwrap();
    let e = load(&mut model(), &path).unwrap_err();
    assert!(
        matches!(e, Error::NonFinite { .. }) && e.to_string().contains("fc2.neurons.bias"),
        "{e}"
    );
}

/// Item 3: resuming a moved run makes nothing at the old place.
#[test]
fn item03_a_moved_run_resumes_without_its_old_directory() {
    let (path, _) = real_checkpoint("item03-old");
    let old = path.parent().unwrap().to_path_buf();
    let new = dir("item03-new");
    std::fs::rename(&old, &new).unwrap();
    let mut m = model();
    let (tracker, _) = Tracker::resume(&new, &mut m).unwrap();
    assert_eq!(tracker.config().dir, new);
    assert!(!old.exists(), "the old directory was made again");
}

/// Item 4: the header is read and checked before the data; devices and pipes are refused.
#[test]
fn item04_devices_pipes_and_lying_headers_are_refused_unread() {
    let e = load(&mut model(), "/dev/zero").unwrap_err().to_string();
    assert!(e.contains("not a regular file"), "{e}");
    let d = dir("item04");
    std::fs::create_dir_all(&d).unwrap();
    let fifo = d.join("pipe.safetensors");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    if made.is_ok_and(|s| s.success()) {
        let e = load(&mut model(), &fifo).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
    }
    // a header length larger than the file
    let liar = d.join("liar.safetensors");
    let mut bytes = 1_000_000u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{}");
    std::fs::write(&liar, bytes).unwrap();
    let e = load(&mut model(), &liar).unwrap_err().to_string();
    assert!(e.contains("truncated"), "{e}");
}

/// Item 5: the graph of a diverging run is drawn (it used to loop forever in plotters).
#[test]
fn item05_the_graph_of_a_diverging_run_is_drawn() {
    for (name, scores) in [
        ("spread", vec![0.5, 9e307, -9e307, 1.0]),
        ("max", vec![0.5, f64::MAX, 0.7, f64::MAX]),
        ("decades", vec![0.7, 0.07, 0.007, 0.0055]),
    ] {
        let d = dir(&format!("item05-{name}"));
        let (mut tracker, mut m, mut opt) =
            start(config(&d).switch(SwitchMode::Never).graph_every(1));
        for s in scores {
            tracker.add_validation_score(s, &mut m, &mut opt).unwrap();
        }
        assert!(d.join("graph.png").is_file(), "{name}");
    }
}

/// Item 6: NaN is refused where it enters: in the gradient (nothing applied), in learning
/// rates, in recorded losses.
#[test]
fn item06_nan_is_refused_where_it_enters() {
    let dev = common::TestDevice::seed_from_u64(6);
    let data = data();
    let mut m = model();
    let before = snapshot(&mut m);
    let mut opt = DendriticOptimizer::adam(AdamConfig::default());
    let mut x = data.x.as_vec();
    x[5] = f32::NAN;
    let x = dev.tensor_from_vec(x, (Const::<32>, Const::<4>));
    let grads = m.alloc_grads().unwrap();
    let loss = mse_loss(m.forward_mut(x.trace(grads)), data.y.clone());
    let e = opt.step(&mut m, loss.backward()).unwrap_err();
    assert!(matches!(e, Error::NonFinite { .. }), "{e}");
    assert_eq!(snapshot(&mut m), before, "nothing was applied");

    for lr in [f64::NAN, f64::INFINITY, -1.0] {
        let mut opt = DendriticOptimizer::adam(AdamConfig {
            lr,
            ..Default::default()
        });
        let grads = m.alloc_grads().unwrap();
        let loss = mse_loss(m.forward_mut(data.x.trace(grads)), data.y.clone());
        let e = opt.step(&mut m, loss.backward()).unwrap_err().to_string();
        assert!(e.contains("learning rate"), "{lr}: {e}");
        assert_eq!(snapshot(&mut m), before, "{lr}: nothing was applied");
        assert!(opt.set_lr(lr).is_err(), "{lr}");
    }
    let (mut tracker, _, _) = start(config(&dir("item06")));
    assert!(tracker.add_train_loss(f64::NAN).is_err());
    assert!(tracker.add_test_score(f64::INFINITY).is_err());
    assert!(tracker.add_extra_score("f1", f64::NAN).is_err());
    assert!(tracker.add_extra_score("a,b", 1.0).is_err());
}

/// Item 7 (and 10): a call that fails on a file leaves tracker, model and optimizer as they
/// were, leaves no temporary file, and the same call made again continues exactly as a run
/// that never failed.
#[test]
fn item07_a_failed_call_changes_nothing_and_can_be_retried() {
    let data = data();
    let clean_dir = dir("item07-clean");
    let (mut clean, mut clean_model, mut clean_opt) = start(config(&clean_dir));
    run_to(&mut clean, &mut clean_model, &mut clean_opt, &data, 12);

    let d = dir("item07");
    let (mut tracker, mut m, mut opt) = start(config(&d));
    run_to(&mut tracker, &mut m, &mut opt, &data, 2);
    // the third call switches phases; writing scores.csv over a directory fails after it
    let obstacle = d.join("scores.csv");
    let _ = std::fs::remove_file(&obstacle);
    std::fs::create_dir_all(obstacle.join("x")).unwrap();
    for _ in 0..4 {
        let grads = m.alloc_grads().unwrap();
        let loss = mse_loss(m.forward_mut(data.x.trace(grads)), data.y.clone());
        opt.step(&mut m, loss.backward()).unwrap();
    }
    let score = f64::from(mse_loss(m.forward(data.x.clone()), data.y.clone()).array());
    let state = tracker.state().clone();
    let weights = snapshot(&mut m);
    let (opt_state, _) = opt.export().unwrap();
    for _ in 0..2 {
        tracker.add_train_loss(score).unwrap();
        let e = tracker
            .add_validation_score(score, &mut m, &mut opt)
            .unwrap_err();
        assert!(e.to_string().contains("scores.csv"), "{e}");
        assert_eq!(*tracker.state(), state, "the tracker is as before");
        assert_eq!(snapshot(&mut m), weights, "the model is as before");
        assert_eq!(m.phase(), Phase::Neuron);
        assert_eq!(
            opt.export().unwrap().0,
            opt_state,
            "the optimizer is as before"
        );
    }
    let temporaries: Vec<_> = std::fs::read_dir(&d)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(temporaries.is_empty(), "{temporaries:?}");
    std::fs::remove_dir_all(&obstacle).unwrap();
    tracker.add_train_loss(score).unwrap();
    assert_eq!(
        tracker
            .add_validation_score(score, &mut m, &mut opt)
            .unwrap(),
        Step::Restructured
    );
    run_to(&mut tracker, &mut m, &mut opt, &data, 12);
    let (a, b) = (tracker.state(), clean.state());
    assert_eq!(
        (a.epoch, &a.switches, &a.best),
        (b.epoch, &b.switches, &b.best)
    );
    let scores = |s: &perforated::tracker::TrackerState| {
        s.history
            .iter()
            .map(|r| (r.score, r.train_loss))
            .collect::<Vec<_>>()
    };
    assert_eq!(scores(a), scores(b));
    assert_eq!(snapshot(&mut m), snapshot(&mut clean_model));
    for file in [
        "scores.csv",
        "params.csv",
        "correlations.csv",
        "history.jsonl",
    ] {
        let rows = |d: &std::path::Path| csv(d, file).len();
        assert_eq!(
            rows(&d),
            rows(&clean_dir),
            "{file}: no row doubled by the retries"
        );
    }
}

/// Item 8 (and 10): one tracker per directory; temporaries of a killed run are swept.
#[test]
fn item08_a_second_tracker_on_a_directory_is_refused() {
    let d = dir("item08");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join(".latest.safetensors.tmp4242"), b"left by kill -9").unwrap();
    std::fs::write(d.join(".graph.tmp-4242-0.png"), b"left by kill -9").unwrap();
    let first = Tracker::new(config(&d)).unwrap();
    let left: Vec<_> = std::fs::read_dir(&d)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let e = Tracker::new(config(&d)).unwrap_err();
    assert!(matches!(e, Error::Busy { .. }), "{e}");
    let e = std::thread::spawn(move || Tracker::new(config(&dir_of(&first))).map(|_| ()))
        .join()
        .unwrap()
        .unwrap_err();
    assert!(matches!(e, Error::Busy { .. }), "another thread: {e}");
}

fn dir_of(t: &Tracker) -> std::path::PathBuf {
    t.config().dir.clone()
}

/// Item 9: scores survive a resume to the bit.
#[test]
fn item09_a_resume_keeps_every_score_to_the_bit() {
    let d = dir("item09");
    let (mut tracker, mut m, mut opt) = start(config(&d).switch(SwitchMode::Never));
    let scores = [
        0.1 + 0.2,
        1.0 / 3.0,
        std::f64::consts::PI * 1e-7,
        0.123_456_789_012_345_68,
    ];
    for s in scores {
        tracker.add_validation_score(s, &mut m, &mut opt).unwrap();
    }
    let state = tracker.state().clone();
    drop(tracker);
    let (resumed, _) = Tracker::resume(&d, &mut model()).unwrap();
    let bits = |s: &perforated::tracker::TrackerState| {
        let best = s.best.as_ref().map(|b| b.score.to_bits());
        let history: Vec<u64> = s.history.iter().map(|r| r.running.to_bits()).collect();
        (
            best,
            history,
            s.recent.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        )
    };
    assert_eq!(bits(resumed.state()), bits(&state));
}

/// Item 11: a failed load into another architecture leaves the model as it was.
#[test]
fn item11_a_failed_load_leaves_the_model_untouched() {
    let (path, _) = real_checkpoint("item11");
    let dev = common::TestDevice::seed_from_u64(11);
    let mut wider: common::Mlp<4, 9, 3, f32, _> =
        common::Mlp::new(&dev, common::quick_config(DendriteLearning::Correlation));
    let before = snapshot(&mut wider);
    let e = load(&mut wider, &path).unwrap_err().to_string();
    assert!(e.contains("[9, 4]"), "{e}");
    assert_eq!(wider.dendrite_count(), 0);
    assert_eq!(wider.phase(), Phase::Neuron);
    assert_eq!(snapshot(&mut wider), before);
}

/// Item 12: nonsense configuration is refused or made harmless.
#[test]
fn item12_nonsense_configuration_is_refused() {
    let e = Tracker::new(TrackerConfig::new(""))
        .unwrap_err()
        .to_string();
    assert!(e.contains("`dir` is empty"), "{e}");

    // u32::MAX decays: the rate after the switch is the floor, not twice the initial rate
    let d = dir("item12");
    let (mut tracker, mut m, mut opt) = start(
        config(&d)
            .switch(SwitchMode::EveryN { first: 1, then: 1 })
            .lr_restart(LrRestart::Decayed { decays: u32::MAX }),
    );
    let data = data();
    for _ in 0..4 {
        epoch(&mut tracker, &mut m, &mut opt, &data).unwrap();
        assert!(opt.lr() <= 1e-2, "{}", opt.lr());
    }
    drop(tracker);

    // a tampered epoch count: a clear error at resume, not a wrap to 0
    let latest = d.join("latest.safetensors");
    let bytes = std::fs::read(&latest).unwrap();
    let epochs = format!(r#""epoch":{}"#, 4);
    std::fs::write(
        &latest,
        sealed::replace_in(
            &bytes,
            "tracker_state",
            &epochs,
            r#""epoch":18446744073709551615"#,
        ),
    )
    .unwrap();
    let e = Tracker::resume(&d, &mut model()).unwrap_err().to_string();
    assert!(e.contains("history.jsonl"), "{e}");
}

/// Item 13: dendrites trained with one squash (or learning mode) do not load into a model
/// built with another.
#[test]
fn item13_dendrite_settings_are_checked() {
    let (path, _) = real_checkpoint("item13");
    let dev = common::TestDevice::seed_from_u64(13);
    for config in [
        DendriteConfig {
            activation: Activation::Tanh,
            ..common::quick_config(DendriteLearning::Correlation)
        },
        common::quick_config(DendriteLearning::Gradient),
    ] {
        let mut other: robust::Model = common::Mlp::new(&dev, config);
        let e = load(&mut other, &path).unwrap_err().to_string();
        assert!(
            e.contains("dendrite activation") || e.contains("dendrite learning"),
            "{e}"
        );
        assert_eq!(other.dendrite_count(), 0);
    }
}

/// Item 14: the checkpoint's header does not grow with the run; the history comes back
/// whole from its side file.
#[test]
fn item14_checkpoints_stay_the_same_size_as_the_run_grows() {
    let d = dir("item14");
    let (mut tracker, mut m, mut opt) = start(config(&d).switch(SwitchMode::Never));
    let latest = d.join("latest.safetensors");
    let mut sizes = Vec::new();
    for i in 0..300 {
        tracker
            .add_validation_score(1.0 / (1.0 + f64::from(i)), &mut m, &mut opt)
            .unwrap();
        sizes.push(std::fs::metadata(&latest).unwrap().len());
    }
    let growth = sizes[299] - sizes[9];
    assert!(
        growth < 290, // a digit gained here and there; the history added ~20 bytes an epoch
        "the checkpoint grew by {growth} bytes over 290 epochs"
    );
    let history = tracker.state().history.clone();
    drop(tracker);
    let (resumed, _) = Tracker::resume(&d, &mut model()).unwrap();
    assert_eq!(resumed.state().history, history);

    // a header a load would refuse is never written
    let big = std::collections::HashMap::from([("note".to_string(), "x".repeat(100_000_001))]);
    let e = perforated::checkpoint::save_with(&mut m, d.join("big.safetensors"), big, &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("header"), "{e}");
    assert!(!d.join("big.safetensors").exists());
}

/// The child process of [`a_run_killed_at_random_moments_resumes_bit_identical`]: trains the
/// run in `PERFORATED_KILL_DIR` to its end, resuming it when it has a `latest`. Without the
/// variable (an ordinary test run) it does nothing.
#[test]
fn kill_child() {
    let Ok(d) = std::env::var("PERFORATED_KILL_DIR") else {
        return;
    };
    let d = std::path::PathBuf::from(d);
    let (mut tracker, mut m, mut opt) = if d.join("latest.safetensors").exists() {
        let mut m = model();
        let (tracker, opt) = Tracker::resume(&d, &mut m).expect("a resume");
        (tracker, m, opt)
    } else {
        start(config(&d).max_dendrites(3))
    };
    run_to(&mut tracker, &mut m, &mut opt, &data(), 40);
}

/// kill -9 at random moments of a training process, then a resume, ends exactly where an
/// uninterrupted run ends.
#[test]
fn a_run_killed_at_random_moments_resumes_bit_identical() {
    use std::process::{Command, Stdio};
    let exe = std::env::current_exe().unwrap();
    let child = |d: &std::path::Path| {
        let mut c = Command::new(&exe);
        c.args(["--exact", "kill_child", "--test-threads=1"])
            .env("PERFORATED_KILL_DIR", d)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    };
    let whole = dir("kill-whole");
    let started = std::time::Instant::now();
    assert!(child(&whole).status().unwrap().success());
    // kill moments spread over the length of a whole run
    let length = started.elapsed().as_millis().max(10) as u64;
    let reference = outcome(&whole);
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(9);
    let (mut mid_run, runs) = (0, 12);
    for i in 0..runs {
        let d = dir(&format!("kill-{i}"));
        let mut c = child(&d).spawn().unwrap();
        let wait = rand::Rng::gen_range(&mut rng, 0..length);
        std::thread::sleep(std::time::Duration::from_millis(wait));
        c.kill().unwrap();
        c.wait().unwrap();
        let latest = d.join("latest.safetensors");
        if latest.exists() && !outcome_is_complete(&d) {
            mid_run += 1;
        }
        assert!(child(&d).status().unwrap().success(), "resume {i}");
        assert_eq!(outcome(&d), reference, "killed after {wait} ms");
        for file in [
            "scores.csv",
            "params.csv",
            "correlations.csv",
            "switches.csv",
        ] {
            assert_eq!(
                csv(&d, file),
                csv(&whole, file),
                "{file}, killed after {wait} ms"
            );
        }
    }
    println!("robustness: {runs} runs killed with SIGKILL, {mid_run} mid-run, all resumed exactly");
}

/// A batch of no rows goes through a dendritic model in both phases, and an optimizer step
/// with no gradient (an empty shard's) changes nothing, without a panic.
#[test]
fn an_empty_batch_passes_through_both_phases() {
    let dev = common::TestDevice::seed_from_u64(14);
    let mut m = model();
    let mut opt = DendriticOptimizer::adam(AdamConfig::default());
    let x: Tensor<(usize, Const<4>), f32, _> = dev.zeros_like(&(0, Const));
    for phase in [Phase::Neuron, Phase::Dendrite] {
        if phase == Phase::Dendrite {
            m.start_dendrite_phase().unwrap();
        }
        let before = snapshot(&mut m);
        let grads = m.alloc_grads().unwrap();
        let out = m.forward_mut(x.trace(grads.clone()));
        assert_eq!(out.shape().0, 0, "{phase}");
        opt.step(&mut m, grads).unwrap();
        // Adam with a zero gradient leaves weights where they are
        assert_eq!(snapshot(&mut m), before, "{phase}");
    }
}

/// A resume whose tracker metadata is damaged fails before the model changes.
#[test]
fn a_resume_with_damaged_tracker_metadata_leaves_the_model_untouched() {
    let (path, bytes) = real_checkpoint("bad-state");
    std::fs::write(
        &path,
        sealed::edit_metadata(&bytes, |m| {
            m.insert("tracker_state".into(), "{ not a state".into());
        }),
    )
    .unwrap();
    let mut m = model();
    let before = snapshot(&mut m);
    let e = Tracker::resume(path.parent().unwrap(), &mut m)
        .unwrap_err()
        .to_string();
    assert!(e.contains("tracker_state"), "{e}");
    assert_eq!(snapshot(&mut m), before);
    assert_eq!(m.dendrite_count(), 0);
}
