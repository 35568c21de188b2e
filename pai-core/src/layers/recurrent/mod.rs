//! Recurrent layers: [`GruCell`], [`Gru`], [`LstmCell`], [`Lstm`].
//!
//! Gate layouts follow `PyTorch`, with one `Linear` per gate (so no tensor is ever sliced, which
//! dfdx's CPU `slice` backward gets wrong when a tensor is sliced twice):
//!
//! ```text
//! GRU   r = σ(x_r(x) + h_r(h))   z = σ(x_z(x) + h_z(h))   n = tanh(x_n(x) + r ⊙ h_n(h))
//!       h' = (1 − z) ⊙ n + z ⊙ h
//! LSTM  i = σ(x_i(x) + h_i(h))   f = σ(x_f(x) + h_f(h))   g = tanh(x_g(x) + h_g(h))
//!       o = σ(x_o(x) + h_o(h))   c' = f ⊙ c + i ⊙ g       h' = o ⊙ tanh(c')
//! ```
//!
//! `PyTorch`'s `weight_ih_l0` rows `[r; z; n]` (GRU) or `[i; f; g; o]` (LSTM) are the `x_*`
//! weights in that order, `weight_hh_l0` the `h_*` weights; each `Linear` carries its bias.
//!
//! Cells take `(x, h)` (LSTM: `(x, (h, c))`) and return the new state. Sequence layers take
//! `(B, S, I)` (and optionally the initial state) and return `(outputs, last state)`; the tape
//! of the whole recurrence travels with `outputs`, and the last state comes back detached, to
//! be carried into the next chunk of a long sequence.

use dfdx::nn::modules::Linear;
use dfdx::shapes::{Axes3, Const, Dim, HasShape};
use dfdx::tensor::{PutTape, SplitTape, Tape, Tensor};
use dfdx::tensor_ops::{Device, PermuteTo, SelectTo, TryStack};

use crate::error::Error;
use crate::float::Float;

type Gate<const A: usize, const B: usize, E, D> = Linear<A, B, E, D>;

/// A batch of input sequences `(B, S, I)`.
type SeqIn<B, S, const I: usize, E, D, T> = Tensor<(B, S, Const<I>), E, D, T>;
/// A batch of output sequences `(B, steps, H)`.
type SeqOut<B, const H: usize, E, D, T> = Tensor<(B, usize, Const<H>), E, D, T>;

/// dfdx's `TensorCollection` (and `NonMutableModule`) for a layer of named sub-modules.
macro_rules! collection {
    ($name:ident { $($field:ident),+ }) => {
        collection!(@impl $name, ($(Self::module(stringify!($field), |s| &s.$field, |s| &mut s.$field),)+), ($($field,)+), $($field),+);
    };
    // more than six fields: in groups (dfdx's field tuples stop at six)
    ($name:ident { $(($($field:ident),+)),+ }) => {
        collection!(@impl $name,
            ($(($(Self::module(stringify!($field), |s| &s.$field, |s| &mut s.$field),)+),)+),
            ($(($($field,)+),)+),
            $($($field),+),+);
    };
    (@impl $name:ident, $fields:expr, $pattern:pat, $($field:ident),+) => {
        impl<const I: usize, const H: usize, E: Float, D: Device<E>> TensorCollection<E, D> for $name<I, H, E, D> {
            type To<E2: Dtype, D2: Device<E2>> = $name<I, H, E2, D2>;
            fn iter_tensors<V: ModuleVisitor<Self, E, D>>(
                visitor: &mut V,
            ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
                visitor.visit_fields($fields, |$pattern| $name { $($field,)+ })
            }
        }
        impl<const I: usize, const H: usize, E: Dtype, D: dfdx::tensor::Storage<E>> NonMutableModule for $name<I, H, E, D> {}
    };
}

/// A `(batch, hidden)` state tensor.
pub(crate) type Hidden<B, const H: usize, E, D, T> = Tensor<(B, Const<H>), E, D, T>;

/// Time step `t` of every sequence in `seq` (`(B, S, H) -> (B, H)`), keeping `seq`'s id so the
/// gradients of all steps accumulate into it.
pub(crate) fn at_time<B: Dim, S: Dim, const N: usize, E: Float, D: Device<E>, T: Tape<E, D>>(
    seq: Tensor<(B, S, Const<N>), E, D, T>,
    t: usize,
) -> Result<Tensor<(B, Const<N>), E, D, T>, D::Err> {
    let b = seq.shape().0;
    let idx = seq.device().try_tensor_from_vec(vec![t; b.size()], (b,))?;
    seq.try_select(idx)
}

/// The last time step of every sequence in `seq` (`(B, S, H) -> (B, H)`), on `seq`'s tape: what
/// a classifier reads from a recurrent layer's outputs.
///
/// # Errors
/// [`Error::EmptySequence`] when `seq` has no steps (the layer's final state, which it returns
/// beside its outputs, is then its initial one); backend errors.
pub fn last_step<B: Dim, S: Dim, const N: usize, E: Float, D: Device<E>, T: Tape<E, D>>(
    seq: Tensor<(B, S, Const<N>), E, D, T>,
) -> Result<Tensor<(B, Const<N>), E, D, T>, Error> {
    let Some(last) = seq.shape().1.size().checked_sub(1) else {
        return Err(Error::EmptySequence {
            what: "the last step",
            hint: "read the final state the recurrent layer returns beside its outputs",
        });
    };
    at_time(seq, last).map_err(Error::device)
}

