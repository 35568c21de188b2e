//! [`PaiSequential`]: a layer and the normalisation after it, converted as one unit.
//!
//! The Python library groups a normalisation layer with the layer before it so that
//! dendrites are added once, after the normalisation. Here the group is a type:
//! `PaiSequential<Conv2d<..>, BatchNorm2D<..>>`. Its dendrites are copies of the whole group,
//! normalisation included, each with its own running statistics.
//!
//! A [`Norm`] trains with batch statistics (updating its running statistics) and infers with
//! its running statistics *on any tape*: a frozen group in the dendrite phase still passes the
//! loss gradient through to earlier layers, which dfdx's own `BatchNorm` cannot do (it infers
//! only without a tape).
//!
//! ```
//! use pai_core::layers::{Conv2d, PaiSequential};
//! use dfdx::prelude::*;
//! type Block = PaiSequential<Conv2d<1, 4, 3, f32, Cpu, 1, 1>, dfdx::nn::modules::BatchNorm2D<4, f32, Cpu>>;
//! let dev: Cpu = Default::default();
//! let mut block = Block::build(&dev);
//! let x: Tensor<(usize, Const<1>, usize, usize), f32, _> = dev.sample_normal_like(&(2, Const, 5, 5));
//! let train = block.forward_mut(x.leaky_trace()); // batch statistics
//! let infer = block.forward(x);                   // running statistics
//! assert_eq!(train.shape(), infer.shape());
//! ```

use dfdx::nn::modules::{BatchNorm1D, BatchNorm2D, LayerNorm1D};
use dfdx::nn::tensor_collection::{ModuleVisitor, TensorCollection};
use dfdx::nn::{Module, ModuleMut, ResetParams};
use dfdx::shapes::{Const, Dim, Dtype, HasShape, Shape};
use dfdx::tensor::{NoneTape, OwnedTape, Tape, Tensor};
use dfdx::tensor_ops::{Device, TryAdd, TryDiv, TryMul, TrySub};

use super::batchnorm_kernel::{self, BatchNorm};
use crate::axis::{Any, Batch, NeuronAxis, Neurons};
use crate::dendritic::{copy_module, Convertible};
use crate::error::Error;
use crate::float::Float;
use crate::host::on_host;
use crate::params::{visit_module, ModuleParams, ParamVisitor};

/// A normalisation for outputs of shape `S`.
pub trait Norm<S: Shape, E: Dtype, D: Device<E>> {
    /// Batch statistics; running statistics updated.
    ///
    /// # Errors
    /// Backend errors.
    fn forward_train(
        &mut self,
        x: Tensor<S, E, D, OwnedTape<E, D>>,
    ) -> Result<Tensor<S, E, D, OwnedTape<E, D>>, D::Err>;

    /// Running statistics, recording on whatever tape `x` carries.
    ///
    /// # Errors
    /// Backend errors.
    fn forward_infer<T: Tape<E, D>>(
        &self,
        x: Tensor<S, E, D, T>,
    ) -> Result<Tensor<S, E, D, T>, D::Err>;
}

/// `(x − mean) ⊙ (scale / sqrt(var + eps)) + bias` per channel, in dfdx's own order of
/// operations, so that the result is bit-identical to dfdx's inference.
fn batchnorm_infer<
    S: Shape,
    Tags: NeuronAxis<S, Neurons = Const<C>>,
    const C: usize,
    E: Float,
    D: Device<E>,
    T: Tape<E, D>,
>(
    x: Tensor<S, E, D, T>,
    scale: &Tensor<(Const<C>,), E, D>,
    bias: &Tensor<(Const<C>,), E, D>,
    mean: &Tensor<(Const<C>,), E, D>,
    var: &Tensor<(Const<C>,), E, D>,
    epsilon: f64,
) -> Result<Tensor<S, E, D, T>, D::Err> {
    let shape = *x.shape();
    let std = var.clone().try_add(E::of_f64(epsilon))?.try_sqrt()?;
    let scale = scale.clone().retaped::<T>().try_div(std)?;
    let x = x.try_sub(Tags::broadcast(mean.clone(), &shape)?)?;
    let x = x.try_mul(Tags::broadcast(scale, &shape)?)?;
    x.try_add(Tags::broadcast(bias.clone().retaped::<T>(), &shape)?)
}

