//! Typed neuron axes.
//!
//! The Python library describes a layer's output with a run-time list such as `[-1, 0, -1, -1]`
//! (`0` marks the neuron axis). Here the output shape is a type, so the description is a type
//! too: a tuple of tags with exactly one [`Neurons`], one tag per axis of the output:
//!
//! | output shape            | tags                                 |
//! |-------------------------|--------------------------------------|
//! | `(B, Const<N>)`         | `(Batch, Neurons)`                   |
//! | `(B, T, Const<N>)`      | `(Batch, Time, Neurons)`             |
//! | `(B, Const<C>, H, W)`   | `(Batch, Neurons, Any, Any)`         |
//! | any rank, last is const | [`NeuronsLast`] (the `Linear` default) |
//!
//! [`NeuronAxis`] maps a tag tuple and an output shape to the neuron count (always a const dim,
//! so per-neuron weights are `Tensor<(N,), E, D>`), and knows how to broadcast a per-neuron
//! vector over the other axes and how to sum them away. A tag tuple that does not fit the shape
//! does not compile.
//!
//! ```
//! use pai_core::axis::*;
//! use dfdx::shapes::{Const, Shape};
//! fn neurons<S: Shape, Tags: NeuronAxis<S>>() -> usize { Tags::NEURONS }
//! assert_eq!(neurons::<(usize, Const<7>, usize, usize), (Batch, Neurons, Any, Any)>(), 7);
//! assert_eq!(neurons::<(Const<2>, usize, Const<5>), NeuronsLast>(), 5);
//! ```

use dfdx::shapes::{Axes2, Axes3, Axes4, Axis, ConstDim, Dim, Dtype, Shape};
use dfdx::tensor::{Tape, Tensor};
use dfdx::tensor_ops::{BroadcastTo, Device, SumTo};

use crate::float::Float;

/// Marks the axis that holds the neurons (exactly one per tag tuple).
#[derive(Debug, Clone, Copy, Default)]
pub struct Neurons;
/// Marks the batch axis.
#[derive(Debug, Clone, Copy, Default)]
pub struct Batch;
/// Marks a time (sequence) axis.
#[derive(Debug, Clone, Copy, Default)]
pub struct Time;
/// Marks any other axis (spatial, heads, ...): not a neuron axis.
#[derive(Debug, Clone, Copy, Default)]
pub struct Any;
/// Neurons on the last axis, whatever the rank: the default for `Linear`.
#[derive(Debug, Clone, Copy, Default)]
pub struct NeuronsLast;

/// A tag that is not [`Neurons`]: [`Batch`], [`Time`] or [`Any`].
pub trait OtherAxis: private::Sealed {}
impl OtherAxis for Batch {}
impl OtherAxis for Time {}
impl OtherAxis for Any {}

mod private {
    pub trait Sealed {}
    impl Sealed for super::Batch {}
    impl Sealed for super::Time {}
    impl Sealed for super::Any {}
}

/// One value per neuron of a layer whose neuron axis has `N` entries: dendrite output and
/// cascade weights, biases, running statistics.
pub type PerNeuron<N, E, D, T = dfdx::tensor::NoneTape> = Tensor<(N,), E, D, T>;

