//! [`Convertible`]: what a layer provides so that it can be given dendrites.

use dfdx::nn::modules::{Linear, UnbiasedLinear};
use dfdx::nn::tensor_collection::{
    RecursiveWalker, TensorCollection, TensorOptions, TensorVisitor, ViewTensorMut,
};
use dfdx::nn::ToDevice;
use dfdx::shapes::{Const, ConstDim, HasShape, Shape};
use dfdx::tensor::{HasErr, Tensor};
use dfdx::tensor_ops::{Device, ReshapeTo};
use rand::SeedableRng;
use rand_distr::Distribution;

use crate::axis::NeuronsLast;
use crate::error::{Error, Result};
use crate::float::Float;
use crate::float::ScaledNormal;
use crate::params::{visit_module, ModuleParams, ParamVisitor};

/// A layer that can be wrapped in [`Dendritic`](super::Dendritic): its neurons are a const
/// axis of its one output tensor, and a dendrite is a fresh copy of the layer itself.
///
/// Implemented for dfdx's `Linear` and `UnbiasedLinear`; pai-core's own layers and user blocks implement it too
/// (for a dfdx-style module, each method is one call to the helper of the same name in this
/// module: [`copy_module`], [`reinit_module`], [`visit_module`]).
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be given dendrites",
    label = "not a convertible layer",
    note = "convertible layers are `Linear`, `UnbiasedLinear`, pai-core's conv layers and `PaiSequential`; a block of your own needs `impl Convertible` (or `#[pai(convert)]` from the macro), and a layer that should train without dendrites belongs outside `Dendritic`"
)]
pub trait Convertible: Sized + 'static {
    /// The dtype of the layer's tensors.
    type Dtype: Float;
    /// The device of the layer's tensors.
    type Device: Device<Self::Dtype>;
    /// The number of neurons (output features or channels), as a const dim.
    type Neurons: ConstDim;
    /// Where the neurons sit in the output when the user says nothing (see [`crate::axis`]).
    type DefaultTags: 'static;

    /// A deep copy with fresh tensor ids and equal values (never `clone`, which shares ids
    /// and therefore gradients and optimizer state).
    ///
    /// # Errors
    /// Backend errors.
    fn try_copy(&self, dev: &Self::Device) -> Result<Self>;

    /// Draws every trainable tensor from `N(0, std²)` (host random numbers from `seed`, so
    /// the draw is the same on every device) and resets every buffer to its default: what a
    /// new dendrite starts from.
    ///
    /// # Errors
    /// Backend errors.
    fn reinit(&mut self, std: f64, seed: u64) -> Result<()>;

    /// Visits every tensor of the layer.
    ///
    /// # Errors
    /// The visitor's first error.
    fn visit_params<V: ParamVisitor<Self::Dtype, Self::Device>>(
        &mut self,
        how: ModuleParams<'_, Self::Dtype, Self::Device>,
        visitor: &mut V,
    ) -> Result<()>;

    /// Called on each frozen dendrite copy of the layer before the neurons' forward pass, in
    /// the same dendritic forward pass: a layer whose work can be shared asks the neurons'
    /// pass to do its part alongside (pai-core's convolutions: their product, taken beside the
    /// neurons' while the shared columns are in cache). The default does nothing; a layer of
    /// your own need not implement it.
    fn prepare_frozen(&self) {}

    /// For a layer whose output is `x Wᵀ + b` over the last axis of its one input (`Linear`):
    /// `W` as a `(neurons, inputs)` matrix sharing the layer's tensor id, and `b`. Dendrites
    /// of such a layer skip the module on the CPU (frozen ones, and in the gradient mode
    /// trained ones too): one matrix product, with the bias added inside the fused dendrite
    /// sum, which also gives the bias its gradient (dfdx's broadcast add is a third of a
    /// `Linear<64, 128>` forward at batch 32). The default, `None`, runs the module.
    ///
    /// # Errors
    /// Backend errors.
    #[allow(clippy::type_complexity)]
    fn affine(
        &self,
    ) -> std::result::Result<
        Option<Affine<'_, Self::Neurons, Self::Dtype, Self::Device>>,
        <Self::Device as HasErr>::Err,
    > {
        Ok(None)
    }
}

