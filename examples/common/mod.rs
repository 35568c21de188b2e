//! Code the examples share: the datasets, the training loop and command-line overrides.
#![allow(dead_code)]

pub mod args;
pub mod cnn;
pub mod digits;
pub mod fashion;
pub mod mlp;
pub mod run;
