//! Processors: converting layers with several inputs or outputs (recurrent cells, sequence
//! layers, multi-output blocks).
//!
//! A dendrite adds to one tensor. A [`Route`] says, for one input type, which tensor of the
//! layer's output that is ([`Route::split`]) and how to rebuild the layer's output after the
//! addition ([`Route::join`]). For recurrent layers it also keeps each dendrite's own state:
//! [`Route::dendrite_input`] replaces the state parts of the input by the dendrite's state
//! (zeros at first), and [`Route::state_of`] reads the dendrite's new state from its output.
//! The neuron's hidden state never reaches a dendrite and a dendrite's never reaches the
//! neuron. States are kept between calls until [`Dendritic::reset_state`](crate::dendritic::Dendritic::reset_state)
//! (and after any change of structure); a batch of another size also starts from zeros.
//!
//! Built in here: [`Plain`] (one tensor in, one out: the default) and [`FirstOutput`] (add to
//! the first element of a tuple output). The recurrent layers' processors live beside their
//! layers: [`GruCellState`](crate::layers::GruCellState), [`GruState`](crate::layers::GruState),
//! [`LstmCellState`](crate::layers::LstmCellState), [`LstmState`](crate::layers::LstmState)
//! (adding to the new hidden state or the output sequence) and
//! [`LstmLast`](crate::layers::LstmLast) (adding to the final hidden state of an LSTM over a
//! sequence). A custom layer gets its own with `#[derive(Processor)]`.

use dfdx::nn::Module;
use dfdx::shapes::{Dtype, HasShape, Shape};
use dfdx::tensor::{NoneTape, Tape, Tensor};
use dfdx::tensor_ops::{Device, ReshapeTo};

/// A layer input: a tensor, or a tuple `(data, state)` whose first element is the data and
/// whose second holds recurrent state (a tensor or a pair of tensors).
pub trait Inputs<E: Dtype, D: Device<E>>: Sized {
    /// The same with no tape anywhere.
    type Detached;
    /// The data on an (empty) tape `T`, the state detached: a candidate's own input.
    type Taped<T: Tape<E, D>>;
    /// A copy sharing values and ids, with no tape.
    fn detached(&self) -> Self::Detached;
    /// A copy sharing values and ids: the data on an empty tape `T`, the state detached.
    fn taped<T: Tape<E, D>>(&self) -> Self::Taped<T>;
    /// A copy of the same type sharing values and ids, with empty tapes (another use of the
    /// same input on the same tape).
    fn fresh(&self) -> Self;
    /// The data as a `(rows, features)` matrix on an empty tape `T`, its last axis the
    /// features, when it is one tensor of rank 1 or more (the input of
    /// [`Convertible::affine`] layers); `None` otherwise. Its gradient is the data's: the
    /// same id when the data is contiguous, a copy whose gradient flows back otherwise.
    ///
    /// # Errors
    /// Backend errors.
    ///
    /// [`Convertible::affine`]: crate::dendritic::Convertible::affine
    #[allow(clippy::type_complexity)]
    fn matrix<T: Tape<E, D>>(&self) -> Result<Option<Tensor<(usize, usize), E, D, T>>, D::Err>;
}

impl<S: Shape, E: Dtype, D: Device<E>, T1: Tape<E, D>> Inputs<E, D> for Tensor<S, E, D, T1> {
    type Detached = Tensor<S, E, D, NoneTape>;
    type Taped<T: Tape<E, D>> = Tensor<S, E, D, T>;
    fn detached(&self) -> Self::Detached {
        self.retaped::<NoneTape>()
    }
    fn taped<T: Tape<E, D>>(&self) -> Self::Taped<T> {
        self.retaped::<T>()
    }
    fn fresh(&self) -> Self {
        self.retaped::<T1>()
    }
    fn matrix<T: Tape<E, D>>(&self) -> Result<Option<Tensor<(usize, usize), E, D, T>>, D::Err> {
        let dims = self.shape().concrete();
        let Some(&features) = dims.as_ref().last() else {
            return Ok(None);
        };
        let rows = self.shape().num_elements() / features.max(1);
        self.retaped::<T>()
            .try_reshape_like(&(rows, features))
            .map(Some)
    }
}