/// A layer's weight matrix `(neurons, inputs)` and its per-neuron bias (see
/// [`Convertible::affine`]).
pub struct Affine<'a, N: ConstDim, E: Float, D: Device<E>> {
    /// `(neurons, inputs)`, sharing the layer's values and tensor id (a reshape of a
    /// contiguous tensor does), so that its gradient is the layer's weight's.
    pub weight: Tensor<(usize, usize), E, D>,
    /// One value per neuron.
    pub bias: &'a Tensor<(N,), E, D>,
}

/// [`Convertible::try_copy`] for any dfdx module.
///
/// # Errors
/// Backend errors.
pub fn copy_module<E: Float, D: Device<E>, M>(module: &M, dev: &D) -> Result<M>
where
    M: TensorCollection<E, D, To<E, D> = M>,
{
    module.try_to_device(dev).map_err(Error::device)
}

/// [`Convertible::reinit`] for any dfdx module.
///
/// # Errors
/// Backend errors.
pub fn reinit_module<E: Float, D: Device<E>, M: TensorCollection<E, D>>(
    module: &mut M,
    std: f64,
    seed: u64,
) -> Result<()> {
    M::iter_tensors(&mut RecursiveWalker {
        m: module,
        f: &mut Reinit {
            std,
            rng: rand::rngs::StdRng::seed_from_u64(seed),
        },
    })
    .map_err(Error::device)?;
    Ok(())
}

struct Reinit {
    std: f64,
    rng: rand::rngs::StdRng,
}

impl<E: Float, D: Device<E>> TensorVisitor<E, D> for Reinit {
    type Viewer = ViewTensorMut;
    type Err = D::Err;
    type E2 = E;
    type D2 = D;

    fn visit<S: Shape>(
        &mut self,
        opts: TensorOptions<S, E, D>,
        t: &mut Tensor<S, E, D>,
    ) -> Result<Option<Tensor<S, E, D>>, D::Err> {
        if opts.do_gradient_update {
            let n = t.shape().num_elements();
            let values: Vec<E> = ScaledNormal { std: self.std }
                .sample_iter(&mut self.rng)
                .take(n)
                .collect();
            t.copy_from(&values);
        } else {
            (opts.reset)(t)?;
        }
        Ok(None)
    }
}

/// The three [`Convertible`] methods of a dfdx-style module (its tensors walked by its
/// `TensorCollection`), for an impl over `E` and `D`.
macro_rules! dfdx_module_methods {
    () => {
        fn try_copy(&self, dev: &D) -> Result<Self> {
            copy_module(self, dev)
        }
        fn reinit(&mut self, std: f64, seed: u64) -> Result<()> {
            reinit_module(self, std, seed)
        }
        fn visit_params<V: ParamVisitor<E, D>>(
            &mut self,
            how: ModuleParams<'_, E, D>,
            visitor: &mut V,
        ) -> Result<()> {
            visit_module(self, how, visitor)
        }
    };
}

impl<const I: usize, const O: usize, E: Float, D: Device<E>> Convertible for Linear<I, O, E, D> {
    type Dtype = E;
    type Device = D;
    type Neurons = Const<O>;
    type DefaultTags = NeuronsLast;

    dfdx_module_methods!();
    fn affine(&self) -> std::result::Result<Option<Affine<'_, Const<O>, E, D>>, D::Err> {
        let weight = self.weight.clone().try_reshape_like(&(O, I))?;
        Ok(Some(Affine {
            weight,
            bias: &self.bias,
        }))
    }
}

/// A linear layer without a bias (PyTorch's `Linear(.., bias=False)`): its dendrites are
/// bias-free copies. No shared product ([`Convertible::affine`] is for layers with a bias):
/// each dendrite runs as the layer itself.
impl<const I: usize, const O: usize, E: Float, D: Device<E>> Convertible
    for UnbiasedLinear<I, O, E, D>
{
    type Dtype = E;
    type Device = D;
    type Neurons = Const<O>;
    type DefaultTags = NeuronsLast;

    dfdx_module_methods!();
}
