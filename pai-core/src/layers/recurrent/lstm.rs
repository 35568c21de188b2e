//! [`LstmCell`] and [`Lstm`], with their processors [`LstmCellState`], [`LstmState`] and
//! [`LstmLast`].

use dfdx::nn::tensor_collection::{ModuleVisitor, TensorCollection};
use dfdx::nn::{Module, NonMutableModule};
use dfdx::shapes::{Const, Dim, Dtype, HasShape};
use dfdx::tensor::{Merge, NoneTape, PutTape, SplitTape, Tape, Tensor};
use dfdx::tensor_ops::{Device, TryAdd, TryMul};

use super::{at_time, batch_first, no_steps, use_at, Gate, Hidden, SeqIn, SeqOut};
use crate::axis::{Batch, Neurons, Time};
use crate::float::Float;

/// An LSTM step: `(x, (h, c)) -> (h', c')` (see the [module docs](super)).
#[derive(Debug, Clone)]
pub struct LstmCell<const I: usize, const H: usize, E: Dtype, D: dfdx::tensor::Storage<E>> {
    /// `x_i`: the input gate's input weights.
    pub x_i: Gate<I, H, E, D>,
    /// `x_f`: the forget gate's input weights.
    pub x_f: Gate<I, H, E, D>,
    /// `x_g`: the cell gate's input weights.
    pub x_g: Gate<I, H, E, D>,
    /// `x_o`: the output gate's input weights.
    pub x_o: Gate<I, H, E, D>,
    /// `h_i`: the input gate's hidden-state weights.
    pub h_i: Gate<H, H, E, D>,
    /// `h_f`: the forget gate's hidden-state weights.
    pub h_f: Gate<H, H, E, D>,
    /// `h_g`: the cell gate's hidden-state weights.
    pub h_g: Gate<H, H, E, D>,
    /// `h_o`: the output gate's hidden-state weights.
    pub h_o: Gate<H, H, E, D>,
}

/// An LSTM over a sequence: `(B, S, I) -> ((B, S, H), ((B, H), (B, H)))`.
#[derive(Debug, Clone)]
pub struct Lstm<const I: usize, const H: usize, E: Dtype, D: dfdx::tensor::Storage<E>> {
    /// The step.
    pub cell: LstmCell<I, H, E, D>,
}

collection!(LstmCell {
    (x_i, x_f, x_g, x_o),
    (h_i, h_f, h_g, h_o)
});
collection!(Lstm { cell });

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

convertible!(LstmCell, (Batch, Neurons));
convertible!(Lstm, (Batch, Time, Neurons));

state_processor!(
    /// [`LstmCell`] stepped by the caller: `(x, (h, c)) -> (h', c')`. Dendrites add to `h'`;
    /// `c'` passes through; each dendrite keeps its own `(h, c)`.
    LstmCellState
);
state_processor!(
    /// [`Lstm`] on `(x, (h0, c0))`: dendrites add to the output sequence; each dendrite starts
    /// from its own last `(h, c)`.
    LstmState
);
state_processor!(
    /// [`Lstm`] on `(x, (h0, c0))`, adding to the *final* hidden state: the layer returns
    /// `(h_last, (h, c))` with `h_last` on the tape.
    LstmLast
);

/// An LSTM state `(h, c)`.
type Pair<B, const H: usize, E, D, T> = (Hidden<B, H, E, D, T>, Hidden<B, H, E, D, T>);
/// What [`Lstm`] returns: the output sequence and the final state.
type LstmOut<B, const H: usize, E, D, T> = (SeqOut<B, H, E, D, T>, Pair<B, H, E, D, NoneTape>);

recurrent_route!(
    LstmCellState<B: Dim, T: Tape<E, D>, T2: Tape<E, D>>,
    input: (Tensor<(B, Const<I>), E, D, T>, Pair<B, H, E, D, T2>),
    output: Pair<B, H, E, D, T>,
    main: Hidden<B, H, E, D, T>,
    rest: Hidden<B, H, E, D, T>,
    joined: Self::Output,
    split: |output| output,
    join: |main, rest| (main, rest),
    state_of: |output| output,
);

recurrent_route!(
    LstmState<B: Dim, S: Dim, T: Tape<E, D>>,
    input: (SeqIn<B, S, I, E, D, T>, Pair<B, H, E, D, NoneTape>),
    output: LstmOut<B, H, E, D, T>,
    main: SeqOut<B, H, E, D, T>,
    rest: Pair<B, H, E, D, NoneTape>,
    joined: Self::Output,
    split: |output| output,
    join: |main, rest| (main, rest),
    state_of: |output| &output.1,
);

recurrent_route!(
    LstmLast<B: Dim, S: Dim, T: Tape<E, D>>,
    input: (SeqIn<B, S, I, E, D, T>, Pair<B, H, E, D, NoneTape>),
    output: LstmOut<B, H, E, D, T>,
    main: Hidden<B, H, E, D, T>,
    rest: Pair<B, H, E, D, NoneTape>,
    joined: (Hidden<B, H, E, D, T>, Pair<B, H, E, D, NoneTape>),
    // The last step of the output sequence, with the whole recurrence's tape; for a sequence
    // with no steps, the final hidden state (the initial one) on that tape.
    split: |(seq, state)| {
        let main = match seq.shape().1.size() {
            0 => {
                let (_, tape) = seq.split_tape();
                state.0.clone().put_tape(tape)
            }
            steps => at_time(seq, steps - 1)
                .expect("selecting a step allocates no more than the step"),
        };
        (main, state)
    },
    join: |main, rest| (main, rest),
    state_of: |output| &output.1,
);