/// Detached copies of state: a tensor or a pair of tensors.
pub trait State<E: Dtype, D: Device<E>>: Sized {
    /// With no tape.
    type Detached;
    /// A copy with no tape.
    fn detached(&self) -> Self::Detached;
    /// A copy of the same type with empty tapes.
    fn fresh(&self) -> Self;
}

impl<S: Shape, E: Dtype, D: Device<E>, T1: Tape<E, D>> State<E, D> for Tensor<S, E, D, T1> {
    type Detached = Tensor<S, E, D, NoneTape>;
    fn detached(&self) -> Self::Detached {
        self.retaped::<NoneTape>()
    }
    fn fresh(&self) -> Self {
        self.retaped::<T1>()
    }
}

impl<E: Dtype, D: Device<E>, A: State<E, D>, B: State<E, D>> State<E, D> for (A, B) {
    type Detached = (A::Detached, B::Detached);
    fn detached(&self) -> Self::Detached {
        (self.0.detached(), self.1.detached())
    }
    fn fresh(&self) -> Self {
        (self.0.fresh(), self.1.fresh())
    }
}

impl<S: Shape, E: Dtype, D: Device<E>, T1: Tape<E, D>, B: State<E, D>> Inputs<E, D>
    for (Tensor<S, E, D, T1>, B)
{
    type Detached = (Tensor<S, E, D, NoneTape>, B::Detached);
    type Taped<T: Tape<E, D>> = (Tensor<S, E, D, T>, B::Detached);
    fn detached(&self) -> Self::Detached {
        (self.0.retaped::<NoneTape>(), self.1.detached())
    }
    fn taped<T: Tape<E, D>>(&self) -> Self::Taped<T> {
        (self.0.retaped::<T>(), self.1.detached())
    }
    fn fresh(&self) -> Self {
        (self.0.retaped::<T1>(), self.1.fresh())
    }
    fn matrix<T: Tape<E, D>>(&self) -> Result<Option<Tensor<(usize, usize), E, D, T>>, D::Err> {
        Ok(None)
    }
}

/// A processor: its per-dendrite state type. The routes are [`Route`] impls.
pub trait Processor: 'static {
    /// One dendrite's recurrent state, kept between calls (detached tensors), or `()`.
    type State: Clone + std::fmt::Debug + 'static;
}

/// How input `X` flows through layer `M` (on device `D`) when it has dendrites.
pub trait Route<M, X, E: Dtype, D: Device<E>>: Processor {
    /// What the layer returns for `X`.
    type Output;
    /// The tensor dendrites add to.
    type Main;
    /// What passes through untouched.
    type Rest;
    /// What the dendritic layer returns.
    type Joined;
    /// The tensor dendrites add to, and the rest.
    fn split(output: Self::Output) -> (Self::Main, Self::Rest);
    /// The dendritic layer's output from the sum and the rest.
    fn join(main: Self::Main, rest: Self::Rest) -> Self::Joined;
    /// A dendrite's input: `x` with its recurrent parts replaced by `state` (zeros if `None`).
    ///
    /// # Errors
    /// Backend errors.
    fn dendrite_input(x: X, state: Option<&Self::State>) -> Result<X, D::Err>;
    /// A dendrite's new state, read from its output.
    fn state_of(output: &Self::Output) -> Option<Self::State>;
}

/// One tensor in, one tensor out: dendrites add to the output. The default processor.
#[derive(Debug, Clone, Copy, Default)]
pub struct Plain;

impl Processor for Plain {
    type State = ();
}

impl<M: Module<X>, X, E: Dtype, D: Device<E>> Route<M, X, E, D> for Plain {
    type Output = M::Output;
    type Main = M::Output;
    type Rest = ();
    type Joined = M::Output;
    fn split(output: M::Output) -> (M::Output, ()) {
        (output, ())
    }
    fn join(main: M::Output, (): ()) -> M::Output {
        main
    }
    fn dendrite_input(x: X, _: Option<&()>) -> Result<X, D::Err> {
        Ok(x)
    }
    fn state_of(_: &M::Output) -> Option<()> {
        None
    }
}

