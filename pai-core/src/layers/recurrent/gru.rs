//! [`GruCell`] and [`Gru`], with their processors [`GruCellState`] and [`GruState`].

use dfdx::nn::tensor_collection::{ModuleVisitor, TensorCollection};
use dfdx::nn::{Module, NonMutableModule};
use dfdx::shapes::{Const, Dim, Dtype, HasShape};
use dfdx::tensor::{Merge, NoneTape, Tape, Tensor};
use dfdx::tensor_ops::{Device, TryAdd, TryMul};

use super::{at_time, batch_first, no_steps, use_at, Gate, Hidden, SeqIn, SeqOut};
use crate::axis::{Batch, Neurons, Time};
use crate::float::Float;

/// A GRU step: `(x, h) -> h'` (see the [module docs](super)).
#[derive(Debug, Clone)]
pub struct GruCell<const I: usize, const H: usize, E: Dtype, D: dfdx::tensor::Storage<E>> {
    /// `x_r`: the reset gate's input weights.
    pub x_r: Gate<I, H, E, D>,
    /// `x_z`: the update gate's input weights.
    pub x_z: Gate<I, H, E, D>,
    /// `x_n`: the new gate's input weights.
    pub x_n: Gate<I, H, E, D>,
    /// `h_r`: the reset gate's hidden-state weights.
    pub h_r: Gate<H, H, E, D>,
    /// `h_z`: the update gate's hidden-state weights.
    pub h_z: Gate<H, H, E, D>,
    /// `h_n`: the new gate's hidden-state weights.
    pub h_n: Gate<H, H, E, D>,
}

/// A GRU over a sequence: `(B, S, I) -> ((B, S, H), (B, H))`.
#[derive(Debug, Clone)]
pub struct Gru<const I: usize, const H: usize, E: Dtype, D: dfdx::tensor::Storage<E>> {
    /// The step.
    pub cell: GruCell<I, H, E, D>,
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

convertible!(GruCell, (Batch, Neurons));
convertible!(Gru, (Batch, Time, Neurons));

state_processor!(
    /// [`GruCell`] stepped by the caller: `(x, h) -> h'`. Dendrites add to `h'`; each
    /// dendrite steps from its own previous `h'`.
    GruCellState
);
state_processor!(
    /// [`Gru`] on `(x, h0)`: dendrites add to the output sequence; each dendrite starts from
    /// its own last state.
    GruState
);

recurrent_route!(
    GruCellState<B: Dim, T: Tape<E, D>, T2: Tape<E, D>>,
    input: (Tensor<(B, Const<I>), E, D, T>, Hidden<B, H, E, D, T2>),
    output: Hidden<B, H, E, D, T>,
    main: Hidden<B, H, E, D, T>,
    rest: (),
    joined: Hidden<B, H, E, D, T>,
    split: |output| (output, ()),
    join: |main, ()| main,
    state_of: |output| output,
);

recurrent_route!(
    GruState<B: Dim, S: Dim, T: Tape<E, D>>,
    input: (SeqIn<B, S, I, E, D, T>, Hidden<B, H, E, D, NoneTape>),
    output: (SeqOut<B, H, E, D, T>, Hidden<B, H, E, D, NoneTape>),
    main: SeqOut<B, H, E, D, T>,
    rest: Hidden<B, H, E, D, NoneTape>,
    joined: Self::Output,
    split: |output| output,
    join: |main, rest| (main, rest),
    state_of: |output| &output.1,
);
