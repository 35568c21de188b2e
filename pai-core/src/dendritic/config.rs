//! Settings of a dendritic layer: the squash, the learning mode, initialisation.

use crate::correlation::CorrelationConfig;
use crate::error::{Error, Result};

/// The squashing function applied to a dendrite's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Activation {
    /// `1 / (1 + e^-x)`, the default.
    #[default]
    Sigmoid,
    /// `tanh(x)`.
    Tanh,
    /// `max(0, x)`.
    Relu,
}

/// How dendrites learn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum DendriteLearning {
    /// Candidates maximise their covariance with the neuron error; inputs are detached and
    /// accepted dendrites are frozen (the default, "perforated backpropagation").
    #[default]
    Correlation,
    /// Nothing is detached: every dendrite trains with the task loss (the open-source Python
    /// library's gradient dendrites). The tracker adds a dendrite to every layer at each
    /// switch, and it trains jointly with the neurons from the next epoch: no dendrite phase.
    /// (Driven by hand, a candidate is part of the output from the start.)
    Gradient,
}

/// Settings of one dendritic layer.
#[derive(Debug, Clone, PartialEq)]
pub struct DendriteConfig {
    /// Standard deviation of a new dendrite's weights (and cascade weights). Default 0.01.
    pub init_std: f64,
    /// Squashing function of dendrite outputs. Default sigmoid.
    pub activation: Activation,
    /// Correlation (default) or gradient learning.
    pub learning: DendriteLearning,
    /// How candidates are judged.
    pub correlation: CorrelationConfig,
}

impl Default for DendriteConfig {
    fn default() -> Self {
        Self {
            init_std: 0.01,
            activation: Activation::Sigmoid,
            learning: DendriteLearning::Correlation,
            correlation: CorrelationConfig::default(),
        }
    }
}

impl DendriteConfig {
    /// Checks every value is in range.
    ///
    /// # Errors
    /// [`Error::Config`] naming the field.
    pub fn validate(&self) -> Result<()> {
        if !(self.init_std.is_finite() && self.init_std >= 0.0) {
            return Err(Error::Config(format!(
                "`init_std` must be finite and >= 0, got {}",
                self.init_std
            )));
        }
        self.correlation.validate()
    }
}
