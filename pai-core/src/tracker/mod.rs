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
mod files;
mod graph;
mod lr;
mod progress;

pub use config::{LrRestart, PlateauLr, Schedule, SwitchMode, TrackerConfig};
pub use lr::PlateauState;
pub use progress::Progress;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::checkpoint;
use crate::model::DendriticModel;
use crate::optim::{DendriticOptimizer, OptimizerFor, OptimizerState, Rule};
use crate::{Error, Phase, Result};

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

/// The best validation score so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BestScore {
    /// The (running) score.
    pub score: f64,
    /// Its epoch.
    pub epoch: usize,
    /// Dendrites per layer then.
    pub dendrites: usize,
}

/// One epoch as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// Epoch number, from 0.
    pub epoch: usize,
    /// Phase the epoch trained in.
    pub phase: Phase,
    /// Validation score.
    pub score: f64,
    /// Mean of the last `running_window` scores of the phase.
    pub running: f64,
    /// Test score, if given.
    pub test: Option<f64>,
    /// Training loss, if given.
    pub train_loss: Option<f64>,
    /// Named extra scores.
    pub extras: BTreeMap<String, f64>,
    /// Learning rate during the epoch.
    pub lr: f64,
    /// Dendrites per layer.
    pub dendrites: usize,
    /// Parameters a deployed model would carry.
    pub params: usize,
    /// Bytes of every tensor the model holds now (candidate, statistics and buffers included).
    pub bytes: usize,
    /// Seconds since the previous call (the epoch's wall time).
    pub seconds: f64,
    /// Candidate correlation (best snapshot score) per layer, in the dendrite phase.
    pub correlations: Vec<(String, f64)>,
}

/// A phase switch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SwitchRecord {
    /// The epoch after which it happened.
    pub epoch: usize,
    /// The phase that began.
    pub to: Phase,
    /// Dendrites per layer after the switch.
    pub dendrites: usize,
    /// Why.
    pub reason: String,
}

/// The best validation score reached with a given number of dendrites.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArchitectureRecord {
    /// Dendrites per layer.
    pub dendrites: usize,
    /// Parameters a deployed model carries.
    pub params: usize,
    /// Best validation score.
    pub val: f64,
    /// Test score at that epoch, if given.
    pub test: Option<f64>,
    /// That epoch.
    pub epoch: usize,
}

/// Progress of an [`LrRestart::Trial`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    /// 0 while trying the initial rate, 1 while trying the decayed one.
    pub stage: u8,
    /// First epoch of the current stage.
    pub start: usize,
    /// Best running score of the first stage.
    pub first_best: Option<f64>,
    /// Best running score of the current stage.
    pub best: Option<f64>,
}

/// Everything the tracker knows; saved in every checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrackerState {
    /// Epochs recorded.
    pub epoch: usize,
    /// Current phase.
    pub phase: Phase,
    /// First epoch of the current phase.
    pub phase_start: usize,
    /// Length of the first neuron phase, once it ended.
    pub first_neuron_phase: Option<usize>,
    /// Best score so far.
    pub best: Option<BestScore>,
    /// The newest set of dendrites produced a new best.
    pub set_improved: bool,
    /// Last epoch of a new best in this neuron phase (or the phase start).
    pub last_improvement: usize,
    /// Sets in a row that did not help.
    pub retries: usize,
    /// Scores of the current phase (the running window).
    pub recent: Vec<f64>,
    /// Best mean candidate correlation of this dendrite phase.
    pub correlation_best: f64,
    /// Last epoch it improved.
    pub correlation_last_improvement: usize,
    /// The rate the run started with.
    pub initial_lr: Option<f64>,
    /// The plateau scheduler.
    pub lr: Option<PlateauState>,
    /// A learning-rate trial in progress.
    pub trial: Option<Trial>,
    /// The run is over.
    pub complete: bool,
    /// Every epoch.
    pub history: Vec<EpochRecord>,
    /// Every switch.
    pub switches: Vec<SwitchRecord>,
    /// Best score per dendrite count.
    pub architectures: Vec<ArchitectureRecord>,
}

