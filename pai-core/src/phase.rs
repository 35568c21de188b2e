//! [`Phase`]: which part of the network trains now.
//!
//! A bottom-layer type: errors, layers, models and the tracker all speak of phases, so it
//! lives below all of them.

/// The two training phases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Phase {
    /// Ordinary training of the neurons and the dendrite output weights.
    Neuron,
    /// A candidate dendrite per layer trains; everything else is frozen.
    Dendrite,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Phase::Neuron => "neuron",
            Phase::Dendrite => "dendrite",
        })
    }
}
