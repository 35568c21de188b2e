//! Test helpers: a hand-written two-layer model (the code `#[perforated]` generates, written
//! out, so the path the macro targets stays tested on its own).
#![allow(dead_code)]

mod mlp;
pub use mlp::*;
