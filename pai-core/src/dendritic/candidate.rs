//! The candidate of a dendrite phase and how it learns in the correlation mode.
//!
//! The candidate learns from the neuron error: the loss gradient at its layer's output, which
//! exists only once the task loss's backward pass has reached that output. [`Candidate::capture`]
//! puts a hook on the output's tape that, at that moment, folds the error and the candidate's
//! activation into the running statistics ([`crate::correlation`]) and backpropagates the
//! correlation objective through the candidate alone. The hook runs inside `backward()`, after
//! the forward pass has given up its borrow of the layer, so what it produces waits in a shared
//! cell ([`Training`]) until [`Candidate::take_step`], called by the optimizer step, collects it:
//! the candidate's gradients, and whether the score improved (then a snapshot is taken).
//!
//! Capture, statistics and the hand-over all live here; the optimizer only asks each layer to
//! take its step and then walks the parameters.

use std::any::Any;
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use dfdx::shapes::{HasShape, Shape};
use dfdx::tensor::{Gradients, NoneTape, OwnedTape, PutTape, SplitTape, Tape, Tensor};
use dfdx::tensor_ops::{Backward, Device, SumTo, TryMul};

use super::convertible::Convertible;
use super::dendrite::Dendrite;
use crate::axis::NeuronAxis;
use crate::correlation::{Correlation, CorrelationConfig, CorrelationReport};
use crate::error::{Error, Result};
use crate::float::Float;
use crate::host::lock;

/// The scalars of a candidate's training state, saved with checkpoints.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CandidateState {
    /// Batches its statistics have seen.
    pub batches: usize,
    /// Best layer score so far.
    pub best_score: f64,
    /// Whether a snapshot exists.
    pub snapshot: bool,
}

/// What the backward hook of a candidate (correlation mode) leaves for the next step.
#[derive(Debug)]
pub(crate) struct Training<M: Convertible> {
    pub stats: Correlation<M::Neurons, M::Dtype, M::Device>,
    /// Candidate gradients from the last backward pass.
    grads: Option<Gradients<M::Dtype, M::Device>>,
    /// The last update set a new best score: snapshot before the next step.
    improved: bool,
    /// The captured neuron error was not finite.
    non_finite: bool,
    /// The statistics could not be updated (the data-parallel replicas could not sum).
    failure: Option<Error>,
    /// Names this state's captured batches in [`PENDING`].
    id: u64,
    /// Since the phase began, a backward pass brought this candidate a neuron error, or a
    /// training forward pass put its hook on a real tape (an empty batch brings no error).
    captured: bool,
}

/// A captured batch waiting for the optimizer step.
type Pending<M> = Box<dyn FnOnce(&mut Training<M>) -> std::result::Result<(), DevErr<M>>>;
type DevErr<M> = <<M as Convertible>::Device as dfdx::tensor::HasErr>::Err;

thread_local! {
    /// With data-parallel replicas, the batches captured by this thread's backward passes:
    /// `(Training::id, Pending<M>)`, folded in at the optimizer step, in walk order on every
    /// replica (also on one that had no rows to capture). Kept per thread, not in the layer:
    /// the candidate's tape is not `Send`, and a layer must stay `Send`; the backward pass and
    /// the step of a replica run on its thread.
    static PENDING: RefCell<Vec<(u64, Box<dyn Any>)>> = const { RefCell::new(Vec::new()) };
}

/// Ids of [`Training`] states.
static IDS: AtomicU64 = AtomicU64::new(0);

/// The candidate of the dendrite phase.
#[derive(Debug)]
pub(crate) struct Candidate<M: Convertible> {
    pub dendrite: Dendrite<M>,
    /// The snapshot accepting will keep (correlation mode).
    pub best: Option<Dendrite<M>>,
    /// Shared with the backward hooks of forward passes still on a tape.
    training: Arc<Mutex<Training<M>>>,
    /// Gradients taken from `training` for the optimizer step.
    pub grads: Option<Gradients<M::Dtype, M::Device>>,
}

impl<M: Convertible> Candidate<M> {
    /// A candidate with fresh statistics.
    pub fn new(dendrite: Dendrite<M>, dev: &M::Device) -> Result<Self> {
        let training = Training {
            stats: Correlation::new(dev)?,
            grads: None,
            improved: false,
            non_finite: false,
            failure: None,
            captured: false,
            id: IDS.fetch_add(1, Ordering::Relaxed),
        };
        Ok(Self {
            dendrite,
            best: None,
            training: Arc::new(Mutex::new(training)),
            grads: None,
        })
    }

    /// The correlation scores so far.
    pub fn report(&self) -> CorrelationReport {
        lock(&self.training).stats.report()
    }

    /// Runs `f` on the running statistics (to visit or restore them).
    pub fn with_stats<R>(
        &self,
        f: impl FnOnce(&mut Correlation<M::Neurons, M::Dtype, M::Device>) -> R,
    ) -> R {
        f(&mut lock(&self.training).stats)
    }

    /// The scalar state saved with checkpoints.
    pub fn state(&self) -> CandidateState {
        let (batches, best_score) = lock(&self.training).stats.scalars();
        CandidateState {
            batches,
            best_score,
            snapshot: self.best.is_some(),
        }
    }

