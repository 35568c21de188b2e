//! Pooling and flattening: [`MaxPool2d`], [`AvgPool2d`], [`Flatten`]. Parameter-free.
//!
//! Pools take `(B, C, H, W)` with a `K`x`K` window, stride `S` (default `K`) and padding `P`
//! (default 0); max pooling pads with `-inf`, average pooling with zeros counted in the mean
//! (`PyTorch`'s defaults). On the CPU a direct kernel (`layers/pool_kernel.rs`); elsewhere the
//! same `gather` unfold as the convolutions, which is also the kernel's reference.

use dfdx::nn::{Module, NonMutableModule, ZeroSizedModule};
use dfdx::shapes::{Axes3, Axis, Const, Dim, HasShape};
use dfdx::tensor::{Tape, Tensor};
use dfdx::tensor_ops::{Device, MaxTo, MeanTo, PermuteTo, ReshapeTo};

use super::im2col::Geometry;
use super::pool_kernel::{self, Reduce};
use super::unfold::{unfold, Window};
use crate::float::Float;
use crate::host::on_host;

macro_rules! pool {
    ($(#[$doc:meta])* $name:ident, $pad:expr, $reduce:ident, $kernel:ident) => {
        $(#[$doc])*
        #[derive(Debug, Default, Clone, Copy)]
        pub struct $name<const K: usize, const S: usize = K, const P: usize = 0>;

        impl<const K: usize, const S: usize, const P: usize> ZeroSizedModule for $name<K, S, P> {}
        impl<const K: usize, const S: usize, const P: usize> NonMutableModule for $name<K, S, P> {}

        impl<B: Dim, const C: usize, H: Dim, W: Dim, E: Float, D: Device<E>, T: Tape<E, D>, const K: usize, const S: usize, const P: usize>
            Module<Tensor<(B, Const<C>, H, W), E, D, T>> for $name<K, S, P>
        {
            type Output = Tensor<(B, Const<C>, usize, usize), E, D, T>;
            type Error = D::Err;

            fn try_forward(&self, x: Tensor<(B, Const<C>, H, W), E, D, T>) -> Result<Self::Output, D::Err> {
                self.pool_with(x, on_host::<E, D>())
            }
        }

        impl<const K: usize, const S: usize, const P: usize> $name<K, S, P> {
            /// The pooling by the `gather` unfold and dfdx ops, as other devices run it: the
            /// reference the CPU kernel is tested against (slower on the CPU).
            ///
            /// # Errors
            /// Backend errors.
            pub fn try_forward_by_gather<B: Dim, const C: usize, H: Dim, W: Dim, E: Float, D: Device<E>, T: Tape<E, D>>(
                &self,
                x: Tensor<(B, Const<C>, H, W), E, D, T>,
            ) -> Result<Tensor<(B, Const<C>, usize, usize), E, D, T>, D::Err> {
                self.pool_with(x, false)
            }

            fn pool_with<B: Dim, const C: usize, H: Dim, W: Dim, E: Float, D: Device<E>, T: Tape<E, D>>(
                &self,
                x: Tensor<(B, Const<C>, H, W), E, D, T>,
                kernel: bool,
            ) -> Result<Tensor<(B, Const<C>, usize, usize), E, D, T>, D::Err> {
                let (b, _, h, w) = *x.shape();
                let window = Window { kernel: K, stride: S, padding: P, dilation: 1 };
                let (out, idx) = window.index(&[h.size(), w.size()]);
                let positions = out[0] * out[1];
                let numel = h.size() * w.size();
                let x = x.try_reshape_like(&(b, Const::<C>, numel))?;
                if kernel {
                    let geometry = Geometry::new(1, numel, K * K, positions, &idx);
                    return pool_kernel::pool(x, geometry, Reduce::$kernel)?
                        .try_reshape_like(&(b, Const::<C>, out[0], out[1]));
                }
                let cols = unfold(x, idx, K * K, positions, $pad)?;
                let pooled = cols.$reduce::<(B, usize, Const<C>), Axis<3>>()?;
                pooled
                    .try_permute::<(B, Const<C>, usize), Axes3<0, 2, 1>>()?
                    .try_reshape_like(&(b, Const::<C>, out[0], out[1]))
            }
        }
    };
}

pool!(
    /// Max pooling over `K`x`K` windows.
    MaxPool2d, E::neg_infinity(), try_max, Max
);
pool!(
    /// Average pooling over `K`x`K` windows.
    AvgPool2d, E::of_f64(0.0), try_mean, Mean
);

/// Flattens every axis but the first into `N` features: `(B, C, H, W) -> (B, N)` (also rank 3
/// and 5), so a `Linear<N, _>` can follow a convolution whose spatial sizes are run-time dims.
///
/// # Panics
/// When the input does not hold `N` values per example: the model's `N` and the data disagree,
/// a bug in the model definition; the message gives the `N` to write.
#[derive(Debug, Default, Clone, Copy)]
pub struct Flatten<const N: usize>;

impl<const N: usize> ZeroSizedModule for Flatten<N> {}
impl<const N: usize> NonMutableModule for Flatten<N> {}

fn flatten<
    S: dfdx::shapes::Shape,
    B: Dim,
    const N: usize,
    E: Float,
    D: Device<E>,
    T: Tape<E, D>,
>(
    x: Tensor<S, E, D, T>,
    batch: B,
) -> Result<Tensor<(B, Const<N>), E, D, T>, D::Err> {
    let per_example = x.shape().num_elements() / batch.size().max(1);
    assert!(
        per_example == N,
        "Flatten<{N}>: the input has {per_example} values per example; write Flatten<{per_example}>"
    );
    x.try_reshape_like(&(batch, Const::<N>))
}

macro_rules! flatten_rank {
    ($($d:ident),+) => {
        impl<B: Dim, $($d: Dim,)+ const N: usize, E: Float, D: Device<E>, T: Tape<E, D>>
            Module<Tensor<(B, $($d,)+), E, D, T>> for Flatten<N>
        {
            type Output = Tensor<(B, Const<N>), E, D, T>;
            type Error = D::Err;
            fn try_forward(&self, x: Tensor<(B, $($d,)+), E, D, T>) -> Result<Self::Output, D::Err> {
                let batch = x.shape().0;
                flatten(x, batch)
            }
        }
    };
}
flatten_rank!(D1, D2);
flatten_rank!(D1, D2, D3);
flatten_rank!(D1, D2, D3, D4);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_close, check_gradient};
    use dfdx::prelude::*;

    #[test]
    fn pools_match_direct_loops() {
        let dev: Cpu = Default::default();
        let x: Tensor<(usize, Const<2>, usize, usize), f64, _> =
            dev.sample_normal_like(&(2, Const, 5, 4));
        let v = x.as_vec();
        let at = |b: usize, c: usize, i: isize, j: isize| -> Option<f64> {
            (i >= 0 && j >= 0 && i < 5 && j < 4)
                .then(|| v[((b * 2 + c) * 5 + i as usize) * 4 + j as usize])
        };
        // 3x3, stride 2, padding 1
        let max = MaxPool2d::<3, 2, 1>.forward(x.clone());
        let avg = AvgPool2d::<3, 2, 1>.forward(x.clone());
        assert_eq!(max.shape(), &(2, Const::<2>, 3, 2));
        let (mv, av) = (max.as_vec(), avg.as_vec());
        for b in 0..2 {
            for c in 0..2 {
                for i in 0..3 {
                    for j in 0..2 {
                        let cells: Vec<Option<f64>> = (0..3)
                            .flat_map(|di| (0..3).map(move |dj| (di, dj)))
                            .map(|(di, dj)| {
                                at(b, c, (i * 2 + di) as isize - 1, (j * 2 + dj) as isize - 1)
                            })
                            .collect();
                        let want_max = cells
                            .iter()
                            .flatten()
                            .copied()
                            .fold(f64::NEG_INFINITY, f64::max);
                        let want_avg = cells.iter().map(|c| c.unwrap_or(0.0)).sum::<f64>() / 9.0;
                        let k = ((b * 2 + c) * 3 + i) * 2 + j;
                        assert!((mv[k] - want_max).abs() < 1e-12);
                        assert!((av[k] - want_avg).abs() < 1e-12);
                    }
                }
            }
        }
    }

    #[test]
    fn pool_gradients_match_finite_differences() {
        let dev: Cpu = Default::default();
        let shape = (1usize, Const::<2>, 4usize, 4usize);
        let x: Tensor<(usize, Const<2>, usize, usize), f64, _> = dev.sample_normal_like(&shape);
        let g: Tensor<(usize, Const<2>, usize, usize), f64, _> =
            dev.sample_normal_like(&(1, Const, 3, 3));
        let loss = |x: Tensor<(usize, Const<2>, usize, usize), f64, Cpu>| {
            (MaxPool2d::<2, 1>.forward(x.clone()) * g.clone())
                .sum::<Rank0, _>()
                .array()
                + (AvgPool2d::<2, 1>.forward(x) * g.clone())
                    .sum::<Rank0, _>()
                    .array()
        };
        let t = x.clone().leaky_traced();
        let h = t.retaped::<NoneTape>();
        let l = (MaxPool2d::<2, 1>.forward(t.retaped::<OwnedTape<f64, Cpu>>()) * g.clone())
            .sum::<Rank0, _>()
            + (AvgPool2d::<2, 1>.forward(t) * g.clone()).sum::<Rank0, _>();
        let dx = l.backward().get(&h).as_vec();
        check_gradient(
            "x",
            |v| loss(dev.tensor_from_vec(v.to_vec(), shape)),
            &x.as_vec(),
            &dx,
            1e-6,
        );
    }

    /// The kernel and the gather reference agree on `pool` in value and input gradient.
    macro_rules! agree {
        ($pool:expr, $x:expr) => {{
            let x: &Tensor<(usize, Const<3>, usize, usize), f64, Cpu> = $x;
            let run = |kernel: bool| {
                let t = x.clone().leaky_traced();
                let handle = t.retaped::<NoneTape>();
                let y = if kernel {
                    $pool.forward(t)
                } else {
                    $pool.try_forward_by_gather(t).unwrap()
                };
                let value = y.retaped::<NoneTape>().as_vec();
                let g = y.device().tensor_from_vec(
                    (0..value.len()).map(|i| (i % 7) as f64 - 3.0).collect(),
                    *y.shape(),
                );
                let dx = (y * g).sum::<Rank0, _>().backward().get(&handle).as_vec();
                [value, dx]
            };
            assert_close(&run(true), &run(false), 1e-12, stringify!($pool));
        }};
    }

    #[test]
    fn the_kernel_matches_the_gather_reference_ties_included() {
        let dev = Cpu::seed_from_u64(4);
        // after a ReLU, whole windows are zero: the max's gradient goes to every tie
        let x: Tensor<(usize, Const<3>, usize, usize), f64, _> =
            dev.sample_normal_like(&(2, Const, 7, 6));
        let x = x.relu();
        agree!(MaxPool2d::<2>, &x);
        agree!(MaxPool2d::<3, 2, 1>, &x);
        agree!(MaxPool2d::<2, 1>, &x);
        agree!(AvgPool2d::<2>, &x);
        agree!(AvgPool2d::<3, 2, 1>, &x);
        agree!(AvgPool2d::<3, 1, 1>, &x);
    }

    #[test]
    fn flatten_feeds_a_linear_layer() {
        let dev: Cpu = Default::default();
        let x: Tensor<(usize, Const<2>, usize, usize), f32, _> = dev.ones_like(&(3, Const, 2, 2));
        let y = Flatten::<8>.forward(x);
        assert_eq!(y.shape(), &(3, Const::<8>));
        let lin = dev.build_module::<Linear<8, 1>, f32>();
        let _ = lin.forward(y);
    }
}
