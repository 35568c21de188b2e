//! 64-H-10 MLPs on real handwritten digits, with and without dendrites.
//!
//! For small hidden sizes (4 and 8) and a larger plain baseline (32), over several seeds, the
//! tracker drives training on the validation loss: plain rows only track (no switching) and stop
//! after a plateau; dendritic rows grow dendrites until they stop helping. Each row reports the test accuracy at
//! the best validation epoch (mean and spread over seeds), the parameter count of that model,
//! the dendrites it has, epochs and wall time.
//!
//! ```text
//! cargo run --release --example digits_mlp -- [--seeds 3] [--epochs 400] [--out runs/digits_mlp]
//! ```

mod common;

use std::time::Instant;

use common::args::Args;
use common::digits::{Digits, Split};
use common::mlp::Mlp;
use perforated::optim::Rule;
use perforated::prelude::*;
use perforated::tracker::{Step, SwitchMode, Tracker, TrackerConfig};
use rand::rngs::StdRng;
use rand::SeedableRng;

const BATCH: usize = 32;

/// One finished run.
struct Outcome {
    test: f64,
    params: usize,
    dendrites: usize,
    epochs: usize,
    seconds: f64,
}

fn loss_and_accuracy<const H: usize>(
    model: &Mlp<H, f32, AutoDevice>,
    split: &Split,
    dev: &AutoDevice,
) -> (f64, f64) {
    let (x, y) = split.all::<f32, _>(dev);
    let logits = model.forward(x);
    let loss = cross_entropy_with_logits_loss(logits.clone(), y).array() as f64;
    (loss, split.accuracy(&logits))
}

fn run<const H: usize>(
    digits: &Digits,
    seed: u64,
    dendrites: Option<usize>,
    args: &Args,
    name: &str,
) -> Result<Outcome, perforated::Error> {
    let dev = AutoDevice::seed_from_u64(seed);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut model = Mlp::<H, f32, AutoDevice>::build(&dev)?;
    // decisions on the validation loss: smoother than the accuracy of 360 images, which moves in
    // steps of one image
    let config = TrackerConfig::new(args.out.join(format!("{name}-seed{seed}")))
        .minimize()
        .switch(match dendrites {
            Some(_) => SwitchMode::Plateau { patience: 15 },
            None => SwitchMode::Never,
        })
        .dendrite_patience(10)
        .max_dendrites(dendrites.unwrap_or(0))
        .graph_every(10);
    let mut tracker = Tracker::new(config)?;
    let mut opt = tracker.optimizer(Rule::Adam(AdamConfig {
        lr: 1e-2,
        ..Default::default()
    }));
    let start = Instant::now();
    let mut since_best = 0;
    for _ in 0..args.epochs {
        let mut loss_sum = 0.0;
        let batches = digits.train.batches(BATCH, &mut rng);
        for rows in &batches {
            let (x, y) = digits.train.tensors::<f32, _>(&dev, rows);
            let grads = model.alloc_grads()?;
            let loss = cross_entropy_with_logits_loss(model.forward_mut(x.traced(grads)), y);
            loss_sum += loss.array() as f64;
            opt.step(&mut model, loss.backward())?;
        }
        let (val, _) = loss_and_accuracy(&model, &digits.val, &dev);
        let (_, test) = loss_and_accuracy(&model, &digits.test, &dev);
        tracker.add_test_score(test);
        tracker.add_train_loss(loss_sum / batches.len() as f64);
        match tracker.add_validation_score(val, &mut model, &mut opt)? {
            Step::Complete => break,
            Step::Continue { improved: true } | Step::Restructured => since_best = 0,
            Step::Continue { improved: false } => since_best += 1,
        }
        // plain rows: early stopping after a long plateau
        if dendrites.is_none() && since_best >= 40 {
            break;
        }
    }
    let state = tracker.state();
    let best = state.best.clone().expect("at least one epoch");
    let at_best = &state.history[best.epoch];
    Ok(Outcome {
        test: at_best.test.unwrap_or(f64::NAN),
        params: at_best.params,
        dendrites: at_best.dendrites,
        epochs: state.history.len(),
        seconds: start.elapsed().as_secs_f64(),
    })
}

fn row(name: &str, outcomes: &[Outcome]) {
    let n = outcomes.len() as f64;
    let mean = outcomes.iter().map(|o| o.test).sum::<f64>() / n;
    let spread = (outcomes
        .iter()
        .map(|o| (o.test - mean).powi(2))
        .sum::<f64>()
        / n)
        .sqrt();
    let avg = |f: &dyn Fn(&Outcome) -> f64| outcomes.iter().map(f).sum::<f64>() / n;
    println!(
        "| {name} | {:.2} ± {:.2} | {:.0} | {:.1} | {:.0} | {:.1} |",
        100.0 * mean,
        100.0 * spread,
        avg(&|o| o.params as f64),
        avg(&|o| o.dendrites as f64),
        avg(&|o| o.epochs as f64),
        avg(&|o| o.seconds),
    );
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse("digits_mlp", 3, 400)?;
    let digits = Digits::load()?;
    println!(
        "digits: {} train / {} val / {} test; {} seeds; test accuracy at the best validation epoch",
        digits.train.len(),
        digits.val.len(),
        digits.test.len(),
        args.seeds
    );
    println!("| model | test accuracy % (mean ± sd) | params | dendrites | epochs | seconds |");
    println!("|---|---:|---:|---:|---:|---:|");
    let seeds: Vec<u64> = (0..args.seeds as u64).collect();
    let collect = |f: &dyn Fn(u64) -> Result<Outcome, perforated::Error>| -> Result<Vec<Outcome>, perforated::Error> {
        seeds.iter().map(|s| f(*s)).collect()
    };
    row(
        "64-4-10",
        &collect(&|s| run::<4>(&digits, s, None, &args, "h4"))?,
    );
    row(
        "64-4-10 + dendrites",
        &collect(&|s| run::<4>(&digits, s, Some(4), &args, "h4-dendrites"))?,
    );
    row(
        "64-8-10",
        &collect(&|s| run::<8>(&digits, s, None, &args, "h8"))?,
    );
    row(
        "64-8-10 + dendrites (at most 2)",
        &collect(&|s| run::<8>(&digits, s, Some(2), &args, "h8-dendrites"))?,
    );
    row(
        "64-32-10",
        &collect(&|s| run::<32>(&digits, s, None, &args, "h32"))?,
    );
    println!(
        "tracker output (CSV files, graph.png, checkpoints) under {}",
        args.out.display()
    );
    Ok(())
}
