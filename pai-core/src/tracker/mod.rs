//! The tracker: decides when to switch phases, rolls back to the best model, keeps or drops
//! dendrites, owns the learning-rate schedule, and writes checkpoints, CSV files and a graph.
//!
//! Call [`Tracker::add_validation_score`] once per epoch. It returns a [`Step`]:
//!
//! * [`Step::Continue`]: keep training;
//! * [`Step::Restructured`]: the tracker changed the model in place (a dendrite phase began or
//!   ended, or the model was rolled back); the optimizer was adapted with it; keep training;
//! * [`Step::Complete`]: stop; the model holds the best weights.
//!
//! Neuron phase. A score counts as a new best when it beats the best so far by the relative and
//! absolute thresholds that apply at the current dendrite count; each best is saved. When the
//! switch mode says the phase is over:
//! 1. if the newest set of dendrites never produced a new best, it is discarded by rolling back
//!    to the best checkpoint, and a fresh set is tried, at most `max_retries` times in a row;
//!    after that the run is complete;
//! 2. at `max_dendrites` the run is complete;
//! 3. otherwise the model is rolled back to its best weights and a dendrite phase begins.
//!
//! Dendrite phase. It ends when the candidates' best correlation has not improved for
//! `dendrite_patience` epochs (or by the fixed switch modes, or the cap); the candidates are
//! accepted and the learning rate restarts by [`LrRestart`].
//!
//! Every epoch writes `latest.safetensors` (model, optimizer, tracker), which
//! [`Tracker::resume`] continues from exactly.

mod config;
mod decide;
mod files;
mod graph;
mod points;
mod progress;
mod state;

pub use config::{LrRestart, Schedule, SwitchMode, TrackerConfig};
pub use progress::Progress;
pub use state::{ArchitectureRecord, BestScore, EpochRecord, SwitchRecord, TrackerState, Trial};

use std::path::Path;
use std::time::Instant;

use crate::checkpoint;
use crate::error::{Error, Result};
use crate::model::DendriticModel;
use crate::optim::lr::PlateauState;
use crate::optim::{DendriticOptimizer, OptimizerFor, OptimizerState, Rule};
use crate::phase::Phase;
use decide::max_dendrites;
use points::{metadata, model_device, Store, CONFIG_KEY, OPTIMIZER_KEY, STATE_KEY};
use state::Pending;

/// What the caller does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Keep training; `improved` when this epoch set a new best.
    Continue {
        /// This epoch set a new best validation score.
        improved: bool,
    },
    /// The model was changed in place (phase switch or rollback); keep training.
    Restructured,
    /// Training is over and the model holds the best weights.
    Complete,
}

/// The phase state machine. See the [module docs](self).
#[derive(Debug)]
pub struct Tracker {
    config: TrackerConfig,
    state: TrackerState,
    pending: Pending,
    last_call: Option<Instant>,
    store: Store,
}

impl Tracker {
    /// A new run writing under `config.dir` (created if needed).
    ///
    /// Made on a data-parallel replica other than rank 0 (see [`crate::parallel`]), it writes
    /// nothing: its save points stay in memory, so that its rollbacks restore the same
    /// weights as rank 0's, and only rank 0 writes the run's files.
    ///
    /// # Errors
    /// [`Error::Config`] for a bad config; [`Error::Io`] when the directory cannot be made.
    pub fn new(config: TrackerConfig) -> Result<Self> {
        config.validate()?;
        let store = Store::for_this_replica();
        if matches!(store, Store::Files) {
            std::fs::create_dir_all(&config.dir).map_err(|source| Error::Io {
                action: "creating",
                path: config.dir.clone(),
                source,
            })?;
        }
        Ok(Self {
            config,
            state: TrackerState::default(),
            pending: Pending::default(),
            last_call: None,
            store,
        })
    }

    /// The optimizer for this run; its learning rate is the run's initial rate.
    pub fn optimizer<E: crate::float::Float, D: dfdx::tensor_ops::Device<E>>(
        &mut self,
        rule: Rule,
    ) -> DendriticOptimizer<E, D> {
        let opt = DendriticOptimizer::new(rule);
        self.adopt_lr(opt.lr());
        opt
    }

    fn adopt_lr(&mut self, lr: f64) {
        if self.state.initial_lr.is_none() {
            self.state.initial_lr = Some(lr);
            self.state.lr = self.config.lr.as_ref().map(|_| PlateauState::new(lr));
        }
    }

    /// Continues the run saved in `dir`: loads `latest.safetensors` into `model` and returns
    /// the tracker and optimizer as they were after that epoch.
    ///
    /// # Errors
    /// Those of [`checkpoint::load`]; [`Error::Corrupt`] when the tracker metadata is missing.
    pub fn resume<M: DendriticModel>(
        dir: impl AsRef<Path>,
        model: &mut M,
    ) -> Result<(Self, OptimizerFor<M>)> {
        let path = dir.as_ref().join("latest.safetensors");
        let extras = checkpoint::load(model, &path)?;
        let config: TrackerConfig = metadata(&extras.metadata, CONFIG_KEY, &path)?;
        let state: TrackerState = metadata(&extras.metadata, STATE_KEY, &path)?;
        let opt_state: OptimizerState = metadata(&extras.metadata, OPTIMIZER_KEY, &path)?;
        let mut opt = DendriticOptimizer::new(opt_state.rule.clone().into());
        let dev = model_device(model)?;
        opt.import(model, &opt_state, &extras.tensors, &dev)?;
        let mut tracker = Self::new(config)?;
        tracker.config.dir = dir.as_ref().to_path_buf();
        tracker.state = state;
        Ok((tracker, opt))
    }

