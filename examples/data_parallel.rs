//! Data-parallel training on thread replicas: a 784-256-256-10 MLP with dendrites on
//! Fashion-MNIST, trained by 1 replica and by `--replicas N` (default 2) replicas on the same
//! global batches; per-epoch wall time and the test accuracy of each.
//!
//! ```text
//! cargo run --release --example data_parallel -- [--replicas 2] [--epochs 4] [--quick]
//! ```
//!
//! Built with `--features mpi`, it trains on one replica per MPI process instead (the world
//! `mpiexec` starts; `--replicas` is not used) and rank 0 prints the table's one row:
//!
//! ```text
//! cargo build --release --features mpi --example data_parallel
//! mpiexec -n 2 target/release/examples/data_parallel
//! ```
//!
//! The schedule: neuron-phase epochs, then one dendrite-phase epoch (each layer's candidate
//! learns from the neuron error, its statistics merged over the replicas), the dendrites
//! accepted, and one more neuron-phase epoch. Each replica trains on its shard of every global
//! batch of 256 with its loss scaled by the shard's share; the optimizer sums the gradients
//! over the replicas; they stay bit-identical, which the example checks at the end.

mod common;

use std::time::Instant;

use common::args::Args;
use common::digits::Dataset;
use common::fashion::{self, PIXELS};
use common::mlp::WideMlp;
use perforated::dfdx::tensor::Cpu;
use perforated::parallel::{self, Replica};
use perforated::prelude::*;
use rand::SeedableRng;

const BATCH: usize = 256;

/// What one replica ends with: seconds per epoch, test accuracy, a checksum of its weights.
struct Outcome {
    epoch_seconds: Vec<f64>,
    accuracy: f64,
    checksum: f64,
}

/// One epoch over `data` in global batches of [`BATCH`] (the same order on every replica),
/// this replica's shard of each.
fn epoch(
    r: &Replica,
    model: &mut WideMlp<f32, Cpu>,
    opt: &mut DendriticOptimizer<f32, Cpu>,
    data: &Dataset<PIXELS>,
    seed: u64,
) -> perforated::Result<f64> {
    let dev = Cpu::default();
    let start = Instant::now();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for rows in data.train.batches(BATCH, &mut rng) {
        let shard = &rows[r.shard(rows.len())];
        if shard.is_empty() {
            let grads = model.alloc_grads()?;
            opt.step(model, grads)?;
            continue;
        }
        let (x, y) = data.train.tensors::<f32, Cpu>(&dev, shard);
        let grads = model.alloc_grads()?;
        let loss = cross_entropy_with_logits_loss(model.forward_mut(x.trace(grads)), y)
            * r.loss_scale(rows.len()) as f32;
        opt.step(model, loss.backward())?;
    }
    Ok(start.elapsed().as_secs_f64())
}

fn train(r: &Replica, data: &Dataset<PIXELS>, epochs: usize) -> perforated::Result<Outcome> {
    let dev = Cpu::seed_from_u64(r.rank() as u64);
    let config = DendriteConfig {
        correlation: CorrelationConfig {
            warmup_batches: 5,
            ..Default::default()
        },
        ..Default::default()
    };
    let mut model = WideMlp::<f32, Cpu>::build_with(&dev, &config)?;
    // replicas built from different seeds start as rank 0's
    r.broadcast_model(&mut model)?;
    let mut opt = DendriticOptimizer::adam(AdamConfig {
        lr: 1e-3,
        ..Default::default()
    });
    let mut epoch_seconds = Vec::new();
    for e in 0..epochs {
        let last = e + 1 == epochs;
        if last && epochs > 1 {
            model.start_dendrite_phase()?;
        }
        epoch_seconds.push(epoch(r, &mut model, &mut opt, data, e as u64)?);
        if last && epochs > 1 {
            model.accept_dendrites()?;
            epoch_seconds.push(epoch(r, &mut model, &mut opt, data, 100)?);
        }
    }
    let (x, _) = data.test.all::<f32, Cpu>(&dev);
    let accuracy = data.test.accuracy(&model.forward(x));
    // the validation logits summed: equal bits on every replica if they stayed identical
    let logits = model.forward(data.val.all::<f32, Cpu>(&dev).0).as_vec();
    let checksum = logits.iter().map(|p| f64::from(*p)).sum();
    Ok(Outcome {
        epoch_seconds,
        accuracy,
        checksum,
    })
}

/// The table's row for one run: rank 0's outcome, and whether every replica ended the same.
fn row(replicas: usize, first: &Outcome, identical: bool) {
    let seconds: Vec<String> = first
        .epoch_seconds
        .iter()
        .map(|s| format!("{s:.2}"))
        .collect();
    println!(
        "| {replicas} | {} | {:.2} | {identical} |",
        seconds.join(", "),
        100.0 * first.accuracy
    );
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = Args::parse("data_parallel", 1, 3);
    let mut data = fashion::load(args.data.as_deref())?;
    if args.quick {
        args.epochs = args.epochs.min(2);
        data.train.labels.truncate(2000);
        data.train.pixels.truncate(2000 * PIXELS);
    }
    let header = |backend: &str| {
        println!(
            "Fashion-MNIST MLP 784-256-256-10, global batch {BATCH}, {} training images; \
             replicas on {backend}, {} rayon threads each; schedule: {} neuron-phase \
             epoch(s), one dendrite-phase epoch, one after accepting",
            data.train.labels.len(),
            rayon::current_num_threads(),
            args.epochs.saturating_sub(1).max(1),
        );
        println!("| replicas | seconds per epoch | test accuracy % | replicas identical |");
        println!("|---:|---|---:|---|");
    };
    #[cfg(feature = "mpi")]
    {
        parallel::mpi(|r| {
            if r.is_main() {
                header("MPI processes");
            }
            let o = train(&r, &data, args.epochs)?;
            let mut first = [o.checksum];
            r.collective().broadcast_f64(&mut first)?;
            let identical = perforated::collective::all_ok(
                r.collective(),
                first[0].to_bits() == o.checksum.to_bits(),
            )?;
            if r.is_main() {
                row(r.world(), &o, identical);
            }
            Ok(())
        })?;
        Ok(())
    }
    #[cfg(not(feature = "mpi"))]
    {
        header("threads");
        for replicas in [1, args.replicas] {
            let outcomes = parallel::threads(replicas, |r| train(&r, &data, args.epochs))?;
            let identical = outcomes
                .iter()
                .all(|o| o.checksum.to_bits() == outcomes[0].checksum.to_bits());
            row(replicas, &outcomes[0], identical);
        }
        Ok(())
    }
}
