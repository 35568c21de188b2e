//! Code the examples share: the digits data and a hand-written perforated MLP.
#![allow(dead_code)]

pub mod args;
pub mod digits;
pub mod mlp;
