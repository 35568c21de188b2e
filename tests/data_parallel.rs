//! Data parallel on thread replicas (f64, CPU): the replicas stay bit-identical to each
//! other and match single-process training on the whole batch, through a neuron phase, a
//! dendrite phase (merged candidate statistics), an accepted dendrite, and a tracker run to
//! `Complete` with its rollbacks; with uneven and with empty shards.

mod replicas;

use perforated::dfdx::tensor::Cpu;
use perforated::parallel;
use perforated::prelude::*;
use replicas::{assert_matches, assert_tracker_matches, config, run, tracker_run, Model};

fn same_as_whole_batch(replicas: usize) {
    let whole = run(0, None).unwrap();
    // built with different seeds: the broadcast makes them rank 0's
    let outcomes = parallel::threads(replicas, |r| run(r.rank() as u64, Some(&r))).unwrap();
    for (rank, o) in outcomes.iter().enumerate() {
        assert_eq!(
            o.values, outcomes[0].values,
            "replica {rank} differs from replica 0"
        );
        assert_matches(o, &whole, &format!("{replicas} replicas"));
    }
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

fn tracker_same_as_whole_batch(replicas: usize) {
    let root =
        std::env::temp_dir().join(format!("pai-dp-tracker-{replicas}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let whole = tracker_run(0, None, &root.join("whole")).unwrap();
    assert_eq!(whole.steps.last(), Some(&Step::Complete));
    let reasons: Vec<&str> = whole.switches.iter().map(|s| s.reason.as_str()).collect();
    assert!(
        whole.switches.len() >= 4 && reasons.iter().any(|r| r.starts_with("retry")),
        "the run must go through several switches and roll back a set: {reasons:?}"
    );
    // each replica is given a directory of its own: only rank 0's may be written
    let outcomes = parallel::threads(replicas, |r| {
        tracker_run(r.rank() as u64, Some(&r), &root.join(r.rank().to_string()))
    })
    .unwrap();
    for (rank, o) in outcomes.iter().enumerate() {
        assert_eq!(
            o.values, outcomes[0].values,
            "replica {rank} differs from replica 0"
        );
        assert_tracker_matches(o, &whole, &format!("{replicas} replicas"));
        let dir = root.join(rank.to_string());
        assert_eq!(dir.exists(), rank == 0, "{}", dir.display());
    }
    let listing = |dir: &std::path::Path| {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    assert_eq!(listing(&root.join("0")), listing(&root.join("whole")));
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn two_replicas_take_the_tracker_decisions_of_the_whole_batch() {
    tracker_same_as_whole_batch(2);
}

#[test]
fn three_replicas_take_the_tracker_decisions_of_the_whole_batch() {
    tracker_same_as_whole_batch(3);
}

#[test]
fn replicas_passing_different_scores_are_told_so_on_every_rank() {
    let dir = std::env::temp_dir().join(format!("pai-dp-scores-{}", std::process::id()));
    let results = parallel::threads(2, |r| {
        let dev = Cpu::seed_from_u64(0);
        let mut model = Model::build_with(&dev, &config())?;
        let mut tracker = Tracker::new(TrackerConfig::new(&dir).graph_every(0))?;
        let mut opt = tracker.optimizer(perforated::optim::Rule::Adam(Default::default()));
        // each replica's own validation loss instead of the sum over the replicas
        let err = tracker
            .add_validation_score(1.0 + r.rank() as f64, &mut model, &mut opt)
            .unwrap_err();
        Ok(err.to_string())
    })
    .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    for message in results {
        assert!(message.contains("different validation scores"), "{message}");
    }
}

#[test]
fn a_nan_on_one_replica_fails_every_replica_alike() {
    let results = parallel::threads(3, |r| {
        let dev = Cpu::seed_from_u64(0);
        let mut model = Model::build_with(&dev, &config())?;
        r.broadcast_model(&mut model)?;
        let mut opt = DendriticOptimizer::adam(AdamConfig::default());
        let mut x: Vec<f64> = vec![0.5; 6];
        if r.rank() == 2 {
            x[4] = f64::NAN;
        }
        let x = dev.tensor_from_vec(x, (2, Const::<3>));
        let grads = model.alloc_grads()?;
        let loss = model.forward_mut(x.trace(grads)).square().mean();
        Ok(opt
            .step(&mut model, loss.backward())
            .unwrap_err()
            .to_string())
    })
    .unwrap();
    assert!(results[0].contains("NaN"), "{}", results[0]);
    assert!(results.iter().all(|m| *m == results[0]), "{results:?}");
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
