//! The tracker: decides when to switch phases, rolls back to the best model, keeps or drops
//! dendrites, owns the learning-rate schedule, and writes checkpoints, CSV files and a graph.
//!
//! Call [`Tracker::add_validation_score`] once per epoch. It returns a [`Step`]:
//!
//! * [`Step::Continue`]: keep training;
//! * [`Step::Restructured`]: the tracker changed the model in place (new dendrites, a phase
//!   began or ended, or the model was rolled back); the optimizer was adapted with it; keep
//!   training;
//! * [`Step::Complete`]: stop; the model holds the best weights (the last epoch's with
//!   `keep_all_dendrites` and in the capacity test, which keep every set; `best.safetensors`
//!   holds the best).
//!
//! # The decision rules
//!
//! One sentence each; `tests/decisions.rs` checks them as a table, in both learning modes.
//!
//! * **Score.** Decisions read the running score: the mean of the phase's last
//!   `running_window` validation scores (the window restarts at every switch).
//! * **New best.** A running score is a new best when it beats the best so far by
//!   `max(relative_threshold · |best|, absolute_threshold)` (both by dendrite count) and is
//!   strictly better; the first call is always one; a score of 0 is a score like any other.
//! * **Set best.** Each neuron phase also keeps its own best (reset at every switch); a gain
//!   on it, by the same margins, resets the patience, so a new set is judged only once it
//!   stops improving on itself.
//! * **Plateau.** A neuron phase ends after `patience` calls in a row without a set-best gain
//!   (after `grace_epochs` calls of grace); `EveryN { first, then }` ends it after `first`
//!   calls the first time and `then` after; `EveryEpoch` at every call; `Never` never.
//! * **Keep or retry.** At the end of a neuron phase, a set of dendrites that brought no new
//!   overall best is rolled back and a fresh set tried, at most `max_retries` times in a row
//!   (a new best resets the count); one more failure completes the run at the best weights.
//!   `keep_all_dendrites` keeps every set and never retries.
//! * **Most dendrites.** At `max_dendrites` the run completes (at the best weights, unless
//!   every set is kept).
//! * **New set.** Otherwise the model is rolled back to its best weights and gets a new set:
//!   with correlation learning, candidates and a dendrite phase, which ends when the mean
//!   best candidate correlation has not improved for `dendrite_patience` epochs (or after
//!   `then` epochs with `EveryN`, every epoch with `EveryEpoch`; at the latest after
//!   `max_dendrite_epochs` epochs, or the length of the first neuron phase with
//!   `cap_dendrite_phase`), once every candidate has a snapshot (a phase
//!   whose candidates still have none `dendrite_patience` epochs later is dropped and the run
//!   completes at the best weights, the reason naming the layers); with
//!   gradient learning, a dendrite per layer (output weights zero, so nothing moves) that
//!   trains with the network from the next epoch: no dendrite phase. Candidates train at the
//!   initial rate times `candidate_lr_factor`. Either way the rate restarts by [`LrRestart`]
//!   when the next neuron phase begins.
//!
//!   Where the epochs go: a candidate's correlation climbs for a long time (on `digits_mlp`
//!   still 10% higher every 10-20 epochs after 60), so `dendrite_patience` alone makes long
//!   phases. Over 30 seeds of `digits_mlp`, candidates at 3 times the rate with a cap of 20
//!   epochs (`candidate_lr_factor(3.0).max_dendrite_epochs(20)`, patience 5) gave an
//!   accuracy within the seed spread of patience 20's with phases a quarter as long (the
//!   table is in `docs/dendrite-phases.md`); the cap at the plain rate cost about a point.
//! * **Capacity test.** `capacity_test(n)` adds a set at every neuron-phase call until `n`,
//!   then completes, keeping every set.
//!
//! # The Python library's options
//!
//! perforatedai 3.2.9's settings (`GPA.pc.set_*`) and ours:
//!
//! | Python | here | meaning differs? |
//! |---|---|---|
//! | `n_epochs_to_switch` | `SwitchMode::Plateau { patience }` | no |
//! | `p_epochs_to_switch` | `dendrite_patience` | no |
//! | `improvement_threshold` | `relative_threshold` (a [`Schedule`] by dendrite count) | theirs ignores it for negative scores (`new·(1−t) > old`); ours uses `|best|` |
//! | `improvement_threshold_raw` | `absolute_threshold` | no |
//! | `max_dendrites` | `max_dendrites` | no |
//! | `max_dendrite_tries` | `max_retries` + 1 | theirs counts the first attempt; default 2 tries = our default 1 retry |
//! | `switch_mode`: `DOING_HISTORY`, `DOING_FIXED_SWITCH` (`first_fixed_switch_num`, `fixed_switch_num`), `DOING_SWITCH_EVERY_TIME`, `DOING_NO_SWITCH` | `Plateau`, `EveryN { first, then }`, `EveryEpoch`, `Never` | no |
//! | `cap_at_n` | `cap_dendrite_phase` | no |
//! | none | `max_dendrite_epochs`, `candidate_lr_factor` | ours only: a fixed cap on dendrite phases; candidates at a multiple of the initial rate |
//! | `history_lookback` | `running_window` | no |
//! | `initial_history_after_switches` | `grace_epochs` | no |
//! | `retain_all_dendrites` | `keep_all_dendrites` | no |
//! | `test_dendrite_capacity` | `capacity_test(n)` | no |
//! | `maximizing_score` | `maximize()` / `minimize()` | no |
//! | `perforated_backpropagation = False` (gradient dendrites) | `DendriteLearning::Gradient` | no: added at the switch, trained with the network, no dendrite phase |
//! | learning-rate restart and sweep after a switch | [`LrRestart`]: `Initial`, `Decayed`, `Trial` | ours is explicit; `Trial` tries two rates and keeps the better |
//!
//! Their quirks we do not copy, on purpose: the first call never counts as a best there; a
//! score of exactly 0 reads as "no best yet" (a loss that reaches 0 never switches); the
//! relative threshold is ignored for negative scores; and the overall best is checked only
//! when the current set's best improves, so a real overall improvement can be missed.
//!
//! Every epoch writes `latest.safetensors` (model, optimizer, tracker), which
//! [`Tracker::resume`] continues from exactly.

