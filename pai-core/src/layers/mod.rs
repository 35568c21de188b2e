//! Layers dfdx 0.13 lacks on stable Rust, each convertible: convolutions, pooling, flatten,
//! recurrent layers, and [`PaiSequential`] groups.

mod batchnorm_kernel;
pub mod conv;
mod im2col;
pub mod pool;
mod pool_kernel;
pub mod recurrent;
pub mod sequential;
pub mod unfold;

pub use conv::{Conv1d, Conv2d, Conv3d};
pub use pool::{AvgPool2d, Flatten, MaxPool2d};
pub use recurrent::{
    last_step, Gru, GruCell, GruCellState, GruState, Lstm, LstmCell, LstmCellState, LstmLast,
    LstmState,
};
pub use sequential::{Norm, PaiSequential};
