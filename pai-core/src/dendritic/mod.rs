//! [`Dendritic`]: a layer (the neurons) plus the dendrites grown on it.
//!
//! For a layer `f` with output `y = f(x)` and accepted dendrites `1..=k`, each a copy `fᵢ` of
//! `f` with its own weights:
//!
//! ```text
//! aᵢ = σ( fᵢ(x̂) + Σ_{j<i} cᵢⱼ ⊙ aⱼ )        (cascade: dendrite i sees dendrites before it)
//! y  = f(x) + Σᵢ wᵢ ⊙ aᵢ                      (one output weight per neuron per dendrite)
//! ```
//!
//! `σ` is the dendrite [`Activation`], `cᵢⱼ` and `wᵢ` are per-neuron vectors broadcast along
//! every non-neuron axis of the output (the axis is given by the layer's tags, see
//! [`crate::axis`]), and `x̂` is the input *detached* ("perforated"): dendrites shape the
//! forward pass but send no gradient upstream. With [`DendriteLearning::Gradient`] nothing is
//! detached and dendrites train with the task loss instead.
//!
//! Phases ([`Phase`]): in the neuron phase `f` and the `wᵢ` train; accepted dendrites are frozen.
//! [`start_dendrite_phase`](Dendritic::start_dendrite_phase) adds a candidate `f_{k+1}` with
//! cascade weights to every accepted dendrite; in the correlation mode it learns to correlate
//! with the neuron error (see [`crate::correlation`]) while the layer output stays as it was.
//! [`accept_candidate`](Dendritic::accept_candidate) appends the best snapshot with
//! `w_{k+1} = 0`, so accepting changes no output; the next neuron phase learns to use it.

mod candidate;
mod config;
mod convertible;
mod dendrite;
mod forward;
mod sum;

pub use candidate::CandidateState;
pub use config::{Activation, DendriteConfig, DendriteLearning};
pub use convertible::{copy_module, reinit_module, Affine, Convertible};
pub use dendrite::SeedState;

use std::marker::PhantomData;
use std::sync::{Arc, Mutex};

use dfdx::shapes::ConstDim;
use dfdx::tensor::ZerosTensor;

use crate::correlation::CorrelationReport;
use crate::error::{Error, Result};
use crate::host::{lock, Scratch};
use crate::params::{join, join_index, ModuleParams, ParamVisitor, Role};
use crate::phase::Phase;
use crate::processor::{Plain, Processor};
use candidate::Candidate;
use dendrite::{Dendrite, DendriteParams, States};

/// A converted layer: neurons `M`, accepted dendrites, and a candidate in the dendrite phase.
///
/// `Tags` says which output axis holds the neurons (see [`crate::axis`]); it defaults to the
/// layer's own default (`NeuronsLast` for `Linear`).
///
/// ```
/// use pai_core::prelude::*;
/// use dfdx::prelude::*;
///
/// let dev: Cpu = Default::default();
/// let linear = dev.build_module::<Linear<4, 3>, f32>();
/// let mut layer: Dendritic<_> = Dendritic::new(&dev, linear, DendriteConfig::default())?;
/// let x: Tensor<Rank2<8, 4>, f32, Cpu> = dev.sample_normal();
/// let before = layer.forward(x.clone()).array();
/// layer.start_dendrite_phase()?;
/// assert_eq!(layer.phase(), Phase::Dendrite);
/// // ... train the candidate, then `accept_candidate()`; here we give up on it:
/// layer.discard_candidate()?;
/// assert_eq!(layer.forward(x).array(), before);
/// # Ok::<(), pai_core::Error>(())
/// ```
#[derive(Debug)]
pub struct Dendritic<M: Convertible, Tags = <M as Convertible>::DefaultTags, P: Processor = Plain> {
    neurons: M,
    dendrites: Vec<Dendrite<M>>,
    candidate: Option<Candidate<M>>,
    config: DendriteConfig,
    device: M::Device,
    /// Bumped by every change of structure (optimizer state is keyed on it).
    generation: u64,
    /// Seeds of new dendrites: `(layer seed, dendrites drawn so far)`.
    seeds: SeedState,
    /// Recurrent state of each dendrite (processors of recurrent layers).
    states: Mutex<States<P::State>>,
    /// Host vectors of the fused dendrite sum, reused from step to step (CPU).
    scratch: Arc<Scratch<M::Dtype>>,
    _tags: PhantomData<fn() -> (Tags, P)>,
}