impl Default for TrackerState {
    fn default() -> Self {
        Self {
            epoch: 0,
            phase: Phase::Neuron,
            phase_start: 0,
            first_neuron_phase: None,
            best: None,
            set_improved: false,
            last_improvement: 0,
            retries: 0,
            recent: Vec::new(),
            correlation_best: 0.0,
            correlation_last_improvement: 0,
            initial_lr: None,
            lr: None,
            trial: None,
            complete: false,
            history: Vec::new(),
            switches: Vec::new(),
            architectures: Vec::new(),
        }
    }
}

#[derive(Debug, Default)]
struct Pending {
    test: Option<f64>,
    train_loss: Option<f64>,
    extras: BTreeMap<String, f64>,
}

const CONFIG_KEY: &str = "tracker_config";
const STATE_KEY: &str = "tracker_state";
const OPTIMIZER_KEY: &str = "optimizer";

/// The phase state machine. See the [module docs](self).
#[derive(Debug)]
pub struct Tracker {
    config: TrackerConfig,
    state: TrackerState,
    pending: Pending,
    last_call: Option<Instant>,
}

impl Tracker {
    /// A new run writing under `config.dir` (created if needed).
    ///
    /// # Errors
    /// [`Error::Config`] for a bad config; [`Error::Io`] when the directory cannot be made.
    pub fn new(config: TrackerConfig) -> Result<Self> {
        config.validate()?;
        std::fs::create_dir_all(&config.dir).map_err(|source| Error::Io {
            action: "creating",
            path: config.dir.clone(),
            source,
        })?;
        Ok(Self {
            config,
            state: TrackerState::default(),
            pending: Pending::default(),
            last_call: None,
        })
    }

