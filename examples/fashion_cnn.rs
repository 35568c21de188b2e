//! A small CNN on Fashion-MNIST (28x28 clothes, 10 classes), with and without dendrites:
//! `PaiSequential(Conv2d, BatchNorm2D)` blocks, pooling and a linear head, the dendrites on the
//! two convolutions; and the compression question: does the narrow CNN with dendrites match
//! the plain CNN of twice its width?
//!
//! ```text
//! cargo run --release --example fashion_cnn -- [--quick] [--quiet] [--seeds 3] [--epochs 80]
//!     [--data DIR] [--out runs/fashion_cnn]
//! ```
//!
//! `--data DIR` reads IDX files instead of the split shipped in `data/fashion-mnist/`: the same
//! layout (`train-*`, `val-*`, `test-*`), or the official Fashion-MNIST or MNIST files
//! (`train-*`, `t10k-*`), gzipped or not. `--quick`: one seed, 4 epochs, 3,000 training images.

mod common;

use common::args::Args;
use common::cnn::{train, ConvCnn};
use common::digits::Dataset;
use common::fashion::{self, PIXELS};
use common::run::{compression, table, verdict, Outcome, Setup};
use perforated::prelude::*;
use perforated::tracker::LrRestart;

/// The CNN with `C1`, `C2` channels (`F` = `C2` · 49), dendrites (if any) on its convolutions.
/// Plain runs stop 10 epochs past their best validation loss (each epoch is 12,000 images;
/// they have plateaued by then, the learning rate halved three times). Dendritic runs: a
/// neuron phase ends 4 epochs past its best, candidates train at three times the initial rate
/// and are accepted 2 epochs past their best correlation, and after each restructure the rate
/// restarts at half its initial value.
fn cnn<const C1: usize, const C2: usize, const F: usize>(
    data: &Dataset<PIXELS>,
    seed: u64,
    dendrites: Option<usize>,
    args: &Args,
    name: &str,
) -> Result<Outcome, perforated::Error> {
    fn adjust(mut setup: Setup<'_, PIXELS>) -> Setup<'_, PIXELS> {
        setup.plain_patience = 10;
        setup.switch_patience = 4;
        setup.candidate_patience = 2;
        setup.lr_restart = LrRestart::Decayed { decays: 1 };
        // candidates at three times the rate, as in `digits_mlp` (`docs/dendrite-phases.md`);
        // here, over 3 seeds, the mean best validation loss went from 0.3819 to 0.3810
        setup.candidate_lr_factor = 3.0;
        setup
    }
    let build = ConvCnn::<C1, C2, F, f32, AutoDevice>::build;
    train(data, 28, seed, dendrites, args, name, build, adjust)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = Args::parse("fashion_cnn", 3, 80);
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
            ("cnn 2-4", &|s| cnn::<2, 4, 196>(d, s, None, a, "cnn2")),
            ("cnn 2-4 + dendrites on the convolutions", &|s| {
                cnn::<2, 4, 196>(d, s, Some(3), a, "cnn2-dendrites")
            }),
            ("cnn 4-8 (twice the width)", &|s| {
                cnn::<4, 8, 392>(d, s, None, a, "cnn4")
            }),
        ],
    )?;
    println!("\nwhat this showed: {}", verdict(&rows[0], &rows[1]));
    println!("and on compression: {}", compression(&rows[1], &rows[2]));
    println!("tracker output under {}", args.out.display());
    Ok(())
}