    /// Before an optimizer step: takes the gradients of the last backward pass and snapshots
    /// the candidate if its score improved.
    ///
    /// # Errors
    /// [`Error::NonFinite`] when the captured neuron error held NaN or infinity.
    pub fn take_step(
        &mut self,
        dev: &M::Device,
        correlation: Option<&CorrelationConfig>,
    ) -> Result<()> {
        let (grads, improved) = {
            let mut training = lock(&self.training);
            // data parallel: the statistics are merged here, in walk order on every replica
            let id = training.id;
            let pending: Vec<Pending<M>> = PENDING.with(|p| {
                let mut p = p.borrow_mut();
                let (mine, others) = std::mem::take(&mut *p).into_iter().partition(|e| e.0 == id);
                *p = others;
                let mine: Vec<(u64, Box<dyn Any>)> = mine;
                mine.into_iter()
                    .filter_map(|(_, b)| b.downcast::<Pending<M>>().ok().map(|b| *b))
                    .collect()
            });
            if pending.is_empty() {
                if let (Some(config), Some(_)) = (correlation, crate::collective::active()) {
                    match training.stats.join_empty(config)? {
                        Some(improved) => {
                            training.improved |= improved;
                            // no rows, no gradient of its own: zeros join the others' sum
                            training.grads = Some(Gradients::leaky());
                        }
                        None => training.non_finite = true,
                    }
                }
            }
            for p in pending {
                p(&mut training).map_err(Error::device)?;
            }
            if let Some(e) = training.failure.take() {
                return Err(e);
            }
            if std::mem::take(&mut training.non_finite) {
                return Err(Error::NonFinite {
                    layer: String::new(),
                    what: "the captured neuron error",
                    hint: "the loss gradient at this layer's output was NaN or infinite; check \
                           the loss and the data, or lower the learning rate",
                });
            }
            training.captured |= training.grads.is_some();
            if correlation.is_some() && !training.captured {
                return Err(Error::NoNeuronError {
                    layer: String::new(),
                });
            }
            (
                training.grads.take(),
                std::mem::take(&mut training.improved),
            )
        };
        self.grads = grads;
        if improved {
            self.best = Some(self.dendrite.copy(dev)?);
        }
        Ok(())
    }
}

impl<M, E, D> Candidate<M>
where
    E: Float,
    D: Device<E>,
    M: Convertible<Dtype = E, Device = D>,
{
    /// Returns `y` with a hook on its tape: once the task loss's backward pass has completed
    /// `y`'s gradient (the neuron error), the hook folds it and `act`, the candidate's
    /// activation on its own tape, into the statistics and backpropagates the correlation
    /// objective through the candidate.
    pub fn capture<Tags, So, T>(
        &self,
        y: Tensor<So, E, D, T>,
        act: Tensor<So, E, D, OwnedTape<E, D>>,
        config: &CorrelationConfig,
    ) -> Tensor<So, E, D, T>
    where
        So: Shape,
        T: Tape<E, D>,
        Tags: NeuronAxis<So, Neurons = M::Neurons>,
    {
        let training = Arc::clone(&self.training);
        if T::OWNS_TAPE {
            lock(&training).captured = true;
        }
        let config = config.clone();
        let (y, mut tape) = y.split_tape();
        // a ghost (id and shape), not a clone: see `host::put_backward`
        let ghost = y.ghost();
        tape.add_backward_op(move |grads| {
            grads.try_alloc_for(&ghost)?;
            let error = grads.get(&ghost);
            if crate::collective::active().is_none() {
                return observe::<M, Tags, So, E, D>(&mut lock(&training), act, &error, &config);
            }
            // data parallel: folded in at the optimizer step, where every replica joins
            let pending: Pending<M> = Box::new(move |t: &mut Training<M>| {
                observe::<M, Tags, So, E, D>(t, act, &error, &config)
            });
            let id = lock(&training).id;
            PENDING.with(|p| p.borrow_mut().push((id, Box::new(pending))));
            Ok(())
        });
        y.put_tape(tape)
    }
}

/// The candidate's backward hook: statistics, then the correlation objective's gradients.
fn observe<M, Tags, So, E, D>(
    training: &mut Training<M>,
    act: Tensor<So, E, D, OwnedTape<E, D>>,
    error: &Tensor<So, E, D>,
    config: &CorrelationConfig,
) -> Result<(), D::Err>
where
    E: Float,
    D: Device<E>,
    M: Convertible<Dtype = E, Device = D>,
    So: Shape,
    Tags: NeuronAxis<So, Neurons = M::Neurons>,
{
    if error.shape().num_elements() == 0 && crate::collective::active().is_none() {
        // an empty batch (sequences with no steps): nothing to learn from or to count (a
        // data-parallel replica with an empty shard still joins the others' sums)
        return Ok(());
    }
    let value = act.retaped::<NoneTape>();
    match training.stats.update::<So, Tags>(&value, error, config) {
        Err(e) => training.failure = Some(e),
        Ok(None) => training.non_finite = true,
        Ok(Some(update)) => {
            training.improved |= update.improved;
            let objective = act.try_mul(update.activation_grad)?.try_sum()?;
            training.grads = Some(objective.try_backward()?);
        }
    }
    Ok(())
}