/// Maps a tag tuple (`Self`) and a layer's output shape `S` to the neuron axis.
#[diagnostic::on_unimplemented(
    message = "the neuron-axis tags `{Self}` do not fit the layer output shape `{S}`",
    label = "no neuron axis `{Self}` for output `{S}`",
    note = "write one tag per axis of the output with exactly one `Neurons`, on an axis whose size is a `Const<N>`: `(Batch, Neurons)` for `(B, Const<N>)`, `(Batch, Time, Neurons)` for `(B, T, Const<N>)`, `(Batch, Neurons, Any, Any)` for `(B, Const<C>, H, W)`, or `NeuronsLast` for any rank"
)]
pub trait NeuronAxis<S: Shape>: 'static {
    /// The size of the neuron axis.
    type Neurons: ConstDim;
    /// Index of the neuron axis in `S`.
    const AXIS: usize;
    /// Number of neurons.
    const NEURONS: usize = <Self::Neurons as ConstDim>::SIZE;

    /// Broadcasts a per-neuron vector to the output shape (copies along every other axis).
    ///
    /// # Errors
    /// Backend errors (out of memory).
    fn broadcast<E: Dtype, D: Device<E>, T: Tape<E, D>>(
        per_neuron: Tensor<(Self::Neurons,), E, D, T>,
        shape: &S,
    ) -> Result<Tensor<S, E, D, T>, D::Err>;

    /// Sums every axis but the neuron axis.
    ///
    /// # Errors
    /// Backend errors (out of memory).
    fn sum_others<E: Dtype, D: Device<E>, T: Tape<E, D>>(
        t: Tensor<S, E, D, T>,
    ) -> Result<Tensor<(Self::Neurons,), E, D, T>, D::Err>;
}

/// Where the neuron of each element is: row-major, `inner` consecutive elements per neuron,
/// `neurons` such runs per block, blocks repeated to the end.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Layout {
    neurons: usize,
    inner: usize,
    /// Elements in all.
    pub(crate) len: usize,
}

impl Layout {
    #[inline]
    pub(crate) fn of<So: Shape, Tags: NeuronAxis<So>>(shape: &So) -> Self {
        let dims = shape.concrete();
        let inner = (Tags::AXIS + 1..So::NUM_DIMS)
            .map(|i| dims[i])
            .product::<usize>();
        Self {
            neurons: Tags::NEURONS,
            inner,
            len: shape.num_elements(),
        }
    }

    /// The layout of no elements over `neurons` neurons (a data-parallel replica's empty
    /// shard).
    pub(crate) fn empty(neurons: usize) -> Self {
        Self {
            neurons,
            inner: 1,
            len: 0,
        }
    }

    /// Elements of one block (every neuron's run once): a slice of whole blocks has this
    /// layout too.
    pub(crate) fn block(&self) -> usize {
        self.neurons * self.inner
    }

    /// `dst[i] += w[n(i)] * a[i]`.
    #[inline]
    pub(crate) fn axpy<E: Float>(&self, dst: &mut [E], w: &[E], a: &[E]) {
        let block = self.block();
        for (dst, a) in dst.chunks_exact_mut(block).zip(a.chunks_exact(block)) {
            if self.inner == 1 {
                for ((d, a), w) in dst.iter_mut().zip(a).zip(w) {
                    *d += *w * *a;
                }
                continue;
            }
            let runs = dst
                .chunks_exact_mut(self.inner)
                .zip(a.chunks_exact(self.inner));
            for ((dst, a), w) in runs.zip(w) {
                for (d, a) in dst.iter_mut().zip(a) {
                    *d += *w * *a;
                }
            }
        }
    }

    /// `dst[i] += b[n(i)]`.
    #[inline]
    pub(crate) fn add<E: Float>(&self, dst: &mut [E], b: &[E]) {
        let block = self.block();
        for dst in dst.chunks_exact_mut(block) {
            if self.inner == 1 {
                for (d, b) in dst.iter_mut().zip(b) {
                    *d += *b;
                }
                continue;
            }
            for (dst, b) in dst.chunks_exact_mut(self.inner).zip(b) {
                for d in dst {
                    *d += *b;
                }
            }
        }
    }

    /// `Σ g[i]` per neuron.
    #[inline]
    pub(crate) fn sum<E: Float>(&self, g: &[E]) -> Vec<E> {
        let mut s = vec![E::default(); self.neurons];
        for g in g.chunks_exact(self.block()) {
            if self.inner == 1 {
                for (s, g) in s.iter_mut().zip(g) {
                    *s += *g;
                }
                continue;
            }
            for (g, s) in g.chunks_exact(self.inner).zip(s.iter_mut()) {
                *s += lanes(g, None);
            }
        }
        s
    }

