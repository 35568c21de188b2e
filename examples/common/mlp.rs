//! The MLP the digits examples train: 64 pixels in, H hidden units, 10 classes.

use perforated::prelude::*;

/// A 64-H-10 MLP; both layers get dendrites.
#[perforated]
pub struct Mlp<const H: usize> {
    pub fc1: Linear<64, H>,
    pub act: ReLU,
    pub fc2: Linear<H, 10>,
}
