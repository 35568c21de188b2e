//! The one error type of pai-core.
//!
//! Library code never panics on user input: every problem a user can cause at run time is an
//! [`Error`] whose message says what to change.

use std::path::PathBuf;

/// Everything that can go wrong at run time in pai-core.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operation was asked for in a phase where it means nothing.
    #[error("layer `{layer}` is in the {found} phase, but {action} needs the {expected} phase")]
    WrongPhase {
        /// Path of the layer.
        layer: String,
        /// What was asked for.
        action: &'static str,
        /// The phase the operation needs.
        expected: crate::phase::Phase,
        /// The phase the layer is in.
        found: crate::phase::Phase,
    },
    /// `accept` was called before the candidate had a snapshot worth keeping.
    #[error(
        "layer `{layer}` has no candidate snapshot to accept: train the dendrite phase for more \
         than the {warmup} warm-up batches first, or call `discard_candidates`"
    )]
    NoSnapshot {
        /// Path of the layer.
        layer: String,
        /// The warm-up length in batches, after which snapshots are taken.
        warmup: usize,
    },
    /// An optimizer step in the dendrite phase (correlation learning) before any backward pass
    /// brought the candidate a neuron error: it would learn nothing, silently.
    #[error(
        "layer `{layer}` is in the dendrite phase, but no backward pass has brought its candidate \
         the neuron error yet, so it learns nothing: run the training forward pass with \
         `forward_mut` on a traced input (`model.forward_mut(x.trace(grads))`), not `forward`, \
         and call `backward()` on a loss that uses this layer's output"
    )]
    NoNeuronError {
        /// Path of the layer.
        layer: String,
    },
    /// A value that must be finite was NaN or infinite.
    #[error("{what} in layer `{layer}` is not finite (NaN or infinite): {hint}")]
    NonFinite {
        /// Path of the layer, or of the tensor.
        layer: String,
        /// What was not finite.
        what: &'static str,
        /// What to do about it.
        hint: &'static str,
    },
    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A data-parallel collective failed: another replica stopped, or the replicas disagree.
    #[error("data parallel: {0}")]
    Collective(String),
    /// A saved file does not match the model it is loaded into.
    #[error("checkpoint mismatch at `{path}`: the file has {found}, the model has {expected}")]
    Mismatch {
        /// Path of the tensor or layer.
        path: String,
        /// What the model has.
        expected: String,
        /// What the file has.
        found: String,
    },
    /// A saved file is unreadable or corrupt.
    #[error("checkpoint `{path}` is corrupt or not a perforated checkpoint: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
        /// The parser's own error, where one found the problem.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// A data file (IDX images or labels) is unreadable, truncated or not what it claims.
    #[error("data file `{path}`: {reason}")]
    Data {
        /// The file.
        path: PathBuf,
        /// What is wrong with it, and what to do.
        reason: String,
        /// The reader's own error, where one found the problem.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// A checkpoint could not be encoded (a tensor or the file format refused it).
    #[error("cannot encode checkpoint `{path}`: {what}")]
    Encode {
        /// The file being written.
        path: PathBuf,
        /// What could not be encoded.
        what: String,
        /// The encoder's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Reading or writing a file failed.
    #[error("{action} `{path}`: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A step of a sequence was asked for, and the sequence has none.
    #[error("{what} of a sequence with no steps: {hint}")]
    EmptySequence {
        /// What was asked for.
        what: &'static str,
        /// What to do instead.
        hint: &'static str,
    },
    /// A run directory is in use by another tracker (this process or another).
    #[error(
        "run directory `{path}` is in use by another tracker (another process, or another \
         tracker in this one): give each run its own directory, or stop the other run first"
    )]
    Busy {
        /// The run directory.
        path: PathBuf,
    },
    /// The tensor backend reported an error (out of memory, a CUDA failure).
    #[error("device error: {0}")]
    Device(String),
}

impl Error {
    /// Names the layer in errors raised inside a layer, which does not know its own path.
    pub fn in_layer(mut self, path: &str) -> Self {
        match &mut self {
            Error::WrongPhase { layer, .. }
            | Error::NoSnapshot { layer, .. }
            | Error::NoNeuronError { layer }
            | Error::NonFinite { layer, .. }
                if layer.is_empty() =>
            {
                *layer = path.to_string();
            }
            _ => {}
        }
        self
    }

    /// A corrupt file: `reason` says what is wrong, `source` is the parser's error if one
    /// found it.
    pub fn corrupt(
        path: &std::path::Path,
        reason: impl Into<String>,
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Error::Corrupt {
            path: path.to_path_buf(),
            reason: reason.into(),
            source,
        }
    }

    /// Wraps a backend error (dfdx's `CpuError` or `CudaError`).
    pub fn device(err: impl std::fmt::Debug) -> Self {
        Error::Device(format!("{err:?}"))
    }
}

/// The result type of pai-core.
pub type Result<T, E = Error> = std::result::Result<T, E>;
