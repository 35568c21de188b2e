//! Convolutions: [`Conv1d`], [`Conv2d`], [`Conv3d`].
//!
//! `y[b, o, q] = bias[o] + Σ_{c, k} weight[o, c, k] · x[b, c, q·S + k·L − P]` (zero outside),
//! over one, two or three spatial axes. Channels are const dims, so the neuron axis (axis 1,
//! the output channels) stays typed; spatial sizes are run-time dims. On the CPU it is computed
//! by im2col and matrix products as one op (`layers/im2col.rs`); on other devices as an unfold
//! by `gather` followed by one matmul (see [`super::unfold`]), which is also the reference the
//! CPU kernel is tested against.
//!
//! Generics: `I` input channels, `O` output channels, `K` kernel size (every axis), `E` dtype,
//! `D` device, then `S` stride (default 1), `P` zero padding (default 0), `L` dilation
//! (default 1). Weights follow `PyTorch`'s layout `(O, I, K, ...)`, initialised uniform in
//! `±1/sqrt(I·K^n)`, so `PyTorch` weights load as they are. Grouped convolution is not provided.
//!
//! ```
//! use pai_core::layers::Conv2d;
//! use dfdx::prelude::*;
//! let dev: Cpu = Default::default();
//! // 3x3, padding 1: "same" output size
//! let conv = Conv2d::<1, 4, 3, f32, Cpu, 1, 1>::build(&dev);
//! let x: Tensor<(usize, Const<1>, usize, usize), f32, _> = dev.sample_normal_like(&(2, Const, 8, 8));
//! let y = conv.forward(x);
//! assert_eq!(y.shape(), &(2, Const::<4>, 8, 8));
//! ```

use dfdx::nn::tensor_collection::{ModuleVisitor, TensorCollection, TensorOptions};
use dfdx::nn::{Module, NonMutableModule};
use dfdx::shapes::{Axes2, Axes3, Const, Dim, Dtype, HasShape, Rank1, Rank3, Rank4, Rank5, Shape};
use dfdx::tensor::{Tape, Tensor, ZerosTensor};
use dfdx::tensor_ops::{BroadcastTo, Device, PermuteTo, ReshapeTo, TryAdd, TryMatMul};

use super::im2col::Geometry;
use super::unfold::{unfold, Window};
use crate::axis::{Any, Batch, Neurons};
use crate::dendritic::{copy_module, reinit_module, Convertible};
use crate::float::Float;
use crate::host::{gemm_runs, memo, on_host};
use crate::params::{visit_module, ModuleParams, ParamVisitor};

/// How a convolution is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    /// The CPU kernel where it applies, the gather unfold elsewhere.
    Fastest,
    /// The gather unfold.
    Gather,
}

/// Whether the CPU kernel (`im2col/`) runs here: on the host, in a dtype `gemm` multiplies.
fn cpu_kernel<E: Float, D: Device<E>>() -> bool {
    on_host::<E, D>() && gemm_runs::<E>()
}

/// Unfolds by `gather`, multiplies by the flattened weight, adds the bias: `(B, O, positions)`
/// from dfdx ops, on any device; the reference the CPU kernel is tested against.
pub(super) fn convolve_by_gather<
    B: Dim,
    const I: usize,
    const O: usize,
    E: Float,
    D: Device<E>,
    T: Tape<E, D>,
>(
    x: Tensor<(B, Const<I>, usize), E, D, T>,
    weight: Tensor<(Const<O>, usize), E, D, T>,
    bias: Tensor<(Const<O>,), E, D, T>,
    idx: Vec<usize>,
    offsets: usize,
    positions: usize,
) -> Result<Tensor<(B, Const<O>, usize), E, D, T>, D::Err> {
    let b = x.shape().0;
    let cols = unfold(x, idx, offsets, positions, E::of_f64(0.0))?;
    let cols = cols.try_reshape_like(&(b, positions, I * offsets))?;
    let w = weight.try_permute::<(usize, Const<O>), Axes2<1, 0>>()?;
    let y = cols.try_matmul(w)?;
    let bias = bias.try_broadcast_like::<_, Axes2<0, 1>>(&(b, positions, Const::<O>))?;
    y.try_add(bias)?
        .try_permute::<(B, Const<O>, usize), Axes3<0, 2, 1>>()
}

