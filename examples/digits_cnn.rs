//! A small CNN on the 8x8 digits, with and without dendrites: two `PaiSequential(Conv2d,
//! BatchNorm2d)` blocks, so each dendrite copies a convolution with its normalisation.
//!
//! ```text
//! cargo run --release --example digits_cnn -- [--seeds 3] [--epochs 200] [--out runs/digits_cnn]
//! ```

mod common;

use common::args::Args;
use common::digits::Digits;
use common::run::{run, table, Images, Logits, Outcome, Setup};
use perforated::prelude::*;

/// 8x8 -> 4 channels -> pool to 4x4 -> 8 channels -> pool to 2x2 -> 10 classes.
#[perforated]
struct Cnn {
    block1: PaiSequential<Conv2d<1, 4, 3, 1, 1>, BatchNorm2D<4>>,
    act1: ReLU,
    pool1: MaxPool2d<2>,
    block2: PaiSequential<Conv2d<4, 8, 3, 1, 1>, BatchNorm2D<8>>,
    act2: ReLU,
    pool2: MaxPool2d<2>,
    flat: Flatten<32>,
    head: Linear<32, 10>,
}

type Image<T> = Tensor<(usize, Const<1>, usize, usize), f32, AutoDevice, T>;

fn as_images<T: Tape<f32, AutoDevice>>(x: Images<T>) -> Image<T> {
    let b = x.shape().0;
    x.reshape_like(&(b, Const::<1>, 8, 8))
}

fn cnn(
    digits: &Digits,
    seed: u64,
    dendrites: Option<usize>,
    args: &Args,
    name: &str,
) -> Result<Outcome, perforated::Error> {
    let dev = AutoDevice::seed_from_u64(seed);
    let mut model = Cnn::<f32, AutoDevice>::build(&dev)?;
    let setup = Setup {
        candidate_patience: 20,
        ..Setup::new(digits, &dev, seed, args, name, dendrites)
    };
    run(
        &setup,
        &mut model,
        |m, x| -> Logits<_> { m.forward_mut(as_images(x)) },
        |m, x| m.forward(as_images(x)),
    )
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse("digits_cnn", 3, 200)?;
    let digits = Digits::load()?;
    println!(
        "digits CNN (conv+batchnorm groups); {} seeds; test accuracy at the best validation epoch",
        args.seeds
    );
    table(
        &args,
        &[
            ("cnn 4-8 channels", &|s| cnn(&digits, s, None, &args, "cnn")),
            ("cnn 4-8 channels + dendrites", &|s| {
                cnn(&digits, s, Some(2), &args, "cnn-dendrites")
            }),
        ],
    )?;
    println!("tracker output under {}", args.out.display());
    Ok(())
}
