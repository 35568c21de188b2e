//! A run of the tracker on a small real layer (a dendritic `Linear<2, 1>` learning `x0 * x1`),
//! fed scores by hand, with a trace of its decisions: the harness of the tracker tests.

use super::TestDevice;
use perforated::optim::Rule;
use perforated::prelude::*;
use perforated::tracker::{Step, SwitchMode, Tracker, TrackerConfig};

pub type Layer = Dendritic<perforated::dfdx::nn::modules::Linear<2, 1, f32, TestDevice>>;

pub fn dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("perforated-tracker-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

pub struct Run {
    pub tracker: Tracker,
    pub model: Layer,
    pub opt: DendriticOptimizer<f32, TestDevice>,
    pub x: Tensor<Rank2<16, 2>, f32, TestDevice>,
    pub y: Tensor<Rank2<16, 1>, f32, TestDevice>,
    /// One character per epoch: neuron phase `i` improved, `c` continue; dendrite phase `d`;
    /// `R` restructured, `X` complete.
    pub trace: String,
    /// Model output after every epoch's training.
    pub outputs: Vec<Vec<f32>>,
}

/// The layer drawn from `seed`, its candidates judged by `correlation`.
pub fn model_with(seed: u64, correlation: CorrelationConfig) -> Layer {
    let dev = TestDevice::seed_from_u64(seed);
    let config = DendriteConfig {
        correlation,
        ..Default::default()
    };
    Dendritic::new(&dev, BuildModule::build(&dev), config).unwrap()
}

/// The layer drawn from `seed`, its candidates warm after one batch.
pub fn model_seeded(seed: u64) -> Layer {
    model_with(
        seed,
        CorrelationConfig {
            warmup_batches: 1,
            ..Default::default()
        },
    )
}

impl Run {
    pub fn new(config: TrackerConfig) -> Self {
        let dev = TestDevice::seed_from_u64(3);
        let x: Tensor<Rank2<16, 2>, f32, TestDevice> = dev.sample_normal();
        let v = x.array();
        let y = dev.tensor_from_vec(
            v.iter().map(|r| r[0] * r[1]).collect(),
            (Const::<16>, Const::<1>),
        );
        let mut tracker = Tracker::new(config).unwrap();
        let opt = tracker.optimizer(Rule::Adam(AdamConfig {
            lr: 0.01,
            ..Default::default()
        }));
        Run {
            tracker,
            model: model_seeded(1),
            opt,
            x,
            y,
            trace: String::new(),
            outputs: Vec::new(),
        }
    }

    pub fn train(&mut self) {
        for _ in 0..2 {
            let grads = self.model.alloc_grads().unwrap();
            let loss = mse_loss(self.model.forward_mut(self.x.trace(grads)), self.y.clone());
            self.opt.step(&mut self.model, loss.backward()).unwrap();
        }
        self.outputs
            .push(self.model.forward(self.x.clone()).as_vec());
    }

    pub fn epoch(&mut self, score: f64) -> Step {
        self.train();
        let phase = self.model.phase();
        let step = self
            .tracker
            .add_validation_score(score, &mut self.model, &mut self.opt)
            .unwrap();
        self.trace.push(match (phase, step) {
            (_, Step::Restructured) => 'R',
            (_, Step::Complete) => 'X',
            (Phase::Dendrite, _) => 'd',
            (Phase::Neuron, Step::Continue { improved: true }) => 'i',
            (Phase::Neuron, Step::Continue { improved: false }) => 'c',
        });
        step
    }

    /// Feeds `scores` to neuron-phase epochs; dendrite-phase epochs repeat the last score
    /// (the network output does not change there). Stops at completion or after the scores.
    pub fn feed(&mut self, scores: &[f64]) {
        self.feed_from(scores[0], scores);
    }

    /// [`Self::feed`], the dendrite-phase epochs before the first of `scores` fed `last` (a
    /// resumed run going on).
    pub fn feed_from(&mut self, mut last: f64, scores: &[f64]) {
        let mut i = 0;
        for _ in 0..500 {
            if self.model.phase() == Phase::Neuron {
                if i == scores.len() {
                    return;
                }
                last = scores[i];
                i += 1;
            }
            if self.epoch(last) == Step::Complete {
                return;
            }
        }
        panic!("no progress: {}", self.trace);
    }

    /// The trace with every run of dendrite epochs written `d` once.
    pub fn phases(&self) -> String {
        let mut out = String::new();
        for c in self.trace.chars() {
            if !(c == 'd' && out.ends_with('d')) {
                out.push(c);
            }
        }
        out
    }
}

pub fn base(name: &str) -> TrackerConfig {
    TrackerConfig::new(dir(name))
        .switch(SwitchMode::Plateau { patience: 2 })
        .dendrite_patience(1)
        .graph_every(0)
}
