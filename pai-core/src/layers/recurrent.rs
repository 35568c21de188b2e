//! Recurrent layers: [`GruCell`], [`Gru`], [`LstmCell`], [`Lstm`].
//!
//! Gate layouts follow PyTorch, with one `Linear` per gate (so no tensor is ever sliced, which
//! dfdx's CPU `slice` backward gets wrong when a tensor is sliced twice):
//!
//! ```text
//! GRU   r = σ(x_r(x) + h_r(h))   z = σ(x_z(x) + h_z(h))   n = tanh(x_n(x) + r ⊙ h_n(h))
//!       h' = (1 − z) ⊙ n + z ⊙ h
//! LSTM  i = σ(x_i(x) + h_i(h))   f = σ(x_f(x) + h_f(h))   g = tanh(x_g(x) + h_g(h))
//!       o = σ(x_o(x) + h_o(h))   c' = f ⊙ c + i ⊙ g       h' = o ⊙ tanh(c')
//! ```
//!
//! PyTorch's `weight_ih_l0` rows `[r; z; n]` (GRU) or `[i; f; g; o]` (LSTM) are the `x_*`
//! weights in that order, `weight_hh_l0` the `h_*` weights; each `Linear` carries its bias.
//!
//! Cells take `(x, h)` (LSTM: `(x, (h, c))`) and return the new state. Sequence layers take
//! `(B, S, I)` (and optionally the initial state) and return `(outputs, last state)`; the tape
//! of the whole recurrence travels with `outputs`, and the last state comes back detached, to
//! be carried into the next chunk of a long sequence.

use dfdx::nn::modules::Linear;
use dfdx::nn::tensor_collection::{ModuleVisitor, TensorCollection};
use dfdx::nn::{Module, NonMutableModule};
use dfdx::shapes::{Axes3, Const, Dim, Dtype, HasShape};
use dfdx::tensor::{Merge, NoneTape, PutTape, SplitTape, Tape, Tensor};
use dfdx::tensor_ops::{Device, PermuteTo, SelectTo, TryAdd, TryMul, TryStack};

use crate::axis::{Batch, Neurons, Time};
use crate::dendritic::{copy_module, reinit_module, Convertible};
use crate::error::Error;
use crate::float::Float;
use crate::params::{visit_module, ModuleParams, ParamVisitor};

type Gate<const A: usize, const B: usize, E, D> = Linear<A, B, E, D>;

/// A GRU step: `(x, h) -> h'` (see the [module docs](self)).
#[derive(Debug, Clone)]
pub struct GruCell<const I: usize, const H: usize, E: Dtype, D: dfdx::tensor::Storage<E>> {
    /// Input weights of the reset, update and new gates.
    pub x_r: Gate<I, H, E, D>,
    #[allow(missing_docs)]
    pub x_z: Gate<I, H, E, D>,
    #[allow(missing_docs)]
    pub x_n: Gate<I, H, E, D>,
    /// Hidden-state weights of the reset, update and new gates.
    pub h_r: Gate<H, H, E, D>,
    #[allow(missing_docs)]
    pub h_z: Gate<H, H, E, D>,
    #[allow(missing_docs)]
    pub h_n: Gate<H, H, E, D>,
}

/// An LSTM step: `(x, (h, c)) -> (h', c')` (see the [module docs](self)).
#[derive(Debug, Clone)]
pub struct LstmCell<const I: usize, const H: usize, E: Dtype, D: dfdx::tensor::Storage<E>> {
    /// Input weights of the input, forget, cell and output gates.
    pub x_i: Gate<I, H, E, D>,
    #[allow(missing_docs)]
    pub x_f: Gate<I, H, E, D>,
    #[allow(missing_docs)]
    pub x_g: Gate<I, H, E, D>,
    #[allow(missing_docs)]
    pub x_o: Gate<I, H, E, D>,
    /// Hidden-state weights of the input, forget, cell and output gates.
    pub h_i: Gate<H, H, E, D>,
    #[allow(missing_docs)]
    pub h_f: Gate<H, H, E, D>,
    #[allow(missing_docs)]
    pub h_g: Gate<H, H, E, D>,
    #[allow(missing_docs)]
    pub h_o: Gate<H, H, E, D>,
}