mod config;
mod decide;
mod files;
mod graph;
mod history;
mod points;
mod state;

pub use config::{LrRestart, Schedule, SwitchMode, TrackerConfig};
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
    /// Training is over. The model holds the best weights, except with
    /// [`keep_all_dendrites`](TrackerConfig::keep_all_dendrites) and in the
    /// [capacity test](TrackerConfig::capacity_test), which keep every set of dendrites: the
    /// model then holds the last epoch's weights (load `best.safetensors` for the best).
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
    /// Bytes of `history.jsonl` that belong to committed epochs.
    history_bytes: u64,
    /// What the per-epoch CSV files hold as of the last committed epoch.
    csv: files::CsvLog,
}

impl Tracker {
    /// A new run writing under `config.dir` (created if needed). The tracker holds the
    /// directory's lock until it is dropped: a second tracker on the same directory, in this
    /// process or another, is refused. Temporary files an interrupted run left there are
    /// removed.
    ///
    /// Made on a data-parallel replica other than rank 0 (see [`crate::parallel`]), it writes
    /// nothing: its save points stay in memory, so that its rollbacks restore the same
    /// weights as rank 0's, and only rank 0 writes the run's files.
    ///
    /// # Errors
    /// [`Error::Config`] for a bad config; [`Error::Busy`] when another tracker holds the
    /// directory; [`Error::Io`] when it cannot be made or locked.
    pub fn new(config: TrackerConfig) -> Result<Self> {
        let tracker = Self::open(config)?;
        if tracker.writes_files() {
            history::start(&tracker.config.dir)?;
        }
        Ok(tracker)
    }

