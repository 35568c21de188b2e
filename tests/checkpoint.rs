//! Checkpoints round-trip exactly and refuse every corruption with a clear error.

mod common;

use common::TestDevice;

use common::{mse_step, quick_config, sealed, Mlp};
use perforated::checkpoint::{load, save};
use perforated::prelude::*;
use perforated::Error;

fn trained_model(dev: &TestDevice) -> Mlp<4, 8, 3, f32, TestDevice> {
    let x: Tensor<Rank2<32, 4>, f32, TestDevice> = dev.sample_normal();
    let y: Tensor<Rank2<32, 3>, f32, TestDevice> = dev.sample_normal();
    let mut model =
        Mlp::<4, 8, 3, f32, TestDevice>::new(dev, quick_config(DendriteLearning::Correlation));
    let mut opt = DendriticOptimizer::adam(AdamConfig {
        lr: 1e-2,
        ..Default::default()
    });
    for round in 0..2 {
        for _ in 0..10 {
            mse_step(&mut model, &mut opt, &x, &y);
        }
        model.start_dendrite_phase().unwrap();
        for _ in 0..10 {
            mse_step(&mut model, &mut opt, &x, &y);
        }
        if round == 0 {
            model.accept_dendrites().unwrap();
        }
    }
    model
}

fn dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("perforated-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn saved_tensors_load_back_to_identical_outputs_and_structure() {
    let dev = TestDevice::seed_from_u64(21);
    let mut model = trained_model(&dev);
    let x: Tensor<Rank2<16, 4>, f32, TestDevice> = dev.sample_normal();
    let path = dir("roundtrip").join("model.safetensors");
    save(&mut model, &path).unwrap();

    let mut fresh = Mlp::<4, 8, 3, f32, TestDevice>::new(
        &TestDevice::seed_from_u64(99),
        quick_config(DendriteLearning::Correlation),
    );
    assert_ne!(
        fresh.forward(x.clone()).as_vec(),
        model.forward(x.clone()).as_vec()
    );
    load(&mut fresh, &path).unwrap();
    assert_eq!(fresh.layers(), {
        let mut l = model.layers();
        // generations count local history, not structure
        for (a, b) in l.iter_mut().zip(fresh.layers()) {
            a.generation = b.generation;
        }
        l
    });
    assert_eq!(fresh.phase(), Phase::Dendrite, "the candidate came back");
    assert_eq!(
        fresh.forward(x.clone()).as_vec(),
        model.forward(x.clone()).as_vec()
    );
    assert_eq!(common::snapshot(&mut fresh), common::snapshot(&mut model));
}

fn expect_err<T>(result: perforated::Result<T>) -> Error {
    match result {
        Ok(_) => panic!("a bad checkpoint was accepted"),
        Err(e) => e,
    }
}

