//! Data parallel on thread replicas (f64, CPU): the replicas stay bit-identical to each
//! other and match single-process training on the whole batch, through a neuron phase, a
//! dendrite phase (merged candidate statistics), an accepted dendrite and a rollback-free
//! second neuron phase; with uneven and with empty shards.

use perforated::dfdx::tensor::Cpu;
use perforated::parallel::{self, Replica};
use perforated::prelude::*;
use perforated::CorrelationReport;

#[perforated]
struct Net {
    fc1: Linear<3, 5>,
    act: Tanh,
    fc2: Linear<5, 2>,
}

type Model = Net<f64, Cpu>;

const ROWS: usize = 7;

fn config() -> DendriteConfig {
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

/// What a run ends with: every tensor's values, and the candidate statistics seen after each
/// dendrite-phase step.
struct Outcome {
    values: Vec<f64>,
    reports: Vec<Vec<CorrelationReport>>,
}

/// One training step on `rows` of `k`'s batch (`shard` of them on this replica), the loss
/// scaled by `scale`.
fn step(
    model: &mut Model,
    opt: &mut DendriticOptimizer<f64, Cpu>,
    dev: &Cpu,
    k: u64,
    shard: std::ops::Range<usize>,
    scale: f64,
) -> perforated::Result<()> {
    let (x, y) = batch(k, ROWS);
    let n = shard.len();
    if n == 0 {
        // no rows: no forward pass, but the step joins the others' sums
        let grads = model.alloc_grads()?;
        return opt.step(model, grads);
    }
    let x = dev.tensor_from_vec(x[shard.start * 3..shard.end * 3].to_vec(), (n, Const::<3>));
    let y = dev.tensor_from_vec(y[shard.start * 2..shard.end * 2].to_vec(), (n, Const::<2>));
    let grads = model.alloc_grads()?;
    let out = model.forward_mut(x.trace(grads));
    // the shard's mean, scaled by its share of the batch
    let loss = (out - y).square().sum::<Rank0, _>() * (scale / (n * 2) as f64);
    opt.step(model, loss.backward())
}

/// The schedule every run follows: neuron steps, a dendrite phase, accept, neuron steps.
/// `replica` is `None` for single-process training on the whole batch.
fn run(seed: u64, replica: Option<&Replica>) -> perforated::Result<Outcome> {
    let dev = Cpu::seed_from_u64(seed);
    let mut model = Model::build_with(&dev, &config())?;
    if let Some(r) = replica {
        r.broadcast_model(&mut model)?;
    }
    let mut opt = DendriticOptimizer::adam(AdamConfig {
        lr: 0.01,
        ..Default::default()
    });
    let (shard, scale) = match replica {
        Some(r) => (r.shard(ROWS), r.loss_scale(ROWS)),
        None => (0..ROWS, 1.0),
    };
    let mut reports = Vec::new();
    for k in 0..4 {
        step(&mut model, &mut opt, &dev, k, shard.clone(), scale)?;
    }
    model.start_dendrite_phase()?;
    for k in 4..10 {
        step(&mut model, &mut opt, &dev, k, shard.clone(), scale)?;
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
        step(&mut model, &mut opt, &dev, k, shard.clone(), scale)?;
    }
    let mut values = Vec::new();
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
    model.visit_params("", &mut Gather(&mut values))?;
    assert_eq!(model.dendrite_count(), 2, "one dendrite accepted per layer");
    Ok(Outcome { values, reports })
}

fn close(a: &[f64], b: &[f64], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= 1e-12 * (1.0 + y.abs()),
            "{what}[{i}]: {x} vs {y}"
        );
    }
}

fn same_as_whole_batch(replicas: usize) {
    let whole = run(0, None).unwrap();
    // built with different seeds: the broadcast makes them rank 0's
    let outcomes = parallel::threads(replicas, |r| run(r.rank() as u64, Some(&r))).unwrap();
    for (rank, o) in outcomes.iter().enumerate() {
        assert_eq!(
            o.values, outcomes[0].values,
            "replica {rank} differs from replica 0"
        );
        close(
            &o.values,
            &whole.values,
            &format!("{replicas} replicas, tensors"),
        );
        for (step, (got, want)) in o.reports.iter().zip(&whole.reports).enumerate() {
            for (g, w) in got.iter().zip(want) {
                let what = format!("{replicas} replicas, statistics after dendrite step {step}");
                close(&g.per_neuron, &w.per_neuron, &what);
                close(&g.mean_error, &w.mean_error, &what);
                assert_eq!(g.batches, w.batches);
            }
        }
    }
    assert_eq!(outcomes[0].reports.len(), whole.reports.len());
}

#[test]
fn one_replica_is_bit_identical_to_training_without_replicas() {
    let whole = run(0, None).unwrap();
    let one = parallel::threads(1, |r| run(0, Some(&r))).unwrap();
    assert_eq!(one[0].values, whole.values);
}

#[test]
fn two_replicas_with_uneven_shards_match_the_whole_batch() {
    same_as_whole_batch(2);
}

#[test]
fn three_replicas_match_the_whole_batch() {
    same_as_whole_batch(3);
}

#[test]
fn replicas_with_empty_shards_still_join_every_sum() {
    // 7 rows over 9 replicas: two of them get none
    same_as_whole_batch(9);
}

#[test]
fn a_replica_that_fails_makes_the_others_fail_instead_of_hanging() {
    let err = parallel::threads(3, |r| {
        if r.rank() == 1 {
            return Err(perforated::Error::Config("replica 1's own failure".into()));
        }
        run(r.rank() as u64, Some(&r)).map(|_| ())
    })
    .unwrap_err();
    // the cause is reported, not its consequence on the others
    assert!(err.to_string().contains("replica 1's own failure"), "{err}");
}

#[test]
fn replicas_with_different_models_are_told_so_on_every_rank() {
    let results = parallel::threads(2, |r| {
        let dev = Cpu::seed_from_u64(0);
        let mut model = Model::build_with(&dev, &config())?;
        if r.rank() == 1 {
            model.visit_layers_mut("", &mut |_, l| l.grow_dendrites(1))?;
        }
        Ok(r.broadcast_model(&mut model).is_err())
    })
    .unwrap();
    assert_eq!(results, [true, true]);
}