/// `PyTorch`'s default: uniform in `±1/sqrt(fan_in)`.
fn fan_in_uniform<S: dfdx::shapes::Shape, E: Float, D: Device<E>>(
    t: &mut Tensor<S, E, D>,
    fan_in: usize,
) -> Result<(), D::Err> {
    let b = E::ONE / E::of_f64(fan_in as f64).sqrt();
    t.try_fill_with_distr(rand_distr::Uniform::new(-b, b))
}

macro_rules! conv {
    (
        $(#[$doc:meta])*
        $name:ident, rank $n:literal, weight $wshape:ty, input ($($sp:ident),+), tags $tags:ty, output $out:ty
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name<
            const I: usize,
            const O: usize,
            const K: usize,
            E: Dtype,
            D: dfdx::tensor::Storage<E>,
            const S: usize = 1,
            const P: usize = 0,
            const L: usize = 1,
            const BIAS: bool = true,
        > {
            /// `(O, I, K, ...)`.
            pub weight: Tensor<$wshape, E, D>,
            /// `(O,)`; zeros with `BIAS = false` (PyTorch's `bias=False`): then it is not a
            /// parameter (not trained, saved or loaded).
            pub bias: Tensor<Rank1<O>, E, D>,
        }

        impl<const I: usize, const O: usize, const K: usize, E: Dtype, D: dfdx::tensor::Storage<E>, const S: usize, const P: usize, const L: usize, const BIAS: bool>
            $name<I, O, K, E, D, S, P, L, BIAS>
        {
            /// The window geometry.
            pub const WINDOW: Window = Window { kernel: K, stride: S, padding: P, dilation: L };
        }

        impl<const I: usize, const O: usize, const K: usize, E: Float, D: Device<E>, const S: usize, const P: usize, const L: usize, const BIAS: bool>
            TensorCollection<E, D> for $name<I, O, K, E, D, S, P, L, BIAS>
        {
            type To<E2: Dtype, D2: Device<E2>> = $name<I, O, K, E2, D2, S, P, L, BIAS>;

            fn iter_tensors<V: ModuleVisitor<Self, E, D>>(
                visitor: &mut V,
            ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
                let weight = Self::tensor(
                    "weight",
                    |s| &s.weight,
                    |s| &mut s.weight,
                    TensorOptions::reset_with(|t| fan_in_uniform(t, I * K.pow($n))),
                );
                if !BIAS {
                    // no bias: zeros, never visited (not trained, saved or loaded)
                    return visitor.visit_fields((weight,), |(weight,)| {
                        let bias = weight.device().zeros();
                        $name { weight, bias }
                    });
                }
                visitor.visit_fields(
                    (
                        weight,
                        Self::tensor(
                            "bias",
                            |s| &s.bias,
                            |s| &mut s.bias,
                            TensorOptions::reset_with(|t| fan_in_uniform(t, I * K.pow($n))),
                        ),
                    ),
                    |(weight, bias)| $name { weight, bias },
                )
            }
        }

        impl<const I: usize, const O: usize, const K: usize, E: Dtype, D: dfdx::tensor::Storage<E>, const S: usize, const P: usize, const L: usize, const BIAS: bool>
            NonMutableModule for $name<I, O, K, E, D, S, P, L, BIAS>
        {
        }

        impl<B: Dim, $($sp: Dim,)+ const I: usize, const O: usize, const K: usize, E: Float, D: Device<E>, T: Tape<E, D>, const S: usize, const P: usize, const L: usize, const BIAS: bool>
            Module<Tensor<(B, Const<I>, $($sp,)+), E, D, T>> for $name<I, O, K, E, D, S, P, L, BIAS>
        {
            type Output = Tensor<$out, E, D, T>;
            type Error = D::Err;

            fn try_forward(&self, x: Tensor<(B, Const<I>, $($sp,)+), E, D, T>) -> Result<Self::Output, D::Err> {
                self.convolve_with(x, Path::Fastest)
            }
        }

        impl<const I: usize, const O: usize, const K: usize, E: Float, D: Device<E>, const S: usize, const P: usize, const L: usize, const BIAS: bool>
            $name<I, O, K, E, D, S, P, L, BIAS>
        {
            /// The forward pass by the `gather` unfold and dfdx ops, as other devices run it:
            /// the reference the CPU kernel is tested against (slower on the CPU).
            ///
            /// # Errors
            /// Backend errors.
            pub fn try_forward_by_gather<B: Dim, $($sp: Dim,)+ T: Tape<E, D>>(
                &self,
                x: Tensor<(B, Const<I>, $($sp,)+), E, D, T>,
            ) -> Result<Tensor<$out, E, D, T>, D::Err> {
                self.convolve_with(x, Path::Gather)
            }

            fn convolve_with<B: Dim, $($sp: Dim,)+ T: Tape<E, D>>(
                &self,
                x: Tensor<(B, Const<I>, $($sp,)+), E, D, T>,
                path: Path,
            ) -> Result<Tensor<$out, E, D, T>, D::Err> {
                let shape = *x.shape();
                let dims = shape.concrete();
                let spatial: Vec<usize> = dims[2..].to_vec();
                let (out_dims, idx) = Self::WINDOW.index(&spatial);
                let positions: usize = out_dims.iter().product();
                let numel: usize = spatial.iter().product();
                let x = x.try_reshape_like(&(shape.0, Const::<I>, numel))?;
                let weight = self.weight.clone().retaped::<T>().try_reshape_like(&(Const::<O>, I * K.pow($n)))?;
                let bias = self.bias.clone().retaped::<T>();
                // the CPU kernel where it applies (`im2col.rs`), the gather unfold elsewhere
                let y = if path == Path::Gather || !cpu_kernel::<E, D>() {
                    convolve_by_gather(x, weight, bias, idx, K.pow($n), positions)?
                } else {
                    let geometry = Geometry::new(I, numel, K.pow($n), positions, &idx);
                    super::im2col::convolve(x, weight, bias, geometry)?
                };
                y.try_reshape_like(&conv!(@out shape.0, out_dims, $($sp),+))
            }
        }

        impl<const I: usize, const O: usize, const K: usize, E: Float, D: Device<E>, const S: usize, const P: usize, const L: usize, const BIAS: bool>
            Convertible for $name<I, O, K, E, D, S, P, L, BIAS>
        {
            type Dtype = E;
            type Device = D;
            type Neurons = Const<O>;
            type DefaultTags = $tags;

            fn try_copy(&self, dev: &D) -> crate::error::Result<Self> {
                copy_module(self, dev)
            }
            fn reinit(&mut self, std: f64, seed: u64) -> crate::error::Result<()> {
                reinit_module(self, std, seed)
            }
            fn visit_params<V: ParamVisitor<E, D>>(&mut self, how: ModuleParams<'_, E, D>, visitor: &mut V) -> crate::error::Result<()> {
                visit_module(self, how, visitor)
            }
            /// On the CPU kernel's path: the neurons' convolution takes this copy's product
            /// beside its own (`host::memo`), matched later by these weights' bits.
            fn prepare_frozen(&self) {
                if cpu_kernel::<E, D>() && memo::open() {
                    memo::want(self.weight.as_vec(), self.bias.as_vec());
                }
            }
        }
    };
    (@out $b:expr, $o:ident, $s1:ident) => { ($b, Const::<O>, $o[0]) };
    (@out $b:expr, $o:ident, $s1:ident, $s2:ident) => { ($b, Const::<O>, $o[0], $o[1]) };
    (@out $b:expr, $o:ident, $s1:ident, $s2:ident, $s3:ident) => { ($b, Const::<O>, $o[0], $o[1], $o[2]) };
}

conv!(
    /// 1-d convolution: `(B, I, Len) -> (B, O, Len')`.
    Conv1d, rank 1, weight Rank3<O, I, K>, input (S1), tags (Batch, Neurons, Any),
    output (B, Const<O>, usize)
);
conv!(
    /// 2-d convolution: `(B, I, H, W) -> (B, O, H', W')`.
    Conv2d, rank 2, weight Rank4<O, I, K, K>, input (S1, S2), tags (Batch, Neurons, Any, Any),
    output (B, Const<O>, usize, usize)
);
conv!(
    /// 3-d convolution: `(B, I, D, H, W) -> (B, O, D', H', W')`.
    Conv3d, rank 3, weight Rank5<O, I, K, K, K>, input (S1, S2, S3), tags (Batch, Neurons, Any, Any, Any),
    output (B, Const<O>, usize, usize, usize)
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{check_gradient, check_param};
    use dfdx::prelude::*;

    /// Direct loops over every output element: the definition, nothing shared with the layer.
    fn reference_2d(
        x: &[f64],
        (b, c, h, w): (usize, usize, usize, usize),
        weight: &[f64],
        bias: &[f64],
        o: usize,
        k: usize,
        (s, p, l): (usize, usize, usize),
    ) -> (Vec<f64>, usize, usize) {
        let span = l * (k - 1) + 1;
        let ho = (h + 2 * p - span) / s + 1;
        let wo = (w + 2 * p - span) / s + 1;
        let mut y = vec![0.0; b * o * ho * wo];
        for bi in 0..b {
            for oi in 0..o {
                for i in 0..ho {
                    for j in 0..wo {
                        let mut acc = bias[oi];
                        for ci in 0..c {
                            for ki in 0..k {
                                for kj in 0..k {
                                    let r = (i * s + ki * l) as isize - p as isize;
                                    let q = (j * s + kj * l) as isize - p as isize;
                                    if r >= 0 && q >= 0 && (r as usize) < h && (q as usize) < w {
                                        acc += weight[((oi * c + ci) * k + ki) * k + kj]
                                            * x[((bi * c + ci) * h + r as usize) * w + q as usize];
                                    }
                                }
                            }
                        }
                        y[((bi * o + oi) * ho + i) * wo + j] = acc;
                    }
                }
            }
        }
        (y, ho, wo)
    }

    #[test]
    fn conv2d_matches_direct_loops_for_stride_padding_dilation() {
        let dev: Cpu = Default::default();
        let x: Tensor<(usize, Const<2>, usize, usize), f64, _> =
            dev.sample_normal_like(&(2, Const, 7, 6));
        fn check<const S: usize, const P: usize, const L: usize, const BIAS: bool>(
            dev: &Cpu,
            x: &Tensor<(usize, Const<2>, usize, usize), f64, Cpu>,
        ) {
            let conv = Conv2d::<2, 3, 3, f64, Cpu, S, P, L, BIAS>::build(dev);
            let y = conv.forward(x.clone());
            let (want, ho, wo) = reference_2d(
                &x.as_vec(),
                (2, 2, 7, 6),
                &conv.weight.as_vec(),
                &conv.bias.as_vec(),
                3,
                3,
                (S, P, L),
            );
            assert_eq!(y.shape(), &(2, Const::<3>, ho, wo), "S={S} P={P} L={L}");
            for (a, b) in y.as_vec().iter().zip(&want) {
                assert!(
                    (a - b).abs() < 1e-12,
                    "S={S} P={P} L={L} BIAS={BIAS}: {a} vs {b}"
                );
            }
        }
        check::<1, 0, 1, true>(&dev, &x);
        check::<1, 1, 1, true>(&dev, &x);
        check::<2, 1, 1, true>(&dev, &x);
        check::<1, 2, 2, true>(&dev, &x);
        check::<3, 0, 2, true>(&dev, &x);
        check::<2, 1, 1, false>(&dev, &x);
    }

    #[test]
    fn a_bias_free_conv_has_only_its_weight_as_a_parameter() {
        use dfdx::nn::NumParams;
        let dev: Cpu = Default::default();
        let free = Conv2d::<2, 3, 3, f64, Cpu, 1, 1, 1, false>::build(&dev);
        let with = Conv2d::<2, 3, 3, f64, Cpu, 1, 1>::build(&dev);
        assert_eq!(free.num_trainable_params(), 3 * 2 * 3 * 3);
        assert_eq!(with.num_trainable_params(), 3 * 2 * 3 * 3 + 3);
        assert!(free.bias.as_vec().iter().all(|b| *b == 0.0));
        // a copy (as a dendrite is made) keeps the zero bias
        let copy = free.try_copy(&dev).unwrap();
        assert!(copy.bias.as_vec().iter().all(|b| *b == 0.0));
    }

    #[test]
    fn conv1d_and_conv3d_agree_with_conv2d_on_degenerate_shapes() {
        let dev: Cpu = Default::default();
        // a 1-d signal is a 2-d image of height 1 with a kernel that only has one useful row
        let c1 = Conv1d::<2, 3, 3, f64, Cpu, 1, 1>::build(&dev);
        let x: Tensor<(usize, Const<2>, usize), f64, _> = dev.sample_normal_like(&(2, Const, 9));
        let y1 = c1.forward(x.clone()).as_vec();
        let mut w = vec![0.0; 3 * 2 * 3 * 3];
        for (i, v) in c1.weight.as_vec().into_iter().enumerate() {
            // (o, c, k) -> (o, c, row 1, k)
            let (oc, k) = (i / 3, i % 3);
            w[oc * 9 + 3 + k] = v;
        }
        let (want, _, _) = reference_2d(
            &x.as_vec(),
            (2, 2, 1, 9),
            &w,
            &c1.bias.as_vec(),
            3,
            3,
            (1, 1, 1),
        );
        // the 2-d reference with padding 1 pads rows too: take the middle output row
        assert_eq!(y1.len(), want.len());
        for (a, b) in y1.iter().zip(&want) {
            assert!((a - b).abs() < 1e-12);
        }
        // 3-d with depth 1 and kernel 1 is a per-pixel linear map
        let c3 = Conv3d::<2, 3, 1, f64, Cpu>::build(&dev);
        let x3: Tensor<(usize, Const<2>, usize, usize, usize), f64, _> =
            dev.sample_normal_like(&(1, Const, 1, 2, 2));
        let y3 = c3.forward(x3.clone()).as_vec();
        let (xv, wv, bv) = (x3.as_vec(), c3.weight.as_vec(), c3.bias.as_vec());
        for o in 0..3 {
            for p in 0..4 {
                let want = bv[o] + wv[o * 2] * xv[p] + wv[o * 2 + 1] * xv[4 + p];
                assert!((y3[o * 4 + p] - want).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn conv2d_gradients_match_finite_differences_on_overlapping_windows() {
        let dev: Cpu = Default::default();
        let conv = Conv2d::<2, 2, 3, f64, Cpu, 1, 1, 1>::build(&dev);
        let shape = (2usize, Const::<2>, 4usize, 5usize);
        let x: Tensor<(usize, Const<2>, usize, usize), f64, _> = dev.sample_normal_like(&shape);
        let g: Tensor<(usize, Const<2>, usize, usize), f64, _> = dev.sample_normal_like(&shape);
        // a tensor used twice: the input also feeds the loss directly
        let loss_of = |conv: &Conv2d<2, 2, 3, f64, Cpu, 1, 1, 1>,
                       x: Tensor<(usize, Const<2>, usize, usize), f64, Cpu>| {
            let y = conv.forward(x.clone());
            ((y * g.clone()).sum::<Rank0, _>() + x.square().sum::<Rank0, _>()).array()
        };
        let traced = x.clone().leaky_traced();
        let handle = traced.retaped::<NoneTape>();
        let y = conv.forward(traced.retaped::<OwnedTape<f64, Cpu>>());
        let loss = (y * g.clone()).sum::<Rank0, _>() + traced.square().sum::<Rank0, _>();
        let grads = loss.backward();
        let dx = grads.get(&handle).as_vec();
        check_gradient(
            "x",
            |v| loss_of(&conv, dev.tensor_from_vec(v.to_vec(), shape)),
            &x.as_vec(),
            &dx,
            1e-6,
        );
        let loss_at = |c: &Conv2d<2, 2, 3, f64, Cpu, 1, 1, 1>| loss_of(c, x.clone());
        check_param("weight", &conv, |c| &mut c.weight, &grads, loss_at);
        check_param("bias", &conv, |c| &mut c.bias, &grads, loss_at);
    }
}