/// A GRU over a sequence: `(B, S, I) -> ((B, S, H), (B, H))`.
#[derive(Debug, Clone)]
pub struct Gru<const I: usize, const H: usize, E: Dtype, D: dfdx::tensor::Storage<E>> {
    /// The step.
    pub cell: GruCell<I, H, E, D>,
}

/// An LSTM over a sequence: `(B, S, I) -> ((B, S, H), ((B, H), (B, H)))`.
#[derive(Debug, Clone)]
pub struct Lstm<const I: usize, const H: usize, E: Dtype, D: dfdx::tensor::Storage<E>> {
    /// The step.
    pub cell: LstmCell<I, H, E, D>,
}

macro_rules! collection {
    ($name:ident { $($field:ident),+ }) => {
        impl<const I: usize, const H: usize, E: Float, D: Device<E>> TensorCollection<E, D> for $name<I, H, E, D> {
            type To<E2: Dtype, D2: Device<E2>> = $name<I, H, E2, D2>;
            fn iter_tensors<V: ModuleVisitor<Self, E, D>>(
                visitor: &mut V,
            ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
                visitor.visit_fields(
                    ($(Self::module(stringify!($field), |s| &s.$field, |s| &mut s.$field),)+),
                    |($($field,)+)| $name { $($field,)+ },
                )
            }
        }
        impl<const I: usize, const H: usize, E: Dtype, D: dfdx::tensor::Storage<E>> NonMutableModule for $name<I, H, E, D> {}
    };
}
collection!(GruCell {
    x_r,
    x_z,
    x_n,
    h_r,
    h_z,
    h_n
});
collection!(Gru { cell });

// eight fields: nested tuples (dfdx's field tuples stop at six)
impl<const I: usize, const H: usize, E: Float, D: Device<E>> TensorCollection<E, D>
    for LstmCell<I, H, E, D>
{
    type To<E2: Dtype, D2: Device<E2>> = LstmCell<I, H, E2, D2>;
    fn iter_tensors<V: ModuleVisitor<Self, E, D>>(
        visitor: &mut V,
    ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        visitor.visit_fields(
            (
                (
                    Self::module("x_i", |s| &s.x_i, |s| &mut s.x_i),
                    Self::module("x_f", |s| &s.x_f, |s| &mut s.x_f),
                    Self::module("x_g", |s| &s.x_g, |s| &mut s.x_g),
                    Self::module("x_o", |s| &s.x_o, |s| &mut s.x_o),
                ),
                (
                    Self::module("h_i", |s| &s.h_i, |s| &mut s.h_i),
                    Self::module("h_f", |s| &s.h_f, |s| &mut s.h_f),
                    Self::module("h_g", |s| &s.h_g, |s| &mut s.h_g),
                    Self::module("h_o", |s| &s.h_o, |s| &mut s.h_o),
                ),
            ),
            |((x_i, x_f, x_g, x_o), (h_i, h_f, h_g, h_o))| LstmCell {
                x_i,
                x_f,
                x_g,
                x_o,
                h_i,
                h_f,
                h_g,
                h_o,
            },
        )
    }
}
impl<const I: usize, const H: usize, E: Dtype, D: dfdx::tensor::Storage<E>> NonMutableModule
    for LstmCell<I, H, E, D>
{
}
collection!(Lstm { cell });

/// A `(batch, hidden)` state tensor.
pub(crate) type Hidden<B, const H: usize, E, D, T> = Tensor<(B, Const<H>), E, D, T>;

impl<const I: usize, const H: usize, E: Float, D: Device<E>> GruCell<I, H, E, D> {
    /// One step from the input projections `(x_r(x), x_z(x), x_n(x))` and the state `h`.
    fn step<B: Dim, T: Tape<E, D> + Merge<T2>, T2: Tape<E, D>>(
        &self,
        (xr, xz, xn): (
            Hidden<B, H, E, D, T>,
            Hidden<B, H, E, D, T>,
            Hidden<B, H, E, D, T>,
        ),
        h: Hidden<B, H, E, D, T2>,
    ) -> Result<Hidden<B, H, E, D, T>, D::Err> {
        let r = xr
            .try_add(self.h_r.try_forward(h.retaped::<T2>())?)?
            .try_sigmoid()?;
        let z = xz
            .try_add(self.h_z.try_forward(h.retaped::<T2>())?)?
            .try_sigmoid()?;
        let n = xn
            .try_add(r.try_mul(self.h_n.try_forward(h.retaped::<T2>())?)?)?
            .try_tanh()?;
        // h' = n + z ⊙ (h − n)
        let diff = n.retaped::<T>().try_negate()?.try_add(h)?;
        n.try_add(z.try_mul(diff)?)
    }
}

