//! The runs the data-parallel tests compare (f64, CPU): each is made once on the whole batch
//! in one process and once on replicas (threads in `tests/data_parallel.rs`, MPI processes in
//! `tests/mpi.rs`), and the two must agree to 1e-12 while the replicas stay bit-identical.

use std::path::Path;

use perforated::dfdx::tensor::Cpu;
use perforated::optim::Rule;
use perforated::parallel::Replica;
use perforated::prelude::*;
use perforated::tracker::SwitchRecord;
use perforated::CorrelationReport;

#[perforated]
pub struct Net {
    fc1: Linear<3, 5>,
    act: Tanh,
    fc2: Linear<5, 2>,
}

pub type Model = Net<f64, Cpu>;

/// Rows of every training batch (uneven over 2 replicas, some empty over 9).
const ROWS: usize = 7;
/// Rows of the validation set of the tracker run.
const VAL_ROWS: usize = 11;

pub fn config() -> DendriteConfig {
    DendriteConfig {
        correlation: CorrelationConfig {
            warmup_batches: 2,
            relative_margin: 0.0,
            absolute_margin: 0.0,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Batch `k` of the run: `rows` rows of inputs and targets, the same on every replica.
fn batch(k: u64, rows: usize) -> (Vec<f64>, Vec<f64>) {
    let dev = Cpu::seed_from_u64(100 + k);
    let x: Tensor<(usize, Const<3>), f64, Cpu> = dev.sample_normal_like(&(rows, Const));
    let y: Tensor<(usize, Const<2>), f64, Cpu> = dev.sample_normal_like(&(rows, Const));
    (x.as_vec(), y.as_vec())
}

type Inputs = Tensor<(usize, Const<3>), f64, Cpu>;
type Targets = Tensor<(usize, Const<2>), f64, Cpu>;

/// Rows `rows` of `(x, y)` as tensors.
fn tensors(
    dev: &Cpu,
    (x, y): &(Vec<f64>, Vec<f64>),
    rows: std::ops::Range<usize>,
) -> (Inputs, Targets) {
    let n = rows.len();
    (
        dev.tensor_from_vec(x[rows.start * 3..rows.end * 3].to_vec(), (n, Const)),
        dev.tensor_from_vec(y[rows.start * 2..rows.end * 2].to_vec(), (n, Const)),
    )
}

/// This replica's shard of a batch of `rows` and its loss scale; the whole batch without one.
fn share(replica: Option<&Replica>, rows: usize) -> (std::ops::Range<usize>, f64) {
    match replica {
        Some(r) => (r.shard(rows), r.loss_scale(rows)),
        None => (0..rows, 1.0),
    }
}

/// One training step on this replica's share of batch `k`.
fn step(
    model: &mut Model,
    opt: &mut DendriticOptimizer<f64, Cpu>,
    dev: &Cpu,
    k: u64,
    replica: Option<&Replica>,
) -> perforated::Result<()> {
    let (shard, scale) = share(replica, ROWS);
    if shard.is_empty() {
        // no rows: no forward pass, but the step joins the others' sums
        let grads = model.alloc_grads()?;
        return opt.step(model, grads);
    }
    let n = shard.len();
    let (x, y) = tensors(dev, &batch(k, ROWS), shard);
    let grads = model.alloc_grads()?;
    let out = model.forward_mut(x.trace(grads));
    // the shard's mean, scaled by its share of the batch
    let loss = (out - y).square().sum::<Rank0, _>() * (scale / (n * 2) as f64);
    opt.step(model, loss.backward())
}

/// Every tensor's values, in walk order.
pub fn values(model: &mut Model) -> perforated::Result<Vec<f64>> {
    struct Gather<'a>(&'a mut Vec<f64>);
    impl perforated::params::ParamVisitor<f64, Cpu> for Gather<'_> {
        fn visit<S: Shape>(
            &mut self,
            _: perforated::params::Param<'_, f64, Cpu>,
            t: &mut Tensor<S, f64, Cpu>,
        ) -> perforated::Result<()> {
            self.0.extend(t.as_vec());
            Ok(())
        }
    }
    let mut values = Vec::new();
    model.visit_params("", &mut Gather(&mut values))?;
    Ok(values)
}

/// What a hand-scheduled run ends with: every tensor's values, and the candidate statistics
/// seen after each dendrite-phase step.
pub struct Outcome {
    pub values: Vec<f64>,
    pub reports: Vec<Vec<CorrelationReport>>,
}

/// Neuron steps, a dendrite phase, accept, neuron steps. `replica` is `None` for
/// single-process training on the whole batch; the model is built from `seed` (the replicas'
/// differ, and the broadcast makes them rank 0's).
pub fn run(seed: u64, replica: Option<&Replica>) -> perforated::Result<Outcome> {
    let dev = Cpu::seed_from_u64(seed);
    let mut model = Model::build_with(&dev, &config())?;
    if let Some(r) = replica {
        r.broadcast_model(&mut model)?;
    }
    let mut opt = DendriticOptimizer::adam(AdamConfig {
        lr: 0.01,
        ..Default::default()
    });
    let mut reports = Vec::new();
    for k in 0..4 {
        step(&mut model, &mut opt, &dev, k, replica)?;
    }
    model.start_dendrite_phase()?;
    for k in 4..10 {
        step(&mut model, &mut opt, &dev, k, replica)?;
        reports.push(
            model
                .correlation_scores()
                .into_iter()
                .map(|(_, r)| r)
                .collect(),
        );
    }
    model.accept_dendrites()?;
    for k in 10..13 {
        step(&mut model, &mut opt, &dev, k, replica)?;
    }
    assert_eq!(model.dendrite_count(), 2, "one dendrite accepted per layer");
    Ok(Outcome {
        values: values(&mut model)?,
        reports,
    })
}

pub fn close(a: &[f64], b: &[f64], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= 1e-12 * (1.0 + y.abs()),
            "{what}[{i}]: {x} vs {y}"
        );
    }
}

