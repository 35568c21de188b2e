//! Runtime of `perforated`: artificial dendrites for dfdx networks.
//!
//! Users normally depend on the `perforated` facade crate; this crate holds everything that
//! runs. See the facade's documentation for the whole picture.
#![deny(missing_docs)]
// dfdx tensor types spell out shape, dtype, device and tape; naming each would hide them.
#![allow(clippy::type_complexity)]

pub mod axis;
pub mod checkpoint;
pub mod collective;
pub mod correlation;
pub mod dendritic;
mod disk;
mod error;
mod float;
mod host;
pub mod idx;
pub mod layers;
pub mod model;
pub mod optim;
pub mod parallel;
pub mod params;
mod phase;
pub mod processor;
#[cfg(test)]
mod testing;
pub mod tracker;

pub use correlation::{CorrelationConfig, CorrelationReport};
pub use dendritic::{Activation, Convertible, DendriteConfig, DendriteLearning, Dendritic};
pub use error::{Error, Result};
pub use float::{Float, Floats};
pub use model::{BuildDendritic, DendriteLayer, DendriticModel, LayerInfo};
pub use optim::DendriticOptimizer;
pub use params::{ParamCounts, Role};
pub use phase::Phase;

/// The names a model author needs.
pub mod prelude {
    pub use crate::axis::{Any, Batch, Neurons, NeuronsLast, Time};
    pub use crate::layers::{
        AvgPool2d, Conv1d, Conv2d, Conv3d, Flatten, Gru, GruCell, GruCellState, GruState, Lstm,
        LstmCell, LstmCellState, LstmLast, LstmState, MaxPool2d, PaiSequential,
    };
    pub use crate::optim::Rule;
    pub use crate::processor::{FirstOutput, Plain};
    pub use crate::tracker::{Step, SwitchMode, Tracker, TrackerConfig};
    pub use crate::{
        Activation, BuildDendritic, Convertible, CorrelationConfig, DendriteConfig, DendriteLayer,
        DendriteLearning, Dendritic, DendriticModel, DendriticOptimizer, Phase, Role,
    };
}
