//! Code the examples share: the digits data and command-line overrides.
#![allow(dead_code)]

pub mod args;
pub mod digits;
pub mod mlp;
pub mod run;
