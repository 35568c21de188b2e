//! The dendrite sum: the one formula every dendritic layer computes after its modules ran.
//!
//! ```text
//! aⱼ = σ( preⱼ + bⱼ + Σ_{i<j} cⱼᵢ ⊙ aᵢ )       (cascade: dendrite j sees the ones before it)
//! y' = y + Σⱼ wⱼ ⊙ aⱼ                          (one output weight per neuron per dendrite)
//! ```
//!
//! `preⱼ` is dendrite `j`'s module output ([`Pre::Module`]) or, for an affine layer, its
//! product `x · Wⱼᵀ` taken here from the input matrix ([`Pre::Affine`]); `bⱼ` its bias when the
//! product is taken apart from the module; `cⱼᵢ`, `wⱼ` and `bⱼ` are per-neuron vectors
//! broadcast along every other axis of the output.
//!
//! [`dendrite_sum`] is the one entry point. Two implementations stand behind it, chosen by the
//! device: [`host`], one fused forward loop and one backward op on the CPU, and [`ops`], the
//! same from dfdx ops on any device. `ops` is also the reference the host kernel is held to
//! in this module's tests (as candle keeps its `*_slow` kernels).

mod host;
mod ops;

pub(crate) use ops::activation_of;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use dfdx::shapes::{ConstDim, Shape};
use dfdx::tensor::{Merge, Tape, Tensor};
use dfdx::tensor_ops::Device;

use super::config::Activation;
use crate::axis::{NeuronAxis, PerNeuron};
use crate::float::Float;
use crate::host::{on_host, Scratch};

/// A layer input as a `(rows, features)` matrix, on tape `T`.
pub(crate) type Matrix<E, D, T> = Tensor<(usize, usize), E, D, T>;

/// Where a dendrite's pre-activation comes from.
pub(crate) enum Pre<So: Shape, E: Float, D: Device<E>, P> {
    /// The dendrite module's output.
    Module(Tensor<So, E, D, P>),
    /// An affine dendrite's weight `W` `(neurons, inputs)`, sharing the layer weight's id: the
    /// sum computes `x · Wᵀ` from the input matrix it is given, and in the gradient mode
    /// writes the gradients of `W` and `x` itself, so that the product allocates no output
    /// and no gradient buffer of its own.
    Affine(Tensor<(usize, usize), E, D>),
}

/// What one dendrite contributes: its pre-activation (for an affine layer without its bias,
/// which is then given here), its cascade weights (one per earlier dendrite) and its output
/// weights.
pub(crate) struct Term<'a, So: Shape, N: ConstDim, E: Float, D: Device<E>, P> {
    pub pre: Pre<So, E, D, P>,
    /// Added per neuron; it gets a gradient when the terms train.
    pub bias: Option<&'a PerNeuron<N, E, D>>,
    pub cascade: &'a [PerNeuron<N, E, D>],
    pub output: &'a PerNeuron<N, E, D>,
}

/// How the terms of one call are given: chosen once per forward pass, by the layer.
pub(crate) enum Path<E: Float, D: Device<E>, T> {
    /// Affine dendrites whose products are taken from this input matrix (CPU, a layer whose
    /// neurons are its output's last axis).
    Affine(Matrix<E, D, T>),
    /// Each dendrite's module runs and its output is the term.
    Modules,
}

/// `y + Σⱼ wⱼ ⊙ aⱼ` on `y`'s tape, and, when `keep_acts`, the activations `aⱼ` (in cascade
/// order) without a tape. With tapes on the terms (`P`, the gradient mode) the terms, their
/// biases and cascade weights get gradients too; without (frozen, detached dendrites) only `y`
/// and the output weights do. `input` is the layer input as a matrix, which [`Pre::Affine`]
/// terms need; in the gradient mode it is on the terms' tape and gets their gradient.
///
/// # Errors
/// Backend errors.
pub(crate) fn dendrite_sum<Tags, So, E, D, T, P>(
    y: Tensor<So, E, D, T>,
    terms: Vec<Term<'_, So, Tags::Neurons, E, D, P>>,
    input: Option<Matrix<E, D, P>>,
    activation: Activation,
    keep_acts: bool,
    scratch: &Arc<Scratch<E>>,
) -> Result<(Tensor<So, E, D, T>, Vec<Tensor<So, E, D>>), D::Err>
where
    Tags: NeuronAxis<So>,
    So: Shape,
    E: Float,
    D: Device<E>,
    T: Tape<E, D> + Merge<P>,
    P: Tape<E, D>,
{
    if on_host::<E, D>() {
        host::dendrite_sum::<Tags, So, E, D, T, P>(y, terms, input, activation, keep_acts, scratch)
    } else {
        ops::dendrite_sum::<Tags, So, E, D, T, P>(y, terms, input, activation, keep_acts)
    }
}
