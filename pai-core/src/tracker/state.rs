//! What the tracker records: every epoch, every switch, the best scores; saved in every
//! checkpoint so a resumed run continues exactly.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::optim::lr::PlateauState;
use crate::phase::Phase;

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

/// Progress of an [`LrRestart::Trial`](super::LrRestart::Trial).
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
    /// Best running score of the current neuron phase (reset at each switch to a neuron
    /// phase): a gain on it resets the plateau patience, so a set is judged only once it
    /// stops improving on itself.
    #[serde(default)]
    pub set_best: Option<f64>,
    /// Last epoch of a new best in this neuron phase (or the phase start).
    pub last_improvement: usize,
    /// Sets in a row that did not help.
    pub retries: usize,
    /// The last `running_window` scores of the current phase.
    pub recent: Vec<f64>,
    /// Best mean candidate correlation of this dendrite phase.
    pub correlation_best: f64,
    /// Last epoch it improved.
    pub correlation_last_improvement: usize,
    /// Epochs this dendrite phase has been due to end while some candidate had no snapshot
    /// to accept.
    #[serde(default)]
    pub waiting_for_snapshot: usize,
    /// The rate the run started with.
    pub initial_lr: Option<f64>,
    /// The plateau scheduler.
    pub lr: Option<PlateauState>,
    /// A learning-rate trial in progress.
    pub trial: Option<Trial>,
    /// The run is over.
    pub complete: bool,
    /// Every epoch. Kept out of checkpoints (so an epoch's save costs the same at epoch 10
    /// and at epoch 10,000): a run appends it to `history.jsonl`, and a resume reads it back.
    #[serde(skip)]
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
            set_best: None,
            last_improvement: 0,
            retries: 0,
            recent: Vec::new(),
            correlation_best: 0.0,
            correlation_last_improvement: 0,
            waiting_for_snapshot: 0,
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

#[derive(Debug, Default, Clone)]
pub(super) struct Pending {
    pub test: Option<f64>,
    pub train_loss: Option<f64>,
    pub extras: BTreeMap<String, f64>,
}