impl<const I: usize, const H: usize, E: Float, D: Device<E>> LstmCell<I, H, E, D> {
    /// One step from the input projections `(x_i, x_f, x_g, x_o)` and the state `(h, c)`.
    #[allow(clippy::type_complexity)]
    fn step<B: Dim, T: Tape<E, D> + Merge<T2>, T2: Tape<E, D>>(
        &self,
        (xi, xf, xg, xo): (
            Hidden<B, H, E, D, T>,
            Hidden<B, H, E, D, T>,
            Hidden<B, H, E, D, T>,
            Hidden<B, H, E, D, T>,
        ),
        (h, c): (Hidden<B, H, E, D, T2>, Hidden<B, H, E, D, T2>),
    ) -> Result<(Hidden<B, H, E, D, T>, Hidden<B, H, E, D, T>), D::Err> {
        let i = xi
            .try_add(self.h_i.try_forward(h.retaped::<T2>())?)?
            .try_sigmoid()?;
        let f = xf
            .try_add(self.h_f.try_forward(h.retaped::<T2>())?)?
            .try_sigmoid()?;
        let g = xg
            .try_add(self.h_g.try_forward(h.retaped::<T2>())?)?
            .try_tanh()?;
        let o = xo.try_add(self.h_o.try_forward(h)?)?.try_sigmoid()?;
        let c = f.try_mul(c)?.try_add(i.try_mul(g)?)?;
        let h = o.try_mul(c.retaped::<T>().try_tanh()?)?;
        Ok((h, c))
    }
}

impl<
        B: Dim,
        const I: usize,
        const H: usize,
        E: Float,
        D: Device<E>,
        T: Tape<E, D> + Merge<T2>,
        T2: Tape<E, D>,
    > Module<(Tensor<(B, Const<I>), E, D, T>, Hidden<B, H, E, D, T2>)> for GruCell<I, H, E, D>
{
    type Output = Hidden<B, H, E, D, T>;
    type Error = D::Err;
    fn try_forward(
        &self,
        (x, h): (Tensor<(B, Const<I>), E, D, T>, Hidden<B, H, E, D, T2>),
    ) -> Result<Self::Output, D::Err> {
        let xr = self.x_r.try_forward(x.retaped::<T>())?;
        let xz = self.x_z.try_forward(x.retaped::<T>())?;
        let xn = self.x_n.try_forward(x)?;
        self.step((xr, xz, xn), h)
    }
}

impl<
        B: Dim,
        const I: usize,
        const H: usize,
        E: Float,
        D: Device<E>,
        T: Tape<E, D> + Merge<T2>,
        T2: Tape<E, D>,
    >
    Module<(
        Tensor<(B, Const<I>), E, D, T>,
        (Hidden<B, H, E, D, T2>, Hidden<B, H, E, D, T2>),
    )> for LstmCell<I, H, E, D>
{
    type Output = (Hidden<B, H, E, D, T>, Hidden<B, H, E, D, T>);
    type Error = D::Err;
    fn try_forward(
        &self,
        (x, state): (
            Tensor<(B, Const<I>), E, D, T>,
            (Hidden<B, H, E, D, T2>, Hidden<B, H, E, D, T2>),
        ),
    ) -> Result<Self::Output, D::Err> {
        let xi = self.x_i.try_forward(x.retaped::<T>())?;
        let xf = self.x_f.try_forward(x.retaped::<T>())?;
        let xg = self.x_g.try_forward(x.retaped::<T>())?;
        let xo = self.x_o.try_forward(x)?;
        self.step((xi, xf, xg, xo), state)
    }
}

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