/// A replica's run against the whole batch's: tensors and every step's statistics.
pub fn assert_matches(got: &Outcome, whole: &Outcome, what: &str) {
    close(&got.values, &whole.values, &format!("{what}, tensors"));
    assert_eq!(got.reports.len(), whole.reports.len());
    for (step, (got, want)) in got.reports.iter().zip(&whole.reports).enumerate() {
        for (g, w) in got.iter().zip(want) {
            let what = format!("{what}, statistics after dendrite step {step}");
            close(&g.per_neuron, &w.per_neuron, &what);
            close(&g.mean_error, &w.mean_error, &what);
            assert_eq!(g.batches, w.batches);
        }
    }
}

/// What a tracker run ends with.
#[derive(Debug)]
pub struct TrackerOutcome {
    pub values: Vec<f64>,
    pub steps: Vec<Step>,
    pub scores: Vec<f64>,
    pub switches: Vec<SwitchRecord>,
}

/// The validation loss of `model` over the replicas: each sums its shard's squared errors,
/// and the sums and counts are added over the replicas.
fn validation_loss(
    model: &mut Model,
    dev: &Cpu,
    replica: Option<&Replica>,
) -> perforated::Result<f64> {
    let (shard, _) = share(replica, VAL_ROWS);
    let mut sums = [0.0, 0.0];
    if !shard.is_empty() {
        let n = shard.len();
        let (x, y) = tensors(dev, &batch(1000, VAL_ROWS), shard);
        sums = [
            (model.forward(x) - y).square().sum::<Rank0, _>().array(),
            (n * 2) as f64,
        ];
    }
    if let Some(r) = replica {
        r.all_reduce(&mut sums)?;
    }
    Ok(sums[0] / sums[1])
}

/// A tracker-driven run to `Complete` (at most 40 epochs of 3 steps): fixed switching, so it
/// goes through dendrite phases, accepts, rollbacks and a discarded set. Its files go to `dir`.
pub fn tracker_run(
    seed: u64,
    replica: Option<&Replica>,
    dir: &Path,
) -> perforated::Result<TrackerOutcome> {
    let dev = Cpu::seed_from_u64(seed);
    let mut model = Model::build_with(&dev, &config())?;
    if let Some(r) = replica {
        r.broadcast_model(&mut model)?;
    }
    let mut tracker = Tracker::new(
        TrackerConfig::new(dir)
            .switch(SwitchMode::EveryN { first: 3, then: 2 })
            .max_dendrites(3)
            .max_retries(1)
            .graph_every(0),
    )?;
    let mut opt = tracker.optimizer(Rule::Adam(AdamConfig {
        lr: 0.02,
        ..Default::default()
    }));
    let (mut steps, mut scores) = (Vec::new(), Vec::new());
    for epoch in 0..40 {
        for b in 0..3 {
            step(&mut model, &mut opt, &dev, epoch * 3 + b, replica)?;
        }
        let score = validation_loss(&mut model, &dev, replica)?;
        scores.push(score);
        let s = tracker.add_validation_score(score, &mut model, &mut opt)?;
        steps.push(s);
        if s == Step::Complete {
            break;
        }
    }
    Ok(TrackerOutcome {
        values: values(&mut model)?,
        steps,
        scores,
        switches: tracker.state().switches.clone(),
    })
}

/// A replica's tracker run against the whole batch's: the same decisions at the same epochs,
/// scores and final tensors to 1e-12.
pub fn assert_tracker_matches(got: &TrackerOutcome, whole: &TrackerOutcome, what: &str) {
    assert_eq!(got.steps, whole.steps, "{what}: decisions");
    assert_eq!(got.switches, whole.switches, "{what}: switches");
    close(&got.scores, &whole.scores, &format!("{what}, scores"));
    close(&got.values, &whole.values, &format!("{what}, tensors"));
}
