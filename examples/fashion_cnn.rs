//! A small CNN on Fashion-MNIST (28x28 clothes, 10 classes), with and without dendrites:
//! `PaiSequential(Conv2d, BatchNorm2D)` blocks, pooling and a linear head; and the compression
//! question: does the narrow CNN with dendrites match the plain CNN of twice its width?
//!
//! ```text
//! cargo run --release --example fashion_cnn -- [--quick] [--quiet] [--seeds 3] [--epochs 16]
//!     [--data DIR] [--out runs/fashion_cnn]
//! ```
//!
//! `--data DIR` reads IDX files instead of the split shipped in `data/fashion-mnist/`: the same
//! layout (`train-*`, `val-*`, `test-*`), or the official Fashion-MNIST or MNIST files
//! (`train-*`, `t10k-*`), gzipped or not. `--quick`: one seed, 4 epochs, 3,000 training images.

mod common;

use common::args::Args;
use common::cnn::train;
use common::digits::Dataset;
use common::fashion::{self, PIXELS};
use common::run::{compression, table, verdict, Outcome, Setup};

/// The CNN with `C1`, `C2` channels (`F` = `C2` · 49): a few epochs a phase, each epoch
/// 12,000 images; a dendrite phase no longer than the first neuron phase, so that the
/// dendrites get epochs to be used in.
fn cnn<const C1: usize, const C2: usize, const F: usize>(
    data: &Dataset<PIXELS>,
    seed: u64,
    dendrites: Option<usize>,
    args: &Args,
    name: &str,
) -> Result<Outcome, perforated::Error> {
    fn adjust(setup: Setup<'_, PIXELS>) -> Setup<'_, PIXELS> {
        Setup {
            switch_patience: 2,
            candidate_patience: 2,
            cap_dendrite_phase: true,
            ..setup
        }
    }
    train::<C1, C2, F, PIXELS>(data, 28, seed, dendrites, args, name, adjust)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = Args::parse("fashion_cnn", 3, 16);
    let mut data = fashion::load(args.data.as_deref())?;
    if args.quick {
        args.seeds = 1;
        args.epochs = args.epochs.min(4);
        // every fourth image: the shipped split is ordered by class
        let keep = |i: &usize| i.is_multiple_of(4);
        data.train.labels = (0..data.train.labels.len())
            .filter(keep)
            .map(|i| data.train.labels[i])
            .collect();
        data.train.pixels = data
            .train
            .pixels
            .chunks(PIXELS)
            .enumerate()
            .filter(|(i, _)| keep(i))
            .flat_map(|(_, p)| p.iter().copied())
            .collect();
    }
    println!(
        "Fashion-MNIST CNN ({} train / {} validation / {} test images); {} seed(s); test \
         accuracy at the best validation epoch",
        data.train.labels.len(),
        data.val.labels.len(),
        data.test.labels.len(),
        args.seeds
    );
    let d = &data;
    let a = &args;
    let rows = table(
        &args,
        &[
            ("cnn 4-8", &|s| cnn::<4, 8, 392>(d, s, None, a, "cnn4")),
            ("cnn 4-8 + dendrites", &|s| {
                cnn::<4, 8, 392>(d, s, Some(1), a, "cnn4-dendrites")
            }),
            ("cnn 8-16 (twice the width)", &|s| {
                cnn::<8, 16, 784>(d, s, None, a, "cnn8")
            }),
        ],
    )?;
    println!("\nwhat this showed: {}", verdict(&rows[0], &rows[1]));
    println!("and on compression: {}", compression(&rows[1], &rows[2]));
    println!("tracker output under {}", args.out.display());
    Ok(())
}