/// Takes the tape of a projection on the last step that uses it, an empty one before.
fn use_at<S: dfdx::shapes::Shape, E: Float, D: Device<E>, T: Tape<E, D>>(
    slot: &mut Option<Tensor<S, E, D, T>>,
    last: bool,
) -> Tensor<S, E, D, T> {
    let t = slot.as_ref().expect("taken only at the last step");
    if last {
        slot.take().expect("present until the last step")
    } else {
        t.retaped::<T>()
    }
}

/// The output sequence of a recurrence over no steps: `(B, 0, H)`, on `x`'s tape (nothing
/// flows back through it). dfdx cannot stack an empty list of steps.
fn no_steps<B: Dim, S: Dim, const I: usize, const H: usize, E: Float, D: Device<E>, T>(
    x: Tensor<(B, S, Const<I>), E, D, T>,
) -> Result<Tensor<(B, usize, Const<H>), E, D, T>, D::Err>
where
    T: Tape<E, D>,
{
    let b = x.shape().0;
    let (x, tape) = x.split_tape();
    Ok(x.device()
        .try_zeros_like(&(b, 0usize, Const::<H>))?
        .put_tape(tape))
}

/// `(S, B, H)` stacked steps to `(B, S, H)`.
fn batch_first<B: Dim, const H: usize, E: Float, D: Device<E>, T: Tape<E, D>>(
    steps: Vec<Hidden<B, H, E, D, T>>,
) -> Result<Tensor<(B, usize, Const<H>), E, D, T>, D::Err> {
    steps
        .try_stack()?
        .try_permute::<(B, usize, Const<H>), Axes3<1, 0, 2>>()
}

/// [`Convertible`](crate::dendritic::Convertible) for a recurrent layer whose neurons are its
/// `H` hidden units, on the axis `$tags` names.
macro_rules! convertible {
    ($name:ident, $tags:ty) => {
        impl<const I: usize, const H: usize, E: Float, D: Device<E>> $crate::dendritic::Convertible
            for $name<I, H, E, D>
        {
            type Dtype = E;
            type Device = D;
            type Neurons = Const<H>;
            type DefaultTags = $tags;
            fn try_copy(&self, dev: &D) -> $crate::error::Result<Self> {
                $crate::dendritic::copy_module(self, dev)
            }
            fn reinit(&mut self, std: f64, seed: u64) -> $crate::error::Result<()> {
                $crate::dendritic::reinit_module(self, std, seed)
            }
            fn visit_params<V: $crate::params::ParamVisitor<E, D>>(
                &mut self,
                how: $crate::params::ModuleParams<'_, E, D>,
                visitor: &mut V,
            ) -> $crate::error::Result<()> {
                $crate::params::visit_module(self, how, visitor)
            }
        }
    };
}

/// A processor for a recurrent layer (see [`crate::processor`]): a marker type whose
/// per-dendrite state is the state part of the layer's input, stored flat.
macro_rules! state_processor {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, Default)]
        pub struct $name<const H: usize, E, D>(std::marker::PhantomData<(E, D)>);
        impl<const H: usize, E: Float, D: Device<E>> $crate::processor::Processor
            for $name<H, E, D>
        {
            type State = $crate::processor::Stored<E, D>;
        }
    };
}

/// The [`Route`](crate::processor::Route) of a recurrent processor for input `(x, state)`:
/// every dendrite gets `x` with its own state (zeros at first, see
/// [`restore_state`](crate::processor::restore_state)), and keeps the state part of its output
/// that `state_of` names. `split` and `join` say which part of the output dendrites add to.
macro_rules! recurrent_route {
    (
        $proc:ident<$($gen:ident $(: $bound:path)?),*>,
        input: ($x:ty, $state:ty),
        output: $out:ty,
        main: $main:ty,
        rest: $rest:ty,
        joined: $joined:ty,
        split: |$so:pat_param| $split:expr,
        join: |$jm:pat_param, $jr:pat_param| $join:expr,
        state_of: |$o:ident| $state_of:expr $(,)?
    ) => {
        impl<M, const I: usize, const H: usize, E: Float, D: Device<E>, $($gen $(: $bound)?),*>
            $crate::processor::Route<M, ($x, $state), E, D> for $proc<H, E, D>
        where
            M: dfdx::nn::Module<($x, $state), Output = $out>,
        {
            type Output = $out;
            type Main = $main;
            type Rest = $rest;
            type Joined = $joined;
            fn split($so: Self::Output) -> (Self::Main, Self::Rest) {
                $split
            }
            fn join($jm: Self::Main, $jr: Self::Rest) -> Self::Joined {
                $join
            }
            fn dendrite_input(
                (x, state_in): ($x, $state),
                state: Option<&Self::State>,
            ) -> Result<($x, $state), D::Err> {
                Ok((x, $crate::processor::restore_state(&state_in, state)?))
            }
            fn state_of($o: &Self::Output) -> Option<Self::State> {
                Some($crate::processor::store_state($state_of))
            }
        }
    };
}

mod gru;
mod lstm;
#[cfg(test)]
mod tests;

pub use gru::{Gru, GruCell, GruCellState, GruState};
pub use lstm::{Lstm, LstmCell, LstmCellState, LstmLast, LstmState};