macro_rules! batchnorm {
    ($bn:ident, ($($d:ident),*), $tags:ty) => {
        impl<B: Dim, $($d: Dim,)* const C: usize, E: Float, D: Device<E>> Norm<(B, Const<C>, $($d,)*), E, D> for $bn<C, E, D> {
            /// On the CPU by one op of its own (the same formula and gradient), elsewhere by
            /// dfdx. Either way a batch moves the running statistics only when it can give
            /// finite ones: not with a NaN or an infinity in it, nor with one value per channel
            /// (no variance to estimate). The op decides from the batch's statistics; after
            /// dfdx's pass, which does not show them, the running statistics are read back (a
            /// copy of `2C` values) and put back as they were if refused.
            fn forward_train(
                &mut self,
                x: Tensor<(B, Const<C>, $($d,)*), E, D, OwnedTape<E, D>>,
            ) -> Result<Tensor<(B, Const<C>, $($d,)*), E, D, OwnedTape<E, D>>, D::Err> {
                if on_host::<E, D>() {
                    let bn = BatchNorm {
                        scale: &self.scale,
                        bias: &self.bias,
                        running_mean: &mut self.running_mean,
                        running_var: &mut self.running_var,
                        epsilon: self.epsilon,
                        momentum: self.momentum,
                    };
                    return batchnorm_kernel::train::<_, $tags, C, E, D>(x, bn);
                }
                let n = x.shape().num_elements() / C.max(1);
                // clones share the buffers; the update writes fresh ones
                let before = (self.running_mean.clone(), self.running_var.clone());
                let y = self.try_forward_mut(x)?;
                let (mean, var) = (self.running_mean.as_vec(), self.running_var.as_vec());
                if !batchnorm_kernel::updates_statistics(n, &mean, &var) {
                    (self.running_mean, self.running_var) = before;
                }
                Ok(y)
            }
            fn forward_infer<T: Tape<E, D>>(
                &self,
                x: Tensor<(B, Const<C>, $($d,)*), E, D, T>,
            ) -> Result<Tensor<(B, Const<C>, $($d,)*), E, D, T>, D::Err> {
                batchnorm_infer::<_, $tags, C, E, D, T>(
                    x, &self.scale, &self.bias, &self.running_mean, &self.running_var, self.epsilon,
                )
            }
        }
    };
}
batchnorm!(BatchNorm1D, (), (Batch, Neurons));
batchnorm!(BatchNorm1D, (L), (Batch, Neurons, Any));
batchnorm!(BatchNorm2D, (H, W), (Batch, Neurons, Any, Any));

impl<B: Dim, const M: usize, E: Float, D: Device<E>> Norm<(B, Const<M>), E, D>
    for LayerNorm1D<M, E, D>
{
    fn forward_train(
        &mut self,
        x: Tensor<(B, Const<M>), E, D, OwnedTape<E, D>>,
    ) -> Result<Tensor<(B, Const<M>), E, D, OwnedTape<E, D>>, D::Err> {
        self.try_forward(x)
    }
    fn forward_infer<T: Tape<E, D>>(
        &self,
        x: Tensor<(B, Const<M>), E, D, T>,
    ) -> Result<Tensor<(B, Const<M>), E, D, T>, D::Err> {
        self.try_forward(x)
    }
}

/// A layer followed by a normalisation, converted as one unit (see the [module docs](self)).
#[derive(Debug, Clone)]
pub struct PaiSequential<L, N> {
    /// The layer (its output channels are the neurons).
    pub layer: L,
    /// The normalisation after it.
    pub norm: N,
}

/// A layer and its normalisation, as a plain model holds them, become one group.
impl<L, N> From<(L, N)> for PaiSequential<L, N> {
    fn from((layer, norm): (L, N)) -> Self {
        Self { layer, norm }
    }
}

