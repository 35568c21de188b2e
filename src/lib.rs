//! perforated: artificial dendrites for Rust neural networks.
pub use pai_core::*;
