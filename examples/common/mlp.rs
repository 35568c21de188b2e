//! The MLP the digits examples train: 64 pixels in, H hidden units, 10 classes.

use perforated::prelude::*;

/// A 64-H-10 MLP; both layers get dendrites.
///
/// The hidden activation is leaky (slope 0.05): with plain `ReLU` and this learning rate, up to
/// 3 of 8 hidden units die early in training on some seeds, and a dead unit has no error for a
/// candidate dendrite to correlate with, so neither the plain nor the dendritic network can
/// recover it.
#[perforated]
pub struct Mlp<const H: usize> {
    pub fc1: Linear<64, H>,
    pub act: LeakyReLU<E>,
    pub fc2: Linear<H, 10>,
}

/// The 784-256-256-10 MLP of the data-parallel example and bench (Fashion-MNIST sized); every
/// linear layer gets dendrites.
#[perforated]
pub struct WideMlp {
    pub fc1: Linear<784, 256>,
    pub act1: ReLU,
    pub fc2: Linear<256, 256>,
    pub act2: ReLU,
    pub fc3: Linear<256, 10>,
}