impl<L, N, E: Dtype, D: Device<E>> TensorCollection<E, D> for PaiSequential<L, N>
where
    L: TensorCollection<E, D>,
    N: TensorCollection<E, D>,
{
    type To<E2: Dtype, D2: Device<E2>> = PaiSequential<L::To<E2, D2>, N::To<E2, D2>>;

    fn iter_tensors<V: ModuleVisitor<Self, E, D>>(
        visitor: &mut V,
    ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        visitor.visit_fields(
            (
                Self::module("layer", |s| &s.layer, |s| &mut s.layer),
                Self::module("norm", |s| &s.norm, |s| &mut s.norm),
            ),
            |(layer, norm)| PaiSequential { layer, norm },
        )
    }
}

impl<L, N, Si: Shape, So: Shape, E: Dtype, D: Device<E>, T: Tape<E, D>> Module<Tensor<Si, E, D, T>>
    for PaiSequential<L, N>
where
    L: Module<Tensor<Si, E, D, T>, Output = Tensor<So, E, D, T>, Error = D::Err>,
    N: Norm<So, E, D>,
{
    type Output = Tensor<So, E, D, T>;
    type Error = D::Err;

    /// Inference: the normalisation uses its running statistics.
    fn try_forward(&self, x: Tensor<Si, E, D, T>) -> Result<Self::Output, D::Err> {
        self.norm.forward_infer(self.layer.try_forward(x)?)
    }
}

impl<L, N, Si: Shape, So: Shape, E: Dtype, D: Device<E>>
    ModuleMut<Tensor<Si, E, D, OwnedTape<E, D>>> for PaiSequential<L, N>
where
    L: ModuleMut<
        Tensor<Si, E, D, OwnedTape<E, D>>,
        Output = Tensor<So, E, D, OwnedTape<E, D>>,
        Error = D::Err,
    >,
    N: Norm<So, E, D>,
{
    type Output = Tensor<So, E, D, OwnedTape<E, D>>;
    type Error = D::Err;

    /// Training: batch statistics, running statistics updated.
    fn try_forward_mut(
        &mut self,
        x: Tensor<Si, E, D, OwnedTape<E, D>>,
    ) -> Result<Self::Output, D::Err> {
        let y = self.layer.try_forward_mut(x)?;
        self.norm.forward_train(y)
    }
}

impl<L, N, Si: Shape, So: Shape, E: Dtype, D: Device<E>> ModuleMut<Tensor<Si, E, D, NoneTape>>
    for PaiSequential<L, N>
where
    L: Module<Tensor<Si, E, D, NoneTape>, Output = Tensor<So, E, D, NoneTape>, Error = D::Err>,
    N: Norm<So, E, D>,
{
    type Output = Tensor<So, E, D, NoneTape>;
    type Error = D::Err;

    /// Without a tape there is nothing to train: inference.
    fn try_forward_mut(&mut self, x: Tensor<Si, E, D, NoneTape>) -> Result<Self::Output, D::Err> {
        self.try_forward(x)
    }
}