impl<B: Dim, S: Dim, const I: usize, const H: usize, E: Float, D: Device<E>, T: Tape<E, D>>
    Module<(
        Tensor<(B, S, Const<I>), E, D, T>,
        Hidden<B, H, E, D, NoneTape>,
    )> for Gru<I, H, E, D>
{
    type Output = (
        Tensor<(B, usize, Const<H>), E, D, T>,
        Hidden<B, H, E, D, NoneTape>,
    );
    type Error = D::Err;
    fn try_forward(
        &self,
        (x, h0): (
            Tensor<(B, S, Const<I>), E, D, T>,
            Hidden<B, H, E, D, NoneTape>,
        ),
    ) -> Result<Self::Output, D::Err> {
        let steps = x.shape().1.size();
        if steps == 0 {
            return Ok((no_steps(x)?, h0));
        }
        let c = &self.cell;
        let mut xr = Some(c.x_r.try_forward(x.retaped::<T>())?);
        let mut xz = Some(c.x_z.try_forward(x.retaped::<T>())?);
        let mut xn = Some(c.x_n.try_forward(x)?);
        let mut h = h0;
        let mut outputs = Vec::with_capacity(steps);
        for t in 0..steps {
            let last = t + 1 == steps;
            let projections = (
                at_time(use_at(&mut xr, last), t)?,
                at_time(use_at(&mut xz, last), t)?,
                at_time(use_at(&mut xn, last), t)?,
            );
            let out: Hidden<B, H, E, D, T> = c.step(projections, h.retaped::<T>())?;
            h = out.retaped::<NoneTape>();
            outputs.push(out);
        }
        Ok((batch_first(outputs)?, h))
    }
}

impl<B: Dim, S: Dim, const I: usize, const H: usize, E: Float, D: Device<E>, T: Tape<E, D>>
    Module<Tensor<(B, S, Const<I>), E, D, T>> for Gru<I, H, E, D>
{
    type Output = (
        Tensor<(B, usize, Const<H>), E, D, T>,
        Hidden<B, H, E, D, NoneTape>,
    );
    type Error = D::Err;
    /// From a zero state.
    fn try_forward(&self, x: Tensor<(B, S, Const<I>), E, D, T>) -> Result<Self::Output, D::Err> {
        let b = x.shape().0;
        let h0 = x.device().try_zeros_like(&(b, Const::<H>))?;
        self.try_forward((x, h0))
    }
}

impl<B: Dim, S: Dim, const I: usize, const H: usize, E: Float, D: Device<E>, T: Tape<E, D>>
    Module<(
        Tensor<(B, S, Const<I>), E, D, T>,
        (Hidden<B, H, E, D, NoneTape>, Hidden<B, H, E, D, NoneTape>),
    )> for Lstm<I, H, E, D>
{
    type Output = (
        Tensor<(B, usize, Const<H>), E, D, T>,
        (Hidden<B, H, E, D, NoneTape>, Hidden<B, H, E, D, NoneTape>),
    );
    type Error = D::Err;
    fn try_forward(
        &self,
        (x, (h0, c0)): (
            Tensor<(B, S, Const<I>), E, D, T>,
            (Hidden<B, H, E, D, NoneTape>, Hidden<B, H, E, D, NoneTape>),
        ),
    ) -> Result<Self::Output, D::Err> {
        let steps = x.shape().1.size();
        if steps == 0 {
            return Ok((no_steps(x)?, (h0, c0)));
        }
        let cell = &self.cell;
        let mut xi = Some(cell.x_i.try_forward(x.retaped::<T>())?);
        let mut xf = Some(cell.x_f.try_forward(x.retaped::<T>())?);
        let mut xg = Some(cell.x_g.try_forward(x.retaped::<T>())?);
        let mut xo = Some(cell.x_o.try_forward(x)?);
        // the cell state's tape travels from step to step; the hidden outputs go to `outputs`
        let mut h = h0;
        let mut c: Hidden<B, H, E, D, T> = c0.retaped::<T>();
        let mut outputs = Vec::with_capacity(steps);
        for t in 0..steps {
            let last = t + 1 == steps;
            let projections = (
                at_time(use_at(&mut xi, last), t)?,
                at_time(use_at(&mut xf, last), t)?,
                at_time(use_at(&mut xg, last), t)?,
                at_time(use_at(&mut xo, last), t)?,
            );
            let (h_new, c_new) = cell.step(projections, (h.retaped::<T>(), c))?;
            h = h_new.retaped::<NoneTape>();
            outputs.push(h_new);
            c = c_new;
        }
        // the cell states' tape belongs to the outputs too
        let (c_last, c_tape) = c.split_tape();
        let mut outputs = outputs;
        if let Some(last) = outputs.pop() {
            let (v, tape) = last.split_tape();
            outputs.push(v.put_tape(tape.merge(c_tape)));
        }
        Ok((batch_first(outputs)?, (h, c_last)))
    }
}

