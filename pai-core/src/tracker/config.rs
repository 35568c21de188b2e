//! [`TrackerConfig`]: everything that decides when the tracker switches phases.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::optim::lr::PlateauLr;

/// When a neuron phase ends (and, for the fixed modes, a dendrite phase too).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SwitchMode {
    /// After `patience` epochs without a new best validation score (the default, patience 10).
    /// A dendrite phase ends after `dendrite_patience` epochs without a better correlation.
    Plateau {
        /// Epochs without improvement.
        patience: usize,
    },
    /// Every `then` epochs, the first neuron phase after `first`.
    EveryN {
        /// Length of the first neuron phase.
        first: usize,
        /// Length of every later phase, both kinds.
        then: usize,
    },
    /// Every epoch (debugging, capacity tests).
    EveryEpoch,
    /// Never: the tracker only records (plain training with the same files).
    Never,
}

/// A value per number of dendrites: entry `n` applies with `n` dendrites, the last entry to
/// every larger count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedule(pub Vec<f64>);

impl Schedule {
    /// One value for every dendrite count.
    pub fn constant(v: f64) -> Self {
        Schedule(vec![v])
    }

    /// The value that applies with `dendrites` dendrites.
    pub fn at(&self, dendrites: usize) -> f64 {
        match self.0.get(dendrites) {
            Some(v) => *v,
            None => self.0.last().copied().unwrap_or(0.0),
        }
    }
}

/// The learning rate a neuron phase starts from after dendrites were added.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum LrRestart {
    /// Back to the initial rate (the default).
    Initial,
    /// The initial rate decayed `decays` times by the plateau factor.
    Decayed {
        /// Number of decays.
        decays: u32,
    },
    /// Train `epochs` epochs at the initial rate, roll back and train as many at the rate
    /// decayed `decays` times, and keep whichever reached the better score.
    Trial {
        /// Length of each trial.
        epochs: usize,
        /// Decays of the second trial's rate.
        decays: u32,
    },
}

/// How the tracker runs. Build with [`TrackerConfig::new`] and the builder methods.
///
/// ```
/// use pai_core::tracker::{SwitchMode, TrackerConfig, Schedule};
/// let config = TrackerConfig::new("runs/example")
///     .maximize()
///     .switch(SwitchMode::Plateau { patience: 8 })
///     .relative_threshold(Schedule(vec![0.001, 0.0001, 0.0]))
///     .max_dendrites(4);
/// assert!(config.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrackerConfig {
    /// Where checkpoints, CSV files and the graph go.
    pub dir: PathBuf,
    /// Higher validation scores are better (accuracy); otherwise lower (loss).
    pub maximize: bool,
    /// When phases end.
    pub switch: SwitchMode,
    /// Epochs without a better candidate correlation before a dendrite phase ends. Default 10.
    pub dendrite_patience: usize,
    /// End a dendrite phase after as many epochs as the first neuron phase took.
    pub cap_dendrite_phase: bool,
    /// End a dendrite phase after at most this many epochs, accepting the candidates' best
    /// snapshots so far. Default `None` (no cap).
    pub max_dendrite_epochs: Option<usize>,
    /// Candidates train at the initial learning rate times this. Default 1.
    pub candidate_lr_factor: f64,
    /// Relative improvement (fraction of the best) a new best must show. Default
    /// `[0.001, 0.0001, 0.0]` by dendrite count.
    pub relative_threshold: Schedule,
    /// Absolute improvement a new best must show. Default 0.
    pub absolute_threshold: Schedule,
    /// Most dendrites per layer. Default 5.
    pub max_dendrites: usize,
    /// Fresh sets of dendrites tried after a set that did not help, not counting the first
    /// attempt. Default 1: two sets in all, as the Python library's default
    /// `max_dendrite_tries = 2` (which counts the first attempt) does.
    pub max_retries: usize,
    /// Keep every set of dendrites even when it did not help (debugging).
    pub keep_all_dendrites: bool,
    /// Epochs after a switch during which no switch happens. Default 0.
    pub grace_epochs: usize,
    /// Decisions use the mean of the last `running_window` scores of the phase. Default 1.
    pub running_window: usize,
    /// Capacity test: switch every epoch up to this many dendrites, then complete.
    pub capacity_test: Option<usize>,
    /// `ReduceLROnPlateau` settings; `None` keeps the rate fixed.
    pub lr: Option<PlateauLr>,
    /// The rate after a restructure.
    pub lr_restart: LrRestart,
    /// Redraw the PNG every this many epochs (0: never). Default 1.
    pub graph_every: usize,
}