/// A tuple output: dendrites add to its first element, the others pass through.
#[derive(Debug, Clone, Copy, Default)]
pub struct FirstOutput;

impl Processor for FirstOutput {
    type State = ();
}

impl<M: Module<X, Output = (A, R)>, X, A, R, E: Dtype, D: Device<E>> Route<M, X, E, D>
    for FirstOutput
{
    type Output = (A, R);
    type Main = A;
    type Rest = R;
    type Joined = (A, R);
    fn split(output: (A, R)) -> (A, R) {
        output
    }
    fn join(main: A, rest: R) -> (A, R) {
        (main, rest)
    }
    fn dendrite_input(x: X, _: Option<&()>) -> Result<X, D::Err> {
        Ok(x)
    }
    fn state_of(_: &(A, R)) -> Option<()> {
        None
    }
}

/// A dendrite's stored state: every state tensor flattened.
pub type Stored<E, D> = Vec<Tensor<(usize,), E, D>>;

/// A tensor, or a pair of tensors, that is recurrent state (what `#[derive(Processor)]`
/// stores and replaces).
pub trait StateSlot<E: Dtype, D: Device<E>>: Sized {
    /// Appends detached, flattened copies of every tensor.
    fn store(&self, into: &mut Stored<E, D>);
    /// A copy with each tensor replaced by the next stored one of the same size, or by zeros
    /// (nothing stored yet, or a batch of another size).
    ///
    /// # Errors
    /// Backend errors.
    fn replaced(
        &self,
        stored: &mut std::slice::Iter<'_, Tensor<(usize,), E, D>>,
    ) -> Result<Self, D::Err>;
}

impl<S: Shape, E: Dtype, D: Device<E>, T: Tape<E, D>> StateSlot<E, D> for Tensor<S, E, D, T> {
    fn store(&self, into: &mut Stored<E, D>) {
        let n = self.shape().num_elements();
        into.push(
            self.retaped::<NoneTape>()
                .try_reshape_like(&(n,))
                .expect("same number of elements"),
        );
    }
    fn replaced(
        &self,
        stored: &mut std::slice::Iter<'_, Tensor<(usize,), E, D>>,
    ) -> Result<Self, D::Err> {
        let shape = *self.shape();
        match stored.next() {
            Some(s) if s.shape().0 == shape.num_elements() => {
                Ok(s.clone().try_reshape_like(&shape)?.retaped::<T>())
            }
            _ => Ok(self.device().try_zeros_like(&shape)?.retaped::<T>()),
        }
    }
}

impl<E: Dtype, D: Device<E>, A: StateSlot<E, D>, B: StateSlot<E, D>> StateSlot<E, D> for (A, B) {
    fn store(&self, into: &mut Stored<E, D>) {
        self.0.store(into);
        self.1.store(into);
    }
    fn replaced(
        &self,
        stored: &mut std::slice::Iter<'_, Tensor<(usize,), E, D>>,
    ) -> Result<Self, D::Err> {
        Ok((self.0.replaced(stored)?, self.1.replaced(stored)?))
    }
}

/// What `#[derive(Processor)]` stores: one state's tensors.
pub fn store_state<E: Dtype, D: Device<E>, S: StateSlot<E, D>>(state: &S) -> Stored<E, D> {
    let mut out = Vec::new();
    state.store(&mut out);
    out
}

/// What `#[derive(Processor)]` feeds a dendrite: `like` with the stored state, or zeros.
///
/// # Errors
/// Backend errors.
pub fn restore_state<E: Dtype, D: Device<E>, S: StateSlot<E, D>>(
    like: &S,
    stored: Option<&Stored<E, D>>,
) -> Result<S, D::Err> {
    let empty = Vec::new();
    like.replaced(&mut stored.unwrap_or(&empty).iter())
}