#[test]
fn corrupt_and_mismatched_checkpoints_are_refused() {
    let dev = TestDevice::seed_from_u64(22);
    let mut model = trained_model(&dev);
    let d = dir("corrupt");
    let good = d.join("good.safetensors");
    save(&mut model, &good).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let mut target =
        Mlp::<4, 8, 3, f32, TestDevice>::new(&dev, quick_config(DendriteLearning::Correlation));

    // truncated anywhere: header, tensors
    for cut in [0, 4, 20, bytes.len() / 2, bytes.len() - 1] {
        let p = d.join(format!("cut{cut}.safetensors"));
        std::fs::write(&p, &bytes[..cut]).unwrap();
        let e = expect_err(load(&mut target, &p));
        assert!(matches!(e, Error::Corrupt { .. }), "cut at {cut}: {e}");
    }
    // not a checkpoint at all: text (its first bytes read as an absurd header length)
    let p = d.join("garbage.safetensors");
    std::fs::write(
        &p,
        b"this is not a checkpoint, just some text of decent length",
    )
    .unwrap();
    let e = expect_err(load(&mut target, &p));
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    // a plausible header length over garbage: the parser's own error stays reachable
    let mut fake = 16u64.to_le_bytes().to_vec();
    fake.extend_from_slice(b"{not json at all");
    std::fs::write(&p, fake).unwrap();
    let e = expect_err(load(&mut target, &p));
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    assert!(std::error::Error::source(&e).is_some(), "{e:?}");
    // missing file
    let e = expect_err(load(&mut target, d.join("missing.safetensors")));
    assert!(
        matches!(e, Error::Io { .. }) && e.to_string().contains("missing.safetensors"),
        "{e}"
    );

    // edited metadata without a new checksum: refused as damaged
    let edited = replace(&bytes, br#"\"dendrites\":1"#, br#"\"dendrites\":x"#);
    let p = d.join("edited.safetensors");
    std::fs::write(&p, edited).unwrap();
    let e = expect_err(load(&mut target, &p)).to_string();
    assert!(e.contains("checksum mismatch"), "{e}");
    // ... and re-sealed, it reaches the structure check
    std::fs::write(
        &p,
        sealed::replace_in(&bytes, "structure", r#""dendrites":1"#, r#""dendrites":x"#),
    )
    .unwrap();
    let e = expect_err(load(&mut target, &p));
    assert!(e.to_string().contains("bad structure metadata"), "{e}");
    // a structure naming other layers
    std::fs::write(
        &p,
        sealed::replace_in(&bytes, "structure", r#""path":"fc2""#, r#""path":"fc9""#),
    )
    .unwrap();
    let e = expect_err(load(&mut target, &p)).to_string();
    assert!(
        e.contains("layers") && e.contains("fc9") && e.contains("fc2"),
        "{e}"
    );
    // a model of another shape: tensor shapes differ
    let mut wider =
        Mlp::<4, 9, 3, f32, TestDevice>::new(&dev, quick_config(DendriteLearning::Correlation));
    let e = expect_err(load(&mut wider, &good)).to_string();
    assert!(
        e.contains("fc1.neurons.weight") && e.contains("[9, 4]") && e.contains("[8, 4]"),
        "{e}"
    );
    // another dtype
    let mut double =
        Mlp::<4, 8, 3, f64, TestDevice>::new(&dev, quick_config(DendriteLearning::Correlation));
    let e = expect_err(load(&mut double, &good)).to_string();
    assert!(
        e.contains("dtype") && e.contains("F64") && e.contains("F32"),
        "{e}"
    );
}

#[test]
fn a_failed_save_leaves_the_previous_file_intact() {
    let dev = TestDevice::seed_from_u64(23);
    let mut model = trained_model(&dev);
    let d = dir("atomic");
    // the target is a directory holding a file: the final rename fails.
    let target = d.join("model.safetensors");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(target.join("keep"), b"precious").unwrap();
    let e = save(&mut model, &target).unwrap_err().to_string();
    assert!(e.contains("model.safetensors"), "{e}");
    assert_eq!(std::fs::read(target.join("keep")).unwrap(), b"precious");
    let leftovers: Vec<_> = std::fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        leftovers.len(),
        1,
        "no temporary file left behind: {leftovers:?}"
    );
}

/// `bytes` with the first `from` replaced by `to` (same length); panics if absent.
fn replace(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let at = bytes
        .windows(from.len())
        .position(|w| w == from)
        .expect("pattern in the file");
    let mut out = bytes.to_vec();
    out[at..at + to.len()].copy_from_slice(to);
    out
}

#[test]
fn model_and_optimizer_state_resume_training_exactly() {
    let dev = TestDevice::seed_from_u64(24);
    let x: Tensor<Rank2<32, 4>, f32, TestDevice> = dev.sample_normal();
    let y: Tensor<Rank2<32, 3>, f32, TestDevice> = dev.sample_normal();
    for phase in [Phase::Neuron, Phase::Dendrite] {
        let mut a = trained_model(&dev);
        if phase == Phase::Neuron {
            a.discard_candidates().unwrap();
        }
        let mut opt_a = DendriticOptimizer::adam(AdamConfig {
            lr: 1e-2,
            ..Default::default()
        });
        for _ in 0..7 {
            mse_step(&mut a, &mut opt_a, &x, &y);
        }
        let path = dir(&format!("resume-{phase}")).join("ckpt.safetensors");
        let (state, tensors) = opt_a.export().unwrap();
        perforated::checkpoint::save_with(&mut a, &path, Default::default(), &tensors).unwrap();

        let mut b =
            Mlp::<4, 8, 3, f32, TestDevice>::new(&dev, quick_config(DendriteLearning::Correlation));
        let extras = load(&mut b, &path).unwrap();
        let mut opt_b = DendriticOptimizer::sgd(SgdConfig::default());
        opt_b.import(&b, &state, &extras.tensors, &dev).unwrap();
        for _ in 0..7 {
            let la = mse_step(&mut a, &mut opt_a, &x, &y);
            let lb = mse_step(&mut b, &mut opt_b, &x, &y);
            assert_eq!(la, lb, "{phase}");
        }
        assert_eq!(
            common::snapshot(&mut a),
            common::snapshot(&mut b),
            "{phase}"
        );
    }
}