    /// `Σ a[i] * g[i]` per neuron.
    #[inline]
    pub(crate) fn dot<E: Float>(&self, a: &[E], g: &[E]) -> Vec<E> {
        let mut s = vec![E::default(); self.neurons];
        let block = self.block();
        for (a, g) in a.chunks_exact(block).zip(g.chunks_exact(block)) {
            if self.inner == 1 {
                for ((s, a), g) in s.iter_mut().zip(a).zip(g) {
                    *s += *a * *g;
                }
                continue;
            }
            let runs = a.chunks_exact(self.inner).zip(g.chunks_exact(self.inner));
            for ((a, g), s) in runs.zip(s.iter_mut()) {
                *s += lanes(a, Some(g));
            }
        }
        s
    }
}

/// `Σ a[i]·b[i]` in 8 interleaved partial sums, joined pairwise: one running sum is a chain of
/// dependent adds that cannot be vectorised (a convolution's run of 784 values took 4 cycles a
/// value); 8 independent ones can. The order is fixed, so the result is the same on every
/// machine. `b` is `None` for a plain sum of `a`.
#[inline]
fn lanes<E: Float>(a: &[E], b: Option<&[E]>) -> E {
    let mut part = [E::zero(); 8];
    let whole = a.len() / 8 * 8;
    match b {
        Some(b) => {
            for (a, b) in a[..whole].chunks_exact(8).zip(b[..whole].chunks_exact(8)) {
                for ((p, a), b) in part.iter_mut().zip(a).zip(b) {
                    *p += *a * *b;
                }
            }
        }
        None => {
            for a in a[..whole].chunks_exact(8) {
                for (p, a) in part.iter_mut().zip(a) {
                    *p += *a;
                }
            }
        }
    }
    let mut sum =
        ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
    for (i, a) in a.iter().enumerate().skip(whole) {
        sum += *a * b.map_or(E::one(), |b| b[i]);
    }
    sum
}

/// Number of output elements per neuron (the product of the other axes).
pub fn elements_per_neuron<S: Shape, Tags: NeuronAxis<S>>(shape: &S) -> usize {
    shape.num_elements() / Tags::NEURONS
}

impl<C: ConstDim> NeuronAxis<(C,)> for (Neurons,) {
    type Neurons = C;
    const AXIS: usize = 0;
    fn broadcast<E: Dtype, D: Device<E>, T: Tape<E, D>>(
        per_neuron: Tensor<(C,), E, D, T>,
        _shape: &(C,),
    ) -> Result<Tensor<(C,), E, D, T>, D::Err> {
        Ok(per_neuron)
    }
    fn sum_others<E: Dtype, D: Device<E>, T: Tape<E, D>>(
        t: Tensor<(C,), E, D, T>,
    ) -> Result<Tensor<(C,), E, D, T>, D::Err> {
        Ok(t)
    }
}