    /// The optimizer for this run; its learning rate is the run's initial rate.
    pub fn optimizer<E: crate::Float, D: dfdx::tensor_ops::Device<E>>(
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
    /// file and model errors.
    pub fn add_validation_score<M: DendriticModel>(
        &mut self,
        score: f64,
        model: &mut M,
        opt: &mut OptimizerFor<M>,
    ) -> Result<Step> {
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
        let now = Instant::now();
        let seconds = self
            .last_call
            .map_or(0.0, |t| now.duration_since(t).as_secs_f64());
        self.last_call = Some(now);
        self.state.recent.push(score);
        let window = self.config.running_window.min(self.state.recent.len());
        let running = self.state.recent[self.state.recent.len() - window..]
            .iter()
            .sum::<f64>()
            / window as f64;
        let pending = std::mem::take(&mut self.pending);
        let counts = model.param_counts()?;
        let params = counts.inference();
        let bytes =
            (counts.total() + counts.get(crate::Role::Buffer)) * std::mem::size_of::<M::Dtype>();
        let dendrites = max_dendrites(model);
        let correlations = model
            .correlation_scores()
            .into_iter()
            .map(|(path, r)| (path, r.best_score))
            .collect();
        self.state.history.push(EpochRecord {
            epoch: self.state.epoch,
            phase: found,
            score,
            running,
            test: pending.test,
            train_loss: pending.train_loss,
            extras: pending.extras,
            lr: opt.lr(),
            dendrites,
            params,
            bytes,
            seconds,
            correlations,
        });
        let step = match found {
            Phase::Neuron => self.neuron_epoch(running, model, opt)?,
            Phase::Dendrite => self.dendrite_epoch(model, opt)?,
        };
        self.state.epoch += 1;
        self.save_point(model, opt, "latest")?;
        files::write_all(&self.config, &self.state)?;
        let every = self.config.graph_every;
        let restructured = !matches!(step, Step::Continue { .. });
        if every > 0 && (self.state.epoch.is_multiple_of(every) || restructured) {
            graph::draw(&self.config, &self.state)?;
        }
        let last = self.state.history.last().expect("pushed above");
        tracing::info!(
            target: "perforated",
            "epoch {} {} score {:.6} (running {:.6}) best {} lr {:.3e} dendrites {} params {} -> {:?}",
            last.epoch,
            last.phase,
            last.score,
            last.running,
            self.state.best.as_ref().map_or("-".to_string(), |b| format!("{:.6}", b.score)),
            last.lr,
            last.dendrites,
            last.params,
            step
        );
        Ok(step)
    }

    fn better(&self, a: f64, b: f64) -> bool {
        if self.config.maximize {
            a > b
        } else {
            a < b
        }
    }

    /// `score` is a new best over `best` by both thresholds at `dendrites`.
    fn improves(&self, score: f64, best: f64, dendrites: usize) -> bool {
        let margin = (self.config.relative_threshold.at(dendrites) * best.abs())
            .max(self.config.absolute_threshold.at(dendrites));
        let shifted = if self.config.maximize {
            best + margin
        } else {
            best - margin
        };
        self.better(score, shifted) && self.better(score, best)
    }

    fn neuron_epoch<M: DendriticModel>(
        &mut self,
        running: f64,
        model: &mut M,
        opt: &mut OptimizerFor<M>,
    ) -> Result<Step> {
        let epoch = self.state.epoch;
        let record = self.state.history.last().expect("pushed").clone();
        let dendrites = record.dendrites;
        let improved = match &self.state.best {
            None => true,
            Some(b) => self.improves(running, b.score, dendrites),
        };
        self.record_architecture(&record, running);
        if improved {
            self.state.best = Some(BestScore {
                score: running,
                epoch,
                dendrites,
            });
            self.state.set_improved = true;
            self.state.retries = 0;
            self.state.last_improvement = epoch;
        }
        // the plateau schedule rests while a learning-rate trial decides the rate
        if self.state.trial.is_none() {
            if let (Some(config), Some(lr)) = (&self.config.lr, &mut self.state.lr) {
                lr.step(config, self.config.maximize, running);
                opt.set_lr(lr.lr);
            }
        }
        // saved before a trial may load another checkpoint
        if improved {
            self.save_point(model, opt, "best")?;
        }
        if let Some(trial) = self.state.trial.clone() {
            return self.trial_epoch(trial, running, improved, model, opt);
        }

        let in_phase = epoch + 1 - self.state.phase_start;
        if let Some(cap) = self.config.capacity_test {
            if dendrites >= cap {
                return self.complete(model, opt, "capacity test done", false);
            }
            return self.start_dendrites(model, opt, "capacity test");
        }
        if in_phase <= self.config.grace_epochs {
            return Ok(Step::Continue { improved });
        }
        let due = match self.config.switch {
            SwitchMode::Plateau { patience } => {
                let since = self
                    .state
                    .last_improvement
                    .max(self.state.phase_start + self.config.grace_epochs);
                epoch + 1 - since > patience
            }
            SwitchMode::EveryN { first, then } => {
                let length = if self.state.first_neuron_phase.is_none() {
                    first
                } else {
                    then
                };
                in_phase >= length
            }
            SwitchMode::EveryEpoch => true,
            SwitchMode::Never => false,
        };
        if !due {
            return Ok(Step::Continue { improved });
        }
        let best_dendrites = self.state.best.as_ref().map_or(0, |b| b.dendrites);
        if dendrites > best_dendrites && !self.state.set_improved && !self.config.keep_all_dendrites
        {
            self.state.retries += 1;
            if self.state.retries > self.config.max_retries {
                return self.complete(model, opt, "dendrites stopped helping", true);
            }
            self.rollback(model, opt)?;
            return self.start_dendrites(model, opt, "retry: the last dendrites did not help");
        }
        if dendrites >= self.config.max_dendrites {
            let load_best = !self.config.keep_all_dendrites;
            return self.complete(model, opt, "maximum dendrites reached", load_best);
        }
        if !self.config.keep_all_dendrites {
            self.rollback(model, opt)?;
        }
        self.start_dendrites(model, opt, "neuron phase plateaued")
    }

    fn trial_epoch<M: DendriticModel>(
        &mut self,
        mut trial: Trial,
        running: f64,
        improved: bool,
        model: &mut M,
        opt: &mut OptimizerFor<M>,
    ) -> Result<Step> {
        let LrRestart::Trial { epochs, decays } = self.config.lr_restart else {
            self.state.trial = None;
            return Ok(Step::Continue { improved });
        };
        let epoch = self.state.epoch;
        if trial.best.is_none_or(|b| self.better(running, b)) {
            trial.best = Some(running);
        }
        if epoch + 1 - trial.start < epochs {
            self.state.trial = Some(trial);
            return Ok(Step::Continue { improved });
        }
        if trial.stage == 0 {
            // first rate tried: keep its end, go back to the start, try the decayed rate.
            self.state.trial = Some(trial.clone());
            self.save_point(model, opt, "trial_first")?;
            self.load_point(model, opt, "trial_start", LoadTracker::Nothing)?;
            let lr = self.restart_lr(decays);
            opt.set_lr(lr);
            self.state.trial = Some(Trial {
                stage: 1,
                start: epoch + 1,
                first_best: trial.best,
                best: None,
            });
            self.state.recent.clear();
            return Ok(Step::Restructured);
        }
        self.state.trial = None;
        let first_wins = match (trial.first_best, trial.best) {
            (Some(a), Some(b)) => !self.better(b, a),
            _ => false,
        };
        if first_wins {
            self.load_point(model, opt, "trial_first", LoadTracker::LearningRate)?;
            if let Some(lr) = &self.state.lr {
                opt.set_lr(lr.lr);
            }
            self.state.recent.clear();
            return Ok(Step::Restructured);
        }
        Ok(Step::Continue { improved })
    }

    fn dendrite_epoch<M: DendriticModel>(
        &mut self,
        model: &mut M,
        opt: &mut OptimizerFor<M>,
    ) -> Result<Step> {
        let epoch = self.state.epoch;
        let reports = model.correlation_scores();
        let correlation = if reports.is_empty() {
            0.0
        } else {
            reports.iter().map(|(_, r)| r.best_score).sum::<f64>() / reports.len() as f64
        };
        if correlation > self.state.correlation_best {
            self.state.correlation_best = correlation;
            self.state.correlation_last_improvement = epoch;
        }
        let in_phase = epoch + 1 - self.state.phase_start;
        let mut due = match self.config.switch {
            SwitchMode::EveryN { then, .. } => in_phase >= then,
            SwitchMode::EveryEpoch => true,
            _ => epoch - self.state.correlation_last_improvement >= self.config.dendrite_patience,
        };
        if self.config.capacity_test.is_some() {
            due = true;
        }
        if self.config.cap_dendrite_phase {
            if let Some(first) = self.state.first_neuron_phase {
                due |= in_phase >= first;
            }
        }
        let mut ready = true;
        model.visit_layers("", &mut |_, l| ready &= l.has_snapshot());
        if !due || !ready {
            if due {
                tracing::warn!(
                    target: "perforated",
                    "dendrite phase due to end but a candidate has no snapshot yet (still in warm-up); continuing"
                );
            }
            return Ok(Step::Continue { improved: false });
        }
        model.accept_dendrites()?;
        let lr = match self.config.lr_restart {
            LrRestart::Initial => self.restart_lr(0),
            LrRestart::Decayed { decays } => self.restart_lr(decays),
            LrRestart::Trial { .. } => {
                self.state.trial = Some(Trial {
                    stage: 0,
                    start: epoch + 1,
                    first_best: None,
                    best: None,
                });
                self.restart_lr(0)
            }
        };
        opt.set_lr(lr);
        self.state.set_improved = false;
        self.switch_to(
            Phase::Neuron,
            max_dendrites(model),
            "candidates stopped improving",
        );
        self.state.last_improvement = epoch + 1;
        self.save_point(
            model,
            opt,
            &format!("switch_{:03}", self.state.switches.len()),
        )?;
        if self.state.trial.is_some() {
            self.save_point(model, opt, "trial_start")?;
        }
        Ok(Step::Restructured)
    }

    /// The initial rate decayed `decays` times; resets the plateau scheduler there.
    fn restart_lr(&mut self, decays: u32) -> f64 {
        let initial = self.state.initial_lr.unwrap_or(1e-3);
        let factor = self.config.lr.as_ref().map_or(1.0, |c| c.factor);
        let lr = initial * factor.powi(decays as i32);
        if self.config.lr.is_some() {
            self.state.lr = Some(PlateauState::new(lr));
        }
        lr
    }

    fn record_architecture(&mut self, record: &EpochRecord, running: f64) {
        let better = |a: f64, b: f64| if self.config.maximize { a > b } else { a < b };
        let entry = ArchitectureRecord {
            dendrites: record.dendrites,
            params: record.params,
            val: running,
            test: record.test,
            epoch: record.epoch,
        };
        match self
            .state
            .architectures
            .iter_mut()
            .find(|a| a.dendrites == record.dendrites)
        {
            Some(a) if better(running, a.val) => *a = entry,
            Some(_) => {}
            None => self.state.architectures.push(entry),
        }
    }

    fn switch_to(&mut self, to: Phase, dendrites: usize, reason: &str) {
        if to == Phase::Dendrite && self.state.first_neuron_phase.is_none() {
            self.state.first_neuron_phase = Some(self.state.epoch + 1 - self.state.phase_start);
        }
        self.state.switches.push(SwitchRecord {
            epoch: self.state.epoch,
            to,
            dendrites,
            reason: reason.to_string(),
        });
        self.state.phase = to;
        self.state.phase_start = self.state.epoch + 1;
        self.state.recent.clear();
    }

    fn start_dendrites<M: DendriticModel>(
        &mut self,
        model: &mut M,
        opt: &mut OptimizerFor<M>,
        reason: &str,
    ) -> Result<Step> {
        model.start_dendrite_phase()?;
        // candidates train at the initial rate
        opt.set_lr(self.state.initial_lr.unwrap_or(opt.lr()));
        self.state.correlation_best = 0.0;
        self.state.correlation_last_improvement = self.state.epoch + 1;
        self.switch_to(Phase::Dendrite, max_dendrites(model), reason);
        self.save_point(
            model,
            opt,
            &format!("switch_{:03}", self.state.switches.len()),
        )?;
        Ok(Step::Restructured)
    }

    fn complete<M: DendriticModel>(
        &mut self,
        model: &mut M,
        opt: &mut OptimizerFor<M>,
        reason: &str,
        load_best: bool,
    ) -> Result<Step> {
        if load_best && self.state.best.is_some() {
            self.rollback(model, opt)?;
        }
        self.state.complete = true;
        tracing::info!(target: "perforated", "training complete: {reason}");
        Ok(Step::Complete)
    }

    /// Loads the best checkpoint: weights, structure, optimizer state and learning-rate
    /// schedule (history is kept).
    fn rollback<M: DendriticModel>(
        &mut self,
        model: &mut M,
        opt: &mut OptimizerFor<M>,
    ) -> Result<()> {
        if self.state.best.is_none() {
            return Ok(());
        }
        self.load_point(model, opt, "best", LoadTracker::LearningRate)?;
        if let Some(lr) = &self.state.lr {
            opt.set_lr(lr.lr);
        }
        Ok(())
    }

    fn path(&self, name: &str) -> PathBuf {
        self.config.dir.join(format!("{name}.safetensors"))
    }

    /// Saves model, optimizer and tracker as `<dir>/<name>.safetensors`.
    fn save_point<M: DendriticModel>(
        &self,
        model: &mut M,
        opt: &mut OptimizerFor<M>,
        name: &str,
    ) -> Result<()> {
        let (opt_state, tensors) = opt.export()?;
        let mut metadata = HashMap::new();
        metadata.insert(CONFIG_KEY.to_string(), json(&self.config));
        metadata.insert(STATE_KEY.to_string(), json(&self.state));
        metadata.insert(OPTIMIZER_KEY.to_string(), json(&opt_state));
        checkpoint::save_with(model, self.path(name), metadata, &tensors)
    }

    fn load_point<M: DendriticModel>(
        &mut self,
        model: &mut M,
        opt: &mut OptimizerFor<M>,
        name: &str,
        take: LoadTracker,
    ) -> Result<()> {
        let path = self.path(name);
        let extras = checkpoint::load(model, &path)?;
        let opt_state: OptimizerState = metadata(&extras.metadata, OPTIMIZER_KEY, &path)?;
        let dev = model_device(model)?;
        opt.import(model, &opt_state, &extras.tensors, &dev)?;
        if take == LoadTracker::LearningRate {
            let saved: TrackerState = metadata(&extras.metadata, STATE_KEY, &path)?;
            self.state.lr = saved.lr;
        }
        Ok(())
    }

    /// Writes a clean inference export of `model` (no candidate, optimizer or tracker state)
    /// to `path`; it loads with [`checkpoint::load`] into the same model type.
    ///
    /// # Errors
    /// [`Error::WrongPhase`] in the dendrite phase (accept or discard the candidates first);
    /// file errors.
    pub fn export_inference<M: DendriticModel>(
        model: &mut M,
        path: impl AsRef<Path>,
    ) -> Result<()> {
        if model.phase() == Phase::Dendrite {
            return Err(Error::WrongPhase {
                layer: "(model)".into(),
                action: "an inference export",
                expected: Phase::Neuron,
                found: Phase::Dendrite,
            });
        }
        checkpoint::save(model, path)
    }
}

/// What a rollback takes from the saved tracker state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LoadTracker {
    Nothing,
    LearningRate,
}