    /// The configuration.
    pub fn config(&self) -> &TrackerConfig {
        &self.config
    }

    /// Everything recorded so far.
    pub fn state(&self) -> &TrackerState {
        &self.state
    }

    /// Records the test score of the coming epoch (reported only, never used to decide).
    pub fn add_test_score(&mut self, score: f64) {
        self.pending.test = Some(score);
    }

    /// Records the training loss of the coming epoch.
    pub fn add_train_loss(&mut self, loss: f64) {
        self.pending.train_loss = Some(loss);
    }

    /// Records a named extra score of the coming epoch.
    pub fn add_extra_score(&mut self, name: &str, score: f64) {
        self.pending.extras.insert(name.to_string(), score);
    }

    /// Ends an epoch with its validation score and decides what happens next. See the
    /// [module docs](self).
    ///
    /// # Errors
    /// [`Error::NonFinite`] for a NaN or infinite score (nothing is recorded);
    /// [`Error::WrongPhase`] when the model's phase was changed behind the tracker's back;
    /// [`Error::Collective`] on data-parallel replicas that passed different scores; file and
    /// model errors.
    pub fn add_validation_score<M: DendriticModel>(
        &mut self,
        score: f64,
        model: &mut M,
        opt: &mut OptimizerFor<M>,
    ) -> Result<Step> {
        same_on_every_replica(score)?;
        if !score.is_finite() {
            return Err(Error::NonFinite {
                layer: "validation score".into(),
                what: "the score",
                hint: "scores must be finite; check the evaluation (an empty set divides by zero)",
            });
        }
        if self.state.complete {
            return Ok(Step::Complete);
        }
        let found = model.phase();
        if found != self.state.phase {
            return Err(Error::WrongPhase {
                layer: "(model)".into(),
                action: "the tracker's next decision",
                expected: self.state.phase,
                found,
            });
        }
        self.adopt_lr(opt.lr());
        let running = self.record_epoch(score, model, opt)?;
        let step = match found {
            Phase::Neuron => self.neuron_epoch(running, model, opt)?,
            Phase::Dendrite => self.dendrite_epoch(model, opt)?,
        };
        self.state.epoch += 1;
        self.save_point(model, opt, "latest")?;
        if matches!(self.store, Store::Files) {
            files::write_all(&self.config, &self.state)?;
            let every = self.config.graph_every;
            let restructured = !matches!(step, Step::Continue { .. });
            if every > 0 && (self.state.epoch.is_multiple_of(every) || restructured) {
                graph::draw(&self.config, &self.state)?;
            }
        }
        self.log_epoch(step);
        Ok(step)
    }

    /// Appends this epoch's record to the history; returns the running score (the mean of
    /// the phase's last `running_window` scores).
    fn record_epoch<M: DendriticModel>(
        &mut self,
        score: f64,
        model: &mut M,
        opt: &OptimizerFor<M>,
    ) -> Result<f64> {
        let now = Instant::now();
        let seconds = self
            .last_call
            .map_or(0.0, |t| now.duration_since(t).as_secs_f64());
        self.last_call = Some(now);
        self.state.recent.push(score);
        let window = self.config.running_window.min(self.state.recent.len());
        let recent = &self.state.recent[self.state.recent.len() - window..];
        let running = recent.iter().sum::<f64>() / window as f64;
        let pending = std::mem::take(&mut self.pending);
        let counts = model.param_counts()?;
        let bytes = (counts.total() + counts.get(crate::params::Role::Buffer))
            * std::mem::size_of::<M::Dtype>();
        let correlations = model
            .correlation_scores()
            .into_iter()
            .map(|(path, r)| (path, r.best_score))
            .collect();
        self.state.history.push(EpochRecord {
            epoch: self.state.epoch,
            phase: self.state.phase,
            score,
            running,
            test: pending.test,
            train_loss: pending.train_loss,
            extras: pending.extras,
            lr: opt.lr(),
            dendrites: max_dendrites(model),
            params: counts.inference(),
            bytes,
            seconds,
            correlations,
        });
        Ok(running)
    }

    /// The epoch just decided, as a `tracing` event.
    fn log_epoch(&self, step: Step) {
        let Some(last) = self.state.history.last() else {
            return;
        };
        let best = self.state.best.as_ref();
        tracing::info!(
            target: "perforated",
            "epoch {} {} score {:.6} (running {:.6}) best {} lr {:.3e} dendrites {} params {} -> {:?}",
            last.epoch,
            last.phase,
            last.score,
            last.running,
            best.map_or("-".to_string(), |b| format!("{:.6}", b.score)),
            last.lr,
            last.dendrites,
            last.params,
            step
        );
    }
}

/// On data-parallel replicas: checks that every replica passes the same score, so that all of
/// them take the same decision.
fn same_on_every_replica(score: f64) -> Result<()> {
    let Some(c) = crate::collective::active() else {
        return Ok(());
    };
    let mut first = [score];
    c.broadcast_f64(&mut first)?;
    if crate::collective::all_ok(&*c, first[0].to_bits() == score.to_bits())? {
        return Ok(());
    }
    Err(Error::Collective(format!(
        "the replicas passed different validation scores (replica {} {score}, replica 0 {}): \
         sum the validation counts over the replicas (`Replica::all_reduce`) and pass the same \
         score on every one",
        c.rank(),
        first[0]
    )))
}
