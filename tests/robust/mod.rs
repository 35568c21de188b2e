//! The robustness suite's runner: a small model trained by the tracker on fixed data, whole
//! runs and single epochs, so each hostile case starts from a real run directory.
#![allow(dead_code)]

use crate::common::{quick_config, snapshot, Mlp, TestDevice};
use perforated::optim::Rule;
use perforated::prelude::*;
use perforated::tracker::{Step, SwitchMode, Tracker, TrackerConfig};

pub type Model = Mlp<4, 8, 3, f32, TestDevice>;
pub type Opt = DendriticOptimizer<f32, TestDevice>;

/// A fresh directory under the system's temp dir, unique to this process and `name`.
pub fn dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("perforated-robust-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// The model every case uses, built the same way each time.
pub fn model() -> Model {
    let dev = TestDevice::seed_from_u64(7);
    Mlp::new(&dev, quick_config(DendriteLearning::Correlation))
}

/// Fixed training data.
pub struct Data {
    pub x: Tensor<Rank2<32, 4>, f32, TestDevice>,
    pub y: Tensor<Rank2<32, 3>, f32, TestDevice>,
}

pub fn data() -> Data {
    let dev = TestDevice::seed_from_u64(8);
    Data {
        x: dev.sample_normal(),
        y: dev.sample_normal(),
    }
}

/// A tracker config that switches quickly: every 3 epochs, at most 2 dendrites.
pub fn config(dir: &std::path::Path) -> TrackerConfig {
    TrackerConfig::new(dir)
        .switch(SwitchMode::EveryN { first: 3, then: 3 })
        .max_dendrites(2)
        .graph_every(0)
}

/// One epoch: 4 full-batch steps, then the loss as the validation score.
pub fn epoch(
    tracker: &mut Tracker,
    model: &mut Model,
    opt: &mut Opt,
    data: &Data,
) -> perforated::Result<Step> {
    for _ in 0..4 {
        let grads = model.alloc_grads()?;
        let loss = mse_loss(model.forward_mut(data.x.trace(grads)), data.y.clone());
        opt.step(model, loss.backward())?;
    }
    let loss = mse_loss(model.forward(data.x.clone()), data.y.clone()).array();
    tracker.add_train_loss(f64::from(loss))?;
    tracker.add_validation_score(f64::from(loss), model, opt)
}

/// A new run in `dir`: tracker, model, optimizer.
pub fn start(config: TrackerConfig) -> (Tracker, Model, Opt) {
    let mut tracker = Tracker::new(config).expect("a tracker");
    let opt = tracker.optimizer(Rule::Adam(AdamConfig {
        lr: 1e-2,
        ..Default::default()
    }));
    (tracker, model(), opt)
}

/// Trains until `Complete` or `epochs` epochs in all (counting those already recorded).
pub fn run_to(tracker: &mut Tracker, model: &mut Model, opt: &mut Opt, data: &Data, epochs: usize) {
    while tracker.state().epoch < epochs {
        if epoch(tracker, model, opt, data).expect("an epoch") == Step::Complete {
            break;
        }
    }
}

/// What a finished run left: weights, optimizer state, decisions and scores.
pub fn outcome(d: &std::path::Path) -> impl PartialEq + std::fmt::Debug {
    let mut m = model();
    let (tracker, mut opt) = Tracker::resume(d, &mut m).expect("a finished run");
    let s = tracker.state();
    let scores: Vec<u64> = s.history.iter().map(|r| r.score.to_bits()).collect();
    (
        snapshot(&mut m),
        opt.export().unwrap().0,
        (
            s.epoch,
            s.complete,
            s.switches.clone(),
            s.best.clone(),
            scores,
        ),
    )
}

/// A CSV file's rows without the wall-time column, which no two runs share.
pub fn csv(d: &std::path::Path, file: &str) -> Vec<String> {
    let text = std::fs::read_to_string(d.join(file)).unwrap();
    let header: Vec<&str> = text.lines().next().unwrap().split(',').collect();
    let seconds = header.iter().position(|h| *h == "seconds");
    text.lines()
        .map(|l| {
            let cells = l.split(',').enumerate();
            cells
                .filter(|(i, _)| Some(*i) != seconds)
                .map(|(_, c)| c)
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect()
}

pub fn outcome_is_complete(d: &std::path::Path) -> bool {
    let mut m = model();
    Tracker::resume(d, &mut m).is_ok_and(|(t, _)| t.state().complete)
}