impl<M: Convertible, Tags: 'static, P: Processor> Dendritic<M, Tags, P> {
    /// Wraps `neurons` (for instance a pretrained layer) with no dendrites yet.
    ///
    /// # Errors
    /// [`Error::Config`] for an out-of-range config.
    pub fn new(dev: &M::Device, neurons: M, config: DendriteConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            neurons,
            dendrites: Vec::new(),
            candidate: None,
            config,
            device: dev.clone(),
            generation: 0,
            seeds: SeedState {
                seed: dfdx::tensor::RandomU64::random_u64(dev),
                drawn: 0,
            },
            states: Mutex::new(States::default()),
            scratch: Arc::default(),
            _tags: PhantomData,
        })
    }

    /// The original layer.
    pub fn neurons(&self) -> &M {
        &self.neurons
    }

    /// The original layer, mutably (to load pretrained weights into it).
    pub fn neurons_mut(&mut self) -> &mut M {
        &mut self.neurons
    }

    /// The layer's settings.
    pub fn config(&self) -> &DendriteConfig {
        &self.config
    }

    /// The dendrite phase while a candidate exists, the neuron phase otherwise.
    pub fn phase(&self) -> Phase {
        if self.candidate.is_some() {
            Phase::Dendrite
        } else {
            Phase::Neuron
        }
    }

    /// The layer copy inside accepted dendrite `k` (for inspection).
    pub fn dendrite_module(&self, k: usize) -> Option<&M> {
        self.dendrites.get(k).map(|d| &d.module)
    }

    /// Accepted dendrites.
    pub fn dendrite_count(&self) -> usize {
        self.dendrites.len()
    }

    /// Number of neurons.
    pub fn neuron_count(&self) -> usize {
        M::Neurons::SIZE
    }

    /// Counter of structure changes (dendrites added or removed, candidates made or dropped).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Forgets every dendrite's recurrent state: the next call starts them from zeros.
    pub fn reset_state(&self) {
        *lock(&self.states) = States::default();
    }

    /// After any change of structure: a new generation, and recurrent states start over.
    fn restructured(&mut self) {
        self.generation += 1;
        self.reset_state();
    }

    /// Where the next dendrite's weights come from.
    pub fn seeds(&self) -> SeedState {
        self.seeds
    }

    /// Sets where the next dendrite's weights come from (checkpoint resume).
    pub fn set_seeds(&mut self, seeds: SeedState) {
        self.seeds = seeds;
    }

    /// The candidate's correlation scores, in the dendrite phase.
    pub fn correlation(&self) -> Option<CorrelationReport> {
        self.candidate.as_ref().map(Candidate::report)
    }

    /// Whether the candidate has a snapshot that accepting would keep.
    pub fn has_snapshot(&self) -> bool {
        match (&self.candidate, self.config.learning) {
            (Some(_), DendriteLearning::Gradient) => true,
            (Some(c), DendriteLearning::Correlation) => c.best.is_some(),
            (None, _) => false,
        }
    }

    fn expect_phase(&self, expected: Phase, action: &'static str) -> Result<()> {
        let found = self.phase();
        if found == expected {
            Ok(())
        } else {
            Err(Error::WrongPhase {
                layer: String::new(),
                action,
                expected,
                found,
            })
        }
    }

    /// The next dendrite this layer draws: the layer copied, weights from the next seed,
    /// cascade weights to every accepted dendrite.
    fn next_dendrite(&mut self) -> Result<Dendrite<M>> {
        let seed = self.seeds.next();
        Dendrite::fresh(
            &self.neurons,
            self.dendrites.len(),
            &self.device,
            self.config.init_std,
            seed,
        )
    }

    /// Adds a fresh candidate (a copy of the layer with `N(0, init_std²)` weights and cascade
    /// weights to every accepted dendrite) and enters the dendrite phase.
    ///
    /// # Errors
    /// [`Error::WrongPhase`] in the dendrite phase; backend errors.
    pub fn start_dendrite_phase(&mut self) -> Result<()> {
        self.expect_phase(Phase::Neuron, "starting a dendrite phase")?;
        let dendrite = self.next_dendrite()?;
        self.candidate = Some(Candidate::new(dendrite, &self.device)?);
        self.restructured();
        Ok(())
    }

    /// Appends the candidate as a new dendrite and returns to the neuron phase. In the
    /// correlation mode the best snapshot is kept, with zero output weights, so the layer's
    /// output does not change; in the gradient mode the candidate is kept as trained.
    ///
    /// # Errors
    /// [`Error::WrongPhase`] in the neuron phase; [`Error::NoSnapshot`] when no snapshot was
    /// taken yet (the candidate stays, so training can go on).
    pub fn accept_candidate(&mut self) -> Result<()> {
        self.expect_phase(Phase::Dendrite, "accepting a candidate")?;
        if !self.has_snapshot() {
            return Err(Error::NoSnapshot {
                layer: String::new(),
                warmup: self.config.correlation.warmup_batches,
            });
        }
        let Some(candidate) = self.candidate.take() else {
            unreachable!("phase checked above")
        };
        let dendrite = match (self.config.learning, candidate.best) {
            (DendriteLearning::Correlation, Some(mut best)) => {
                best.output = self
                    .device
                    .try_zeros_like(&(M::Neurons::default(),))
                    .map_err(Error::device)?;
                best
            }
            _ => candidate.dendrite,
        };
        self.dendrites.push(dendrite);
        self.restructured();
        Ok(())
    }

    /// Drops the candidate and returns to the neuron phase with the dendrites it had.
    ///
    /// # Errors
    /// [`Error::WrongPhase`] in the neuron phase.
    pub fn discard_candidate(&mut self) -> Result<()> {
        self.expect_phase(Phase::Dendrite, "discarding a candidate")?;
        self.candidate = None;
        self.restructured();
        Ok(())
    }

    /// Keeps the first `count` dendrites and drops the rest (rolling back dendrites that did
    /// not help). A no-op when there are not more than `count`.
    ///
    /// # Errors
    /// [`Error::WrongPhase`] in the dendrite phase (the candidate cascades from all of them).
    pub fn truncate_dendrites(&mut self, count: usize) -> Result<()> {
        self.expect_phase(Phase::Neuron, "removing dendrites")?;
        if count < self.dendrites.len() {
            self.dendrites.truncate(count);
            self.restructured();
        }
        Ok(())
    }

    /// Appends fresh dendrites (zero output weights) until there are `count`: the structure a
    /// checkpoint is loaded into.
    ///
    /// # Errors
    /// [`Error::WrongPhase`] in the dendrite phase; backend errors.
    pub fn grow_dendrites(&mut self, count: usize) -> Result<()> {
        self.expect_phase(Phase::Neuron, "adding dendrites")?;
        while self.dendrites.len() < count {
            let d = self.next_dendrite()?;
            self.dendrites.push(d);
            self.restructured();
        }
        Ok(())
    }

    /// Before an optimizer step: takes the candidate gradients of the last backward pass and
    /// snapshots the candidate if its score improved.
    ///
    /// # Errors
    /// [`Error::NonFinite`] when the captured neuron error held NaN or infinity.
    pub fn prepare_step(&mut self) -> Result<()> {
        match &mut self.candidate {
            Some(candidate) => {
                let correlation = (self.config.learning == DendriteLearning::Correlation)
                    .then_some(&self.config.correlation);
                candidate.take_step(&self.device, correlation)
            }
            None => Ok(()),
        }
    }

    /// Visits every tensor: `neurons.*`, `dendrites.{i}.{module.*,cascade.{j},output}` and
    /// `candidate.*`, with roles and whether each trains in the current phase.
    ///
    /// # Errors
    /// The visitor's first error.
    pub fn visit_params<V: ParamVisitor<M::Dtype, M::Device>>(
        &mut self,
        path: &str,
        visitor: &mut V,
    ) -> Result<()> {
        let neuron_phase = self.candidate.is_none();
        let gradient = self.config.learning == DendriteLearning::Gradient;
        let neurons_path = join(path, "neurons");
        self.neurons.visit_params(
            ModuleParams::new(&neurons_path, Role::Neuron, neuron_phase),
            visitor,
        )?;
        for (i, d) in self.dendrites.iter_mut().enumerate() {
            let how = DendriteParams {
                role: Role::Dendrite,
                trainable: gradient && neuron_phase,
                output_trainable: neuron_phase,
                own_grads: None,
            };
            d.visit_params(&join_index(path, "dendrites", i), how, visitor)?;
        }
        if let Some(c) = &mut self.candidate {
            let how = DendriteParams {
                role: Role::Candidate,
                // correlation mode: only once a backward pass produced candidate gradients.
                trainable: gradient || c.grads.is_some(),
                output_trainable: gradient,
                own_grads: if gradient { None } else { c.grads.as_mut() },
            };
            let candidate_path = join(path, "candidate");
            c.dendrite.visit_params(&candidate_path, how, visitor)?;
            c.with_stats(|stats| stats.visit_params(&join(&candidate_path, "stats"), visitor))?;
            if let Some(best) = &mut c.best {
                let how = DendriteParams {
                    role: Role::Buffer,
                    trainable: false,
                    output_trainable: false,
                    own_grads: None,
                };
                best.visit_params(&join(&candidate_path, "best"), how, visitor)?;
            }
        }
        Ok(())
    }

    /// The candidate's scalar state (the tensors are in [`Self::visit_params`]), in the
    /// dendrite phase.
    pub fn candidate_state(&self) -> Option<CandidateState> {
        self.candidate.as_ref().map(Candidate::state)
    }

    /// Gives the candidate the scalar state `state`, and a snapshot slot when it had one, so
    /// that loading the tensors completes it.
    ///
    /// # Errors
    /// [`Error::WrongPhase`] in the neuron phase; backend errors.
    pub fn restore_candidate_state(&mut self, state: &CandidateState) -> Result<()> {
        self.expect_phase(Phase::Dendrite, "restoring a candidate")?;
        let Some(c) = &mut self.candidate else {
            unreachable!("phase checked above")
        };
        c.with_stats(|stats| stats.restore_scalars(state.batches, state.best_score));
        c.best = if state.snapshot {
            Some(c.dendrite.copy(&self.device)?)
        } else {
            None
        };
        Ok(())
    }
}