/// Builder methods that set one field to their argument.
macro_rules! setters {
    ($($(#[$doc:meta])* $field:ident($($arg:ident: $ty:ty)?) = $value:expr;)+) => {
        $(
            $(#[$doc])*
            pub fn $field(mut self, $($arg: $ty)?) -> Self {
                self.$field = $value;
                self
            }
        )+
    };
}

impl TrackerConfig {
    /// Defaults, writing under `dir`, minimising.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            maximize: false,
            switch: SwitchMode::Plateau { patience: 10 },
            dendrite_patience: 10,
            cap_dendrite_phase: false,
            max_dendrite_epochs: None,
            candidate_lr_factor: 1.0,
            relative_threshold: Schedule(vec![0.001, 0.0001, 0.0]),
            absolute_threshold: Schedule::constant(0.0),
            max_dendrites: 5,
            max_retries: 1,
            keep_all_dendrites: false,
            grace_epochs: 0,
            running_window: 1,
            capacity_test: None,
            lr: Some(PlateauLr::default()),
            lr_restart: LrRestart::Initial,
            graph_every: 1,
        }
    }

    /// Higher scores are better.
    pub fn maximize(mut self) -> Self {
        self.maximize = true;
        self
    }

    /// Lower scores are better (the default).
    pub fn minimize(mut self) -> Self {
        self.maximize = false;
        self
    }

    setters! {
        /// Sets the switch mode.
        switch(mode: SwitchMode) = mode;
        /// Sets the dendrite-phase patience.
        dendrite_patience(epochs: usize) = epochs;
        /// Sets the relative improvement threshold schedule.
        relative_threshold(s: Schedule) = s;
        /// Sets the absolute improvement threshold schedule.
        absolute_threshold(s: Schedule) = s;
        /// Sets the most dendrites per layer.
        max_dendrites(n: usize) = n;
        /// Sets the retries after a set of dendrites that did not help.
        max_retries(n: usize) = n;
        /// Sets the grace period after a switch.
        grace_epochs(n: usize) = n;
        /// Sets the running-score window.
        running_window(n: usize) = n;
        /// Sets (or, with `None`, turns off) the plateau learning-rate schedule.
        lr(lr: Option<PlateauLr>) = lr;
        /// Sets the learning-rate policy after a restructure.
        lr_restart(policy: LrRestart) = policy;
        /// Sets how often the PNG is redrawn (0: never).
        graph_every(epochs: usize) = epochs;
        /// Caps dendrite phases at the length of the first neuron phase.
        cap_dendrite_phase() = true;
        /// Caps dendrite phases at `epochs` epochs.
        max_dendrite_epochs(epochs: usize) = Some(epochs);
        /// Sets the factor on the initial rate that candidates train at.
        candidate_lr_factor(factor: f64) = factor;
        /// Keeps every set of dendrites.
        keep_all_dendrites() = true;
        /// Turns on the capacity test up to `dendrites`.
        capacity_test(dendrites: usize) = Some(dendrites);
    }

    /// Checks every value is usable.
    ///
    /// # Errors
    /// [`Error::Config`] naming the field and what to write instead.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.dir.as_os_str().is_empty() {
            return bad(
                "`dir` is empty: give the run a directory of its own (e.g. \"runs/mnist\"), \
                 not the working directory"
                    .into(),
            );
        }
        match self.switch {
            SwitchMode::Plateau { patience: 0 } => {
                return bad("`switch: Plateau { patience }` must be at least 1".into())
            }
            SwitchMode::EveryN { first, then } if first == 0 || then == 0 => {
                return bad("`switch: EveryN { first, then }` must both be at least 1".into())
            }
            _ => {}
        }
        if self.dendrite_patience == 0 {
            return bad("`dendrite_patience` must be at least 1".into());
        }
        if self.max_dendrite_epochs == Some(0) {
            return bad("`max_dendrite_epochs` must be at least 1 (`None`: no cap)".into());
        }
        if !(self.candidate_lr_factor.is_finite() && self.candidate_lr_factor > 0.0) {
            return bad(format!(
                "`candidate_lr_factor` must be finite and > 0, got {}",
                self.candidate_lr_factor
            ));
        }
        if self.running_window == 0 {
            return bad("`running_window` must be at least 1 (1 uses the raw score)".into());
        }
        for (name, s) in [
            ("relative_threshold", &self.relative_threshold),
            ("absolute_threshold", &self.absolute_threshold),
        ] {
            if s.0.is_empty() || s.0.iter().any(|v| !(v.is_finite() && *v >= 0.0)) {
                return bad(format!(
                    "`{name}` needs at least one value, each finite and >= 0, got {:?}",
                    s.0
                ));
            }
        }
        if let Some(lr) = &self.lr {
            if !(lr.factor > 0.0 && lr.factor < 1.0) {
                return bad(format!("`lr.factor` must be in (0, 1), got {}", lr.factor));
            }
            if !(lr.min_lr >= 0.0 && lr.threshold >= 0.0) {
                return bad("`lr.min_lr` and `lr.threshold` must be >= 0".into());
            }
        }
        if let LrRestart::Trial { epochs: 0, .. } = self.lr_restart {
            return bad("`lr_restart: Trial { epochs }` must be at least 1".into());
        }
        Ok(())
    }
}