impl<L, N> Convertible for PaiSequential<L, N>
where
    L: Convertible + TensorCollection<L::Dtype, L::Device, To<L::Dtype, L::Device> = L>,
    N: TensorCollection<L::Dtype, L::Device, To<L::Dtype, L::Device> = N> + 'static,
{
    type Dtype = L::Dtype;
    type Device = L::Device;
    type Neurons = L::Neurons;
    type DefaultTags = L::DefaultTags;

    fn try_copy(&self, dev: &L::Device) -> crate::error::Result<Self> {
        copy_module(self, dev)
    }

    /// The layer is drawn afresh; the normalisation starts from its defaults (unit scale,
    /// zero shift, fresh running statistics), so a new dendrite's output is normalised.
    fn reinit(&mut self, std: f64, seed: u64) -> crate::error::Result<()> {
        self.layer.reinit(std, seed)?;
        self.norm.try_reset_params().map_err(Error::device)
    }

    fn visit_params<V: ParamVisitor<L::Dtype, L::Device>>(
        &mut self,
        how: ModuleParams<'_, L::Dtype, L::Device>,
        visitor: &mut V,
    ) -> crate::error::Result<()> {
        visit_module(self, how, visitor)
    }

    /// The layer's (it sees the group's input).
    fn prepare_frozen(&self) {
        self.layer.prepare_frozen();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dfdx::prelude::{BuildModule, Cpu, Rank0, SampleTensor, SumTo, TensorFromVec, Trace};
    use dfdx::tensor_ops::Backward;

    #[test]
    fn a_batch_of_one_value_per_channel_leaves_the_running_statistics_as_they_were() {
        let dev: Cpu = Default::default();
        let mut bn = BatchNorm1D::<3, f64, Cpu>::build(&dev);
        bn.bias = dev.sample_normal();
        let x: Tensor<(usize, Const<3>), f64, _> = dev.sample_normal_like(&(4, Const));
        let _ = Norm::forward_train(&mut bn, x.leaky_traced()).unwrap();
        let (mean, var) = (bn.running_mean.as_vec(), bn.running_var.as_vec());
        assert_ne!(var, vec![1.0; 3], "a batch of 4 moves the statistics");
        let one: Tensor<(usize, Const<3>), f64, _> = dev.sample_normal_like(&(1, Const));
        let y = Norm::forward_train(&mut bn, one.leaky_traced()).unwrap();
        // one value per channel is its own mean: the output is the bias
        assert_eq!(y.retaped::<NoneTape>().as_vec(), bn.bias.as_vec());
        assert_eq!(bn.running_mean.as_vec(), mean);
        assert_eq!(bn.running_var.as_vec(), var);
        // a 1x1 map at batch 1 too
        let mut bn2 = BatchNorm2D::<3, f64, Cpu>::build(&dev);
        let map: Tensor<(usize, Const<3>, usize, usize), f64, _> =
            dev.sample_normal_like(&(1, Const, 1, 1));
        let _ = Norm::forward_train(&mut bn2, map.leaky_traced()).unwrap();
        assert_eq!(bn2.running_var.as_vec(), vec![1.0; 3]);
        assert_eq!(bn2.running_mean.as_vec(), vec![0.0; 3]);
    }

    #[test]
    fn a_batch_with_a_nan_leaves_the_running_statistics_as_they_were() {
        let dev: Cpu = Default::default();
        let mut bn = BatchNorm2D::<3, f64, Cpu>::build(&dev);
        let mut v = dev
            .sample_normal_like::<(usize, Const<3>, usize, usize)>(&(2, Const, 2, 2))
            .as_vec();
        for bad in [f64::NAN, f64::INFINITY] {
            v[5] = bad;
            let x = dev.tensor_from_vec(v.clone(), (2, Const::<3>, 2, 2));
            let y = Norm::forward_train(&mut bn, x.leaky_traced()).unwrap();
            // the output carries it (the optimizer refuses the gradients it gives) ...
            assert!(y.as_vec().iter().any(|y| !y.is_finite()), "{bad}");
            // ... the running statistics do not
            assert_eq!(bn.running_mean.as_vec(), vec![0.0; 3], "{bad}");
            assert_eq!(bn.running_var.as_vec(), vec![1.0; 3], "{bad}");
        }
    }

    #[test]
    fn taped_inference_is_dfdx_inference_bit_for_bit_and_passes_gradients() {
        let dev: Cpu = Default::default();
        let mut bn = BatchNorm2D::<3, f64, Cpu>::build(&dev);
        let x: Tensor<(usize, Const<3>, usize, usize), f64, _> =
            dev.sample_normal_like(&(4, Const, 2, 2));
        // move the running statistics away from their defaults
        for _ in 0..5 {
            let _ = bn.forward_mut(x.leaky_trace());
        }
        let ours = Norm::forward_infer(&bn, x.clone()).unwrap().as_vec();
        // bit-identical: pretrained models with normalisation convert without any change
        assert_eq!(ours, bn.forward(x.clone()).as_vec());
        let t = x.leaky_traced();
        let h = t.retaped::<NoneTape>();
        let g = Norm::forward_infer(&bn, t)
            .unwrap()
            .sum::<Rank0, _>()
            .backward();
        // d/dx of a per-channel affine map is its slope: scale / sqrt(var + eps)
        let slope: Vec<f64> = bn
            .running_var
            .as_vec()
            .iter()
            .map(|v| 1.0 / (v + bn.epsilon).sqrt())
            .collect();
        let dx = g.get(&h).as_vec();
        assert!((dx[0] - slope[0]).abs() < 1e-12 && (dx[5] - slope[1]).abs() < 1e-12);
    }
}