impl<B: Dim, S: Dim, const I: usize, const H: usize, E: Float, D: Device<E>, T: Tape<E, D>>
    Module<Tensor<(B, S, Const<I>), E, D, T>> for Lstm<I, H, E, D>
{
    type Output = (
        Tensor<(B, usize, Const<H>), E, D, T>,
        (Hidden<B, H, E, D, NoneTape>, Hidden<B, H, E, D, NoneTape>),
    );
    type Error = D::Err;
    /// From a zero state.
    fn try_forward(&self, x: Tensor<(B, S, Const<I>), E, D, T>) -> Result<Self::Output, D::Err> {
        let b = x.shape().0;
        let zeros = || x.device().try_zeros_like(&(b, Const::<H>));
        let state = (zeros()?, zeros()?);
        self.try_forward((x, state))
    }
}

macro_rules! convertible {
    ($name:ident, $tags:ty) => {
        impl<const I: usize, const H: usize, E: Float, D: Device<E>> Convertible
            for $name<I, H, E, D>
        {
            type Dtype = E;
            type Device = D;
            type Neurons = Const<H>;
            type DefaultTags = $tags;
            fn try_copy(&self, dev: &D) -> crate::error::Result<Self> {
                copy_module(self, dev)
            }
            fn reinit(&mut self, std: f64, seed: u64) -> crate::error::Result<()> {
                reinit_module(self, std, seed)
            }
            fn visit_params<V: ParamVisitor<E, D>>(
                &mut self,
                how: ModuleParams<'_, E, D>,
                visitor: &mut V,
            ) -> crate::error::Result<()> {
                visit_module(self, how, visitor)
            }
        }
    };
}
convertible!(GruCell, (Batch, Neurons));
convertible!(LstmCell, (Batch, Neurons));
convertible!(Gru, (Batch, Time, Neurons));
convertible!(Lstm, (Batch, Time, Neurons));

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::check_gradient;
    use dfdx::prelude::{
        AsArray, BuildModule, Cpu, Rank0, SampleTensor, SumTo, TensorFromVec, Trace, ZerosTensor,
    };
    use dfdx::tensor::OwnedTape;
    use dfdx::tensor_ops::Backward;

    type Seq = Tensor<(usize, usize, Const<3>), f64, Cpu>;

    /// Checks the gradient of the weight `pick` selects against central differences of `loss`.
    fn check_weight<M: Clone, S: dfdx::shapes::Shape>(
        name: &str,
        model: &M,
        pick: fn(&mut M) -> &mut Tensor<S, f64, Cpu>,
        grads: &dfdx::tensor::Gradients<f64, Cpu>,
        loss: impl Fn(&M) -> f64,
    ) {
        let mut copy = model.clone();
        let analytic = grads.get(pick(&mut copy)).as_vec();
        let w0 = pick(&mut copy).as_vec();
        let at = |v: &[f64]| {
            let mut m = model.clone();
            pick(&mut m).copy_from(v);
            loss(&m)
        };
        check_gradient(name, at, &w0, &analytic, 1e-6);
    }

    #[test]
    fn sequence_layers_equal_stepping_their_cells() {
        let dev: Cpu = Default::default();
        let x: Seq = dev.sample_normal_like(&(2, 4, Const));
        let gru = Gru::<3, 5, f64, Cpu>::build(&dev);
        let (out, last) = gru.forward(x.clone());
        let mut h: Tensor<(usize, Const<5>), f64, Cpu> = dev.zeros_like(&(2, Const));
        let mut steps = Vec::new();
        for t in 0..4 {
            h = gru.cell.forward((at_time(x.clone(), t).unwrap(), h));
            steps.push(h.as_vec());
        }
        let out = out.as_vec();
        for b in 0..2 {
            for t in 0..4 {
                assert_eq!(
                    &out[(b * 4 + t) * 5..(b * 4 + t + 1) * 5],
                    &steps[t][b * 5..(b + 1) * 5]
                );
            }
        }
        assert_eq!(last.as_vec(), h.as_vec());

        let lstm = Lstm::<3, 5, f64, Cpu>::build(&dev);
        let (out, (h_last, c_last)) = lstm.forward(x.clone());
        let zeros = || -> Tensor<(usize, Const<5>), f64, Cpu> { dev.zeros_like(&(2, Const)) };
        let (mut h, mut c) = (zeros(), zeros());
        for t in 0..4 {
            (h, c) = lstm.cell.forward((at_time(x.clone(), t).unwrap(), (h, c)));
        }
        assert_eq!(h_last.as_vec(), h.as_vec());
        assert_eq!(c_last.as_vec(), c.as_vec());
        assert_eq!(&out.as_vec()[3 * 5..4 * 5], &h.as_vec()[..5]);
    }

    #[test]
    fn gru_gradients_match_finite_differences() {
        let dev: Cpu = Default::default();
        let shape = (2usize, 3usize, Const::<3>);
        let x: Seq = dev.sample_normal_like(&shape);
        let g: Tensor<(usize, usize, Const<4>), f64, Cpu> = dev.sample_normal_like(&(2, 3, Const));
        let gru = Gru::<3, 4, f64, Cpu>::build(&dev);
        let loss = |gru: &Gru<3, 4, f64, Cpu>, x: Seq| {
            (gru.forward(x).0 * g.clone()).sum::<Rank0, _>().array()
        };
        let t = x.clone().leaky_traced();
        let h = t.retaped::<NoneTape>();
        let grads = (gru.forward(t).0 * g.clone()).sum::<Rank0, _>().backward();
        check_gradient(
            "x",
            |v| loss(&gru, dev.tensor_from_vec(v.to_vec(), shape)),
            &x.as_vec(),
            &grads.get(&h).as_vec(),
            1e-6,
        );
        let loss_of = |m: &Gru<3, 4, f64, Cpu>| loss(m, x.clone());
        check_weight(
            "x_r.weight",
            &gru,
            |m| &mut m.cell.x_r.weight,
            &grads,
            loss_of,
        );
        check_weight(
            "x_n.weight",
            &gru,
            |m| &mut m.cell.x_n.weight,
            &grads,
            loss_of,
        );
        check_weight(
            "h_z.weight",
            &gru,
            |m| &mut m.cell.h_z.weight,
            &grads,
            loss_of,
        );
        check_weight(
            "h_n.weight",
            &gru,
            |m| &mut m.cell.h_n.weight,
            &grads,
            loss_of,
        );
    }

    #[test]
    fn lstm_gradients_match_finite_differences() {
        let dev: Cpu = Default::default();
        let shape = (2usize, 3usize, Const::<3>);
        let x: Seq = dev.sample_normal_like(&shape);
        let g: Tensor<(usize, usize, Const<4>), f64, Cpu> = dev.sample_normal_like(&(2, 3, Const));
        let lstm = Lstm::<3, 4, f64, Cpu>::build(&dev);
        let loss = |m: &Lstm<3, 4, f64, Cpu>, x: Seq| {
            (m.forward(x).0 * g.clone()).sum::<Rank0, _>().array()
        };
        let t: Tensor<_, f64, Cpu, OwnedTape<f64, Cpu>> = x.clone().leaky_traced();
        let h = t.retaped::<NoneTape>();
        let grads = (lstm.forward(t).0 * g.clone()).sum::<Rank0, _>().backward();
        check_gradient(
            "x",
            |v| loss(&lstm, dev.tensor_from_vec(v.to_vec(), shape)),
            &x.as_vec(),
            &grads.get(&h).as_vec(),
            1e-6,
        );
        let loss_of = |m: &Lstm<3, 4, f64, Cpu>| loss(m, x.clone());
        check_weight(
            "h_f.weight",
            &lstm,
            |m| &mut m.cell.h_f.weight,
            &grads,
            loss_of,
        );
        check_weight(
            "h_g.weight",
            &lstm,
            |m| &mut m.cell.h_g.weight,
            &grads,
            loss_of,
        );
        check_weight(
            "h_o.weight",
            &lstm,
            |m| &mut m.cell.h_o.weight,
            &grads,
            loss_of,
        );
    }
}
