//! Test helpers: the examples' hand-written model, reused.
#![allow(dead_code)]

#[path = "../../examples/common/mlp.rs"]
mod mlp;
pub use mlp::*;
