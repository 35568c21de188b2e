//! # perforated: artificial dendrites for Rust neural networks
//!
//! Give a trained (or untrained) dfdx network *dendrites*: each converted layer gets copies
//! of itself whose squashed outputs feed its neurons through one learned weight per neuron.
//! Training alternates between a **neuron phase** (ordinary training) and a **dendrite phase**
//! (a candidate dendrite per layer learns to correlate with each neuron's remaining error while
//! everything else is frozen and the network output does not change). The usual result is a
//! more accurate network at the same size, or the same accuracy from a smaller one.
//!
//! ## The pieces
//!
//! * [`Dendritic<M, Tags>`](Dendritic): a layer `M` (the neurons) plus its dendrites. `Tags`
//!   says which output axis holds the neurons, as a type (see [`axis`]).
//! * [`DendriticModel`]: what a whole network provides: walks over its tensors and its
//!   dendritic layers. Phase changes, parameter counts and gradient allocation come with it.
//! * [`DendriticOptimizer`]: Adam or SGD over the model's tensors, updating what trains in the
//!   current phase, with dfdx's own update kernels.
//! * [`checkpoint`]: safetensors save and load of a model with its structure.
//!
//! ## A training step
//!
//! The loop is dfdx's usual one; the optimizer decides what a step updates:
//!
//! ```
//! use perforated::prelude::*;
//!
//! let dev: Cpu = Default::default();
//! let mut layer: Dendritic<_> =
//!     Dendritic::new(&dev, dev.build_module::<Linear<3, 2>, f32>(), DendriteConfig::default())?;
//! let mut opt = DendriticOptimizer::adam(AdamConfig { lr: 1e-2, ..Default::default() });
//! let x: Tensor<Rank2<16, 3>, f32, Cpu> = dev.sample_normal();
//! let y: Tensor<Rank2<16, 2>, f32, Cpu> = dev.sample_normal();
//! for phase in [Phase::Neuron, Phase::Dendrite] {
//!     if phase == Phase::Dendrite {
//!         layer.start_dendrite_phase()?;
//!     }
//!     for _ in 0..120 {
//!         let grads = layer.alloc_grads()?;
//!         let loss = mse_loss(layer.forward_mut(x.trace(grads)), y.clone());
//!         opt.step(&mut layer, loss.backward())?; // neuron step or candidate step, by phase
//!     }
//! }
//! println!("candidate correlation: {:?}", layer.correlation());
//! layer.accept_candidate()?; // output unchanged: the new dendrite's output weights are zero
//! assert_eq!(layer.dendrite_count(), 1);
//! # Ok::<(), perforated::Error>(())
//! ```
#![deny(missing_docs)]

pub use dfdx;
pub use pai_core::*;
pub use pai_macros::perforated;

/// Everything a model author needs: dfdx's prelude and perforated's names.
pub mod prelude {
    pub use dfdx::optim::{AdamConfig, SgdConfig};
    pub use dfdx::prelude::*;
    pub use pai_core::prelude::*;
    pub use pai_macros::perforated;
}

/// Paths used by generated code. Not public API.
#[doc(hidden)]
pub mod __private {
    pub use dfdx;
    pub use pai_core;
}