/// Plain data as JSON metadata.
fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("plain data serialises")
}

fn metadata<T: serde::de::DeserializeOwned>(
    map: &HashMap<String, String>,
    key: &str,
    path: &Path,
) -> Result<T> {
    let text = map.get(key).ok_or_else(|| Error::Corrupt {
        path: path.to_path_buf(),
        reason: format!("no `{key}` metadata: not a tracker checkpoint"),
    })?;
    serde_json::from_str(text).map_err(|e| Error::Corrupt {
        path: path.to_path_buf(),
        reason: format!("bad `{key}` metadata ({e})"),
    })
}

/// Dendrites per layer (the most of any layer).
fn max_dendrites<M: DendriticModel + ?Sized>(model: &M) -> usize {
    model
        .layers()
        .iter()
        .map(|l| l.dendrites)
        .max()
        .unwrap_or(0)
}

/// The device of the model's tensors.
fn model_device<M: DendriticModel>(model: &mut M) -> Result<M::Device> {
    struct First<D>(Option<D>);
    impl<E: crate::Float, D: dfdx::tensor_ops::Device<E>> crate::params::ParamVisitor<E, D>
        for First<D>
    {
        fn visit<S: dfdx::shapes::Shape>(
            &mut self,
            _: crate::params::Param<'_, E, D>,
            t: &mut dfdx::tensor::Tensor<S, E, D>,
        ) -> Result<()> {
            if self.0.is_none() {
                self.0 = Some(t.device().clone());
            }
            Ok(())
        }
    }
    let mut first = First(None);
    model.visit_params("", &mut first)?;
    first
        .0
        .ok_or_else(|| Error::Config("the model has no tensors".into()))
}