    /// The tracker for `config` with nothing recorded, its directory locked (rank 0).
    fn open(config: TrackerConfig) -> Result<Self> {
        config.validate()?;
        let store = Store::for_this_replica(&config.dir)?;
        Ok(Self {
            config,
            state: TrackerState::default(),
            pending: Pending::default(),
            last_call: None,
            store,
            history_bytes: 0,
            csv: files::CsvLog::default(),
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
    /// the tracker and optimizer as they were after that epoch. The run's history comes back
    /// from `history.jsonl`. `dir` may be another place than the one the run was started in
    /// (a moved run): nothing is made or written at the old place.
    ///
    /// # Errors
    /// Those of [`checkpoint::load`]; [`Error::Busy`] when another tracker holds `dir`;
    /// [`Error::Corrupt`] when the tracker metadata or the history is missing or damaged.
    pub fn resume<M: DendriticModel>(
        dir: impl AsRef<Path>,
        model: &mut M,
    ) -> Result<(Self, OptimizerFor<M>)> {
        let dir = dir.as_ref();
        let path = dir.join("latest.safetensors");
        let bytes = checkpoint::read_file(&path)?;
        // the tracker's own metadata is read before the model changes
        let meta = checkpoint::metadata(&bytes, &path)?;
        let mut config: TrackerConfig = metadata(&meta, CONFIG_KEY, &path)?;
        config.dir = dir.to_path_buf();
        config.validate()?;
        let mut state: TrackerState = metadata(&meta, STATE_KEY, &path)?;
        let opt_state: OptimizerState = metadata(&meta, OPTIMIZER_KEY, &path)?;
        let extras = checkpoint::load_bytes(model, &bytes, &path)?;
        let mut opt = DendriticOptimizer::new(opt_state.rule.clone().into());
        let dev = model_device(model)?;
        opt.import(model, &opt_state, &extras.tensors, &dev)?;
        let mut tracker = Self::open(config)?;
        if tracker.writes_files() {
            // the files as `latest` left them: a kill after `latest` and before the files
            // were written (possibly the run's last epoch) leaves them an epoch behind
            (state.history, tracker.history_bytes) = history::read(dir, state.epoch)?;
            history::cut(dir, tracker.history_bytes)?;
            tracker.csv = files::write_all(&tracker.config, &state, &files::CsvLog::default())?;
        }
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
    ///
    /// # Errors
    /// [`Error::NonFinite`] for NaN or infinity (nothing is recorded).
    pub fn add_test_score(&mut self, score: f64) -> Result<()> {
        self.pending.test = Some(finite(score, "the test score")?);
        Ok(())
    }

    /// Records the training loss of the coming epoch.
    ///
    /// # Errors
    /// [`Error::NonFinite`] for NaN or infinity (nothing is recorded): the weights may already
    /// be damaged; the optimizer step refuses non-finite gradients.
    pub fn add_train_loss(&mut self, loss: f64) -> Result<()> {
        self.pending.train_loss = Some(finite(loss, "the training loss")?);
        Ok(())
    }

    /// Records a named extra score of the coming epoch.
    ///
    /// # Errors
    /// [`Error::NonFinite`] for NaN or infinity; [`Error::Config`] for a name that is empty or
    /// holds a comma, a quote or a line break (it becomes a CSV column).
    pub fn add_extra_score(&mut self, name: &str, score: f64) -> Result<()> {
        if name.is_empty() || name.contains([',', '"', '\n', '\r']) {
            return Err(Error::Config(format!(
                "extra score name {name:?} must be non-empty, without commas, quotes or line \
                 breaks (it names a CSV column)"
            )));
        }
        let score = finite(score, "an extra score")?;
        self.pending.extras.insert(name.to_string(), score);
        Ok(())
    }

    /// Ends an epoch with its validation score and decides what happens next. See the
    /// [module docs](self).
    ///
    /// A call is all or nothing: on an error (a full disk, say) the tracker, the model and
    /// the optimizer are as they were before it, so the same call can be made again.
    ///
    /// # Errors
    /// [`Error::NonFinite`] for a NaN or infinite score (nothing is recorded);
    /// [`Error::WrongPhase`] when the model's phase was changed behind the tracker's back;
    /// [`Error::Collective`] on data-parallel replicas that passed different scores, or when
    /// another replica failed to record the epoch; file and model errors.
    pub fn add_validation_score<M: DendriticModel>(
        &mut self,
        score: f64,
        model: &mut M,
        opt: &mut OptimizerFor<M>,
    ) -> Result<Step> {
        same_on_every_replica(score)?;
        finite(score, "the validation score")?;
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
        // the history only grows: it is cut back, the rest of the state is copied
        let history = std::mem::take(&mut self.state.history);
        let saved = (self.state.clone(), self.pending.clone(), self.last_call);
        self.state.history = history;
        let epochs = self.state.history.len();
        let before = self.snapshot(model, opt)?;
        let mut result = self.epoch(score, model, opt);
        if let Some(c) = crate::collective::active() {
            let ok = crate::collective::all_ok(&*c, result.is_ok());
            result = match (result, ok) {
                (Ok(_), Ok(false)) => Err(Error::Collective(
                    "another replica failed to record this epoch (its own error says why); \
                     every replica is back as before the call"
                        .into(),
                )),
                (Ok(_), Err(e)) => Err(e),
                (result, _) => result,
            };
        }
        match result {
            Ok((step, history_bytes, csv)) => {
                self.history_bytes = history_bytes;
                self.csv = csv;
                self.log_epoch(step);
                Ok(step)
            }
            Err(e) => {
                let history = std::mem::take(&mut self.state.history);
                (self.state, self.pending, self.last_call) = saved;
                self.state.history = history;
                self.state.history.truncate(epochs);
                match self.restore(model, opt, &before) {
                    Ok(()) => Err(e),
                    Err(r) => Err(Error::Config(format!(
                        "{e}; and putting the model back failed ({r}): resume from `latest`"
                    ))),
                }
            }
        }
    }

    /// The body of [`Self::add_validation_score`]: decides, saves, writes the files. Returns
    /// the step, the history file's length and the CSV files' log with this epoch.
    fn epoch<M: DendriticModel>(
        &mut self,
        score: f64,
        model: &mut M,
        opt: &mut OptimizerFor<M>,
    ) -> Result<(Step, u64, files::CsvLog)> {
        self.adopt_lr(opt.lr());
        let running = self.record_epoch(score, model, opt)?;
        let step = match model.phase() {
            Phase::Neuron => self.neuron_epoch(running, model, opt)?,
            Phase::Dendrite => self.dendrite_epoch(model, opt)?,
        };
        self.state.epoch = self.state.epoch.checked_add(1).ok_or_else(|| {
            Error::Config("the epoch count overflowed (a tampered checkpoint?)".into())
        })?;
        let mut history_bytes = self.history_bytes;
        let mut csv = self.csv.clone();
        if self.writes_files() {
            history_bytes =
                history::append(&self.config.dir, self.history_bytes, &self.state.history)?;
        }
        self.save_point(model, opt, "latest")?;
        if self.writes_files() {
            csv = files::write_all(&self.config, &self.state, &self.csv)?;
            let every = self.config.graph_every;
            let restructured = !matches!(step, Step::Continue { .. });
            if every > 0 && (self.state.epoch.is_multiple_of(every) || restructured) {
                graph::draw(&self.config, &self.state)?;
            }
        }
        Ok((step, history_bytes, csv))
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
        // only the window is kept: the state saved every epoch stays the same size
        let recent = &mut self.state.recent;
        recent.push(score);
        let excess = recent.len().saturating_sub(self.config.running_window);
        recent.drain(..excess);
        let running = recent.iter().sum::<f64>() / recent.len() as f64;
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
        let next = match step {
            Step::Continue { improved: true } => "new best".to_string(),
            Step::Continue { improved: false } => String::new(),
            // what changed, and why
            Step::Restructured => match self.state.switches.last() {
                Some(s) if s.epoch == last.epoch => format!(
                    "-> {} phase, {} dendrite(s) per layer: {}",
                    s.to, s.dendrites, s.reason
                ),
                _ => "-> rolled back (learning-rate trial)".to_string(),
            },
            Step::Complete => "-> complete".to_string(),
        };
        tracing::info!(
            target: "perforated",
            "epoch {} ({} phase, {} dendrite(s), {} params, {:.1} s): score {:.6} (running {:.6}), best {}, lr {:.2e} {next}",
            last.epoch,
            last.phase,
            last.dendrites,
            last.params,
            last.seconds,
            last.score,
            last.running,
            best.map_or("-".to_string(), |b| format!("{:.6}", b.score)),
            last.lr,
        );
    }
}

/// `value` if it is finite; otherwise an error naming `what`.
fn finite(value: f64, what: &'static str) -> Result<f64> {
    if value.is_finite() {
        return Ok(value);
    }
    Err(Error::NonFinite {
        layer: "(tracker)".into(),
        what,
        hint: "scores and losses must be finite; check the evaluation (an empty set divides by \
               zero) and the training (a NaN loss means damaged weights)",
    })
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