/// One impl of [`NeuronAxis`] for a tag tuple with `Neurons` at one position.
///
/// `[$($tag),*]` are the tag types (generic `Aᵢ: OtherAxis` or `Neurons`), `[$($dim),*]` the
/// dim generics of the shape, `$c` the neuron dim, `$axes` the other axes.
macro_rules! neuron_axis {
    (($($tag:ty),+), [$($other:ident),*], ($($dim:ident),+), $c:ident, $axis:expr, $axes:ty) => {
        impl<$($other: OtherAxis + 'static,)* $($dim: Dim,)* > NeuronAxis<($($dim,)+)> for ($($tag,)+)
        where $c: ConstDim
        {
            type Neurons = $c;
            const AXIS: usize = $axis;
            fn broadcast<E: Dtype, D: Device<E>, T: Tape<E, D>>(
                per_neuron: Tensor<($c,), E, D, T>,
                shape: &($($dim,)+),
            ) -> Result<Tensor<($($dim,)+), E, D, T>, D::Err> {
                per_neuron.try_broadcast_like::<_, $axes>(shape)
            }
            fn sum_others<E: Dtype, D: Device<E>, T: Tape<E, D>>(
                t: Tensor<($($dim,)+), E, D, T>,
            ) -> Result<Tensor<($c,), E, D, T>, D::Err> {
                t.try_sum::<($c,), $axes>()
            }
        }
    };
}

/// [`NeuronsLast`] for one rank, forwarding to the tuple with `Neurons` last.
macro_rules! neurons_last {
    (($($tag:ty),+), ($($dim:ident),+), $c:ident) => {
        impl<$($dim: Dim,)*> NeuronAxis<($($dim,)+)> for NeuronsLast
        where $c: ConstDim
        {
            type Neurons = $c;
            const AXIS: usize = <($($tag,)+) as NeuronAxis<($($dim,)+)>>::AXIS;
            fn broadcast<E: Dtype, D: Device<E>, T: Tape<E, D>>(
                per_neuron: Tensor<($c,), E, D, T>,
                shape: &($($dim,)+),
            ) -> Result<Tensor<($($dim,)+), E, D, T>, D::Err> {
                <($($tag,)+) as NeuronAxis<($($dim,)+)>>::broadcast(per_neuron, shape)
            }
            fn sum_others<E: Dtype, D: Device<E>, T: Tape<E, D>>(
                t: Tensor<($($dim,)+), E, D, T>,
            ) -> Result<Tensor<($c,), E, D, T>, D::Err> {
                <($($tag,)+) as NeuronAxis<($($dim,)+)>>::sum_others(t)
            }
        }
    };
}

// rank 2
neuron_axis!((Neurons, A1), [A1], (D0, D1), D0, 0, Axis<1>);
neuron_axis!((A0, Neurons), [A0], (D0, D1), D1, 1, Axis<0>);
// rank 3
neuron_axis!((Neurons, A1, A2), [A1, A2], (D0, D1, D2), D0, 0, Axes2<1, 2>);
neuron_axis!((A0, Neurons, A2), [A0, A2], (D0, D1, D2), D1, 1, Axes2<0, 2>);
neuron_axis!((A0, A1, Neurons), [A0, A1], (D0, D1, D2), D2, 2, Axes2<0, 1>);
// rank 4
neuron_axis!((Neurons, A1, A2, A3), [A1, A2, A3], (D0, D1, D2, D3), D0, 0, Axes3<1, 2, 3>);
neuron_axis!((A0, Neurons, A2, A3), [A0, A2, A3], (D0, D1, D2, D3), D1, 1, Axes3<0, 2, 3>);
neuron_axis!((A0, A1, Neurons, A3), [A0, A1, A3], (D0, D1, D2, D3), D2, 2, Axes3<0, 1, 3>);
neuron_axis!((A0, A1, A2, Neurons), [A0, A1, A2], (D0, D1, D2, D3), D3, 3, Axes3<0, 1, 2>);
// rank 5
neuron_axis!((Neurons, A1, A2, A3, A4), [A1, A2, A3, A4], (D0, D1, D2, D3, D4), D0, 0, Axes4<1, 2, 3, 4>);
neuron_axis!((A0, Neurons, A2, A3, A4), [A0, A2, A3, A4], (D0, D1, D2, D3, D4), D1, 1, Axes4<0, 2, 3, 4>);
neuron_axis!((A0, A1, Neurons, A3, A4), [A0, A1, A3, A4], (D0, D1, D2, D3, D4), D2, 2, Axes4<0, 1, 3, 4>);
neuron_axis!((A0, A1, A2, Neurons, A4), [A0, A1, A2, A4], (D0, D1, D2, D3, D4), D3, 3, Axes4<0, 1, 2, 4>);
neuron_axis!((A0, A1, A2, A3, Neurons), [A0, A1, A2, A3], (D0, D1, D2, D3, D4), D4, 4, Axes4<0, 1, 2, 3>);

neurons_last!((Neurons), (D0), D0);
neurons_last!((Batch, Neurons), (D0, D1), D1);
neurons_last!((Batch, Any, Neurons), (D0, D1, D2), D2);
neurons_last!((Batch, Any, Any, Neurons), (D0, D1, D2, D3), D3);
neurons_last!((Batch, Any, Any, Any, Neurons), (D0, D1, D2, D3, D4), D4);

#[cfg(test)]
mod tests {
    use super::*;
    use dfdx::prelude::*;

    #[test]
    fn broadcast_and_sum_follow_the_neuron_axis() {
        let dev: Cpu = Default::default();
        let w = dev.tensor([1.0f32, 2.0, 3.0]);
        let shape = (2usize, Const::<3>, 2usize);
        let b = <(Batch, Neurons, Any)>::broadcast(w, &shape).unwrap();
        assert_eq!(
            b.as_vec(),
            vec![1., 1., 2., 2., 3., 3., 1., 1., 2., 2., 3., 3.]
        );
        let s = <(Batch, Neurons, Any)>::sum_others(b).unwrap();
        assert_eq!(s.array(), [4.0, 8.0, 12.0]);
        assert_eq!(elements_per_neuron::<_, (Batch, Neurons, Any)>(&shape), 4);
    }

    /// Every host loop of [`Layout`] against the same sums written by element index, with the
    /// neurons last (`inner == 1`, a loop of its own) and in the middle.
    #[test]
    fn layout_loops_match_their_definition_by_index() {
        fn check<S: Shape, Tags: NeuronAxis<S>>(shape: S) {
            let layout = Layout::of::<S, Tags>(&shape);
            let len = shape.num_elements();
            let neurons = Tags::NEURONS;
            // the neuron of element i
            let strides = shape.strides();
            let n = |i: usize| (i / strides[Tags::AXIS]) % neurons;
            let a: Vec<f64> = (0..len).map(|i| (i as f64 * 0.37).sin()).collect();
            let g: Vec<f64> = (0..len).map(|i| (i as f64 * 0.11).cos()).collect();
            let w: Vec<f64> = (0..neurons).map(|j| 1.0 + j as f64).collect();

            let mut axpy = g.clone();
            layout.axpy(&mut axpy, &w, &a);
            let mut add = g.clone();
            layout.add(&mut add, &w);
            let (mut sum, mut dot) = (vec![0.0; neurons], vec![0.0; neurons]);
            for i in 0..len {
                sum[n(i)] += g[i];
                dot[n(i)] += a[i] * g[i];
                assert_eq!(axpy[i], g[i] + w[n(i)] * a[i]);
                assert_eq!(add[i], g[i] + w[n(i)]);
            }
            let close = |x: &[f64], y: &[f64]| x.iter().zip(y).all(|(x, y)| (x - y).abs() < 1e-12);
            assert!(close(&layout.sum(&g), &sum));
            assert!(close(&layout.dot(&a, &g), &dot));
        }
        check::<_, (Batch, Neurons)>((Const::<4>, Const::<3>));
        check::<_, NeuronsLast>((Const::<2>, Const::<3>, Const::<5>));
        check::<_, (Batch, Neurons, Any)>((2usize, Const::<3>, 4usize));
        // runs longer than the 8 partial sums of `lanes`, with a tail
        check::<_, (Batch, Neurons, Any)>((2usize, Const::<3>, 19usize));
        check::<_, (Batch, Neurons, Any, Any)>((Const::<2>, Const::<3>, Const::<2>, Const::<2>));
    }

    #[test]
    fn neurons_last_picks_the_last_axis() {
        let dev: Cpu = Default::default();
        let x: Tensor<Rank3<2, 3, 4>, f32, _> = dev.ones();
        let s = NeuronsLast::sum_others(x).unwrap();
        assert_eq!(s.array(), [6.0; 4]);
        assert_eq!(<NeuronsLast as NeuronAxis<Rank3<2, 3, 4>>>::AXIS, 2);
    }
}
