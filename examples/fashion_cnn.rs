//! A small CNN on Fashion-MNIST (28x28 clothes, 10 classes), with and without dendrites:
//! `PaiSequential(Conv2d, BatchNorm2D)` blocks, pooling and a linear head; and the compression
//! question: does the narrow CNN with dendrites match the plain CNN of twice its width?
//!
//! ```text
//! cargo run --release --example fashion_cnn -- [--quick] [--quiet] [--seeds 3] [--epochs 20]
//!     [--data DIR] [--out runs/fashion_cnn]
//! ```
//!
//! `--data DIR` reads IDX files instead of the split shipped in `data/fashion-mnist/`: the same
//! layout (`train-*`, `val-*`, `test-*`), or the official Fashion-MNIST or MNIST files
//! (`train-*`, `t10k-*`), gzipped or not. `--quick`: one seed, 4 epochs, 3,000 training images.

mod common;

use common::args::Args;
use common::digits::Dataset;
use common::fashion::{self, PIXELS};
use common::run::{run, table, Images, Logits, Outcome, Setup};
use perforated::prelude::*;

/// 28x28 -> `C1` channels -> pool to 14x14 -> `C2` channels -> pool to 7x7 -> 10 classes
/// (`F` = `C2` · 49, spelled out: const generics cannot compute it on stable Rust).
#[perforated]
struct Cnn<const C1: usize, const C2: usize, const F: usize> {
    block1: PaiSequential<Conv2d<1, C1, 3, 1, 1>, BatchNorm2D<C1>>,
    act1: ReLU,
    pool1: MaxPool2d<2>,
    block2: PaiSequential<Conv2d<C1, C2, 3, 1, 1>, BatchNorm2D<C2>>,
    act2: ReLU,
    pool2: MaxPool2d<2>,
    flat: Flatten<F>,
    head: Linear<F, 10>,
}

type Image<T> = Tensor<(usize, Const<1>, usize, usize), f32, AutoDevice, T>;

fn as_images<T: Tape<f32, AutoDevice>>(x: Images<T, PIXELS>) -> Image<T> {
    let b = x.shape().0;
    x.reshape_like(&(b, Const::<1>, 28, 28))
}

fn cnn<const C1: usize, const C2: usize, const F: usize>(
    data: &Dataset<PIXELS>,
    seed: u64,
    dendrites: Option<usize>,
    args: &Args,
    name: &str,
) -> Result<Outcome, perforated::Error> {
    let dev = AutoDevice::seed_from_u64(seed);
    let mut model = Cnn::<C1, C2, F, f32, AutoDevice>::build(&dev)?;
    // a few epochs a phase, each epoch 12,000 images; a dendrite phase no longer than the
    // first neuron phase, so that the dendrites get epochs to be used in
    let setup = Setup {
        switch_patience: 3,
        candidate_patience: 3,
        cap_dendrite_phase: true,
        ..Setup::new(data, &dev, seed, args, name, dendrites)
    };
    run(
        &setup,
        &mut model,
        |m, x| -> Logits<_> { m.forward_mut(as_images(x)) },
        |m, x| m.forward(as_images(x)),
    )
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = Args::parse("fashion_cnn", 3, 20)?;
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
    table(
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
    println!("tracker output under {}", args.out.display());
    Ok(())
}
