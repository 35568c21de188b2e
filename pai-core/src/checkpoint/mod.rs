//! Saving and loading a dendritic model's tensors (safetensors).
//!
//! A file holds every tensor of the registry walk by path, plus metadata: a format tag, the
//! dtype, the structure (dendrites per layer, candidate or not, the dendrite settings) and a
//! CRC-32 checksum over all of it. Loading reads the header before the data, verifies the
//! checksum, refuses non-finite values, checks the structure against the model and against the
//! tensors the file holds, then gives the model the file's structure (growing or dropping
//! dendrites, starting or dropping a candidate) and copies every tensor, checking names and
//! shapes; anything that does not match is refused with an error naming the tensor or layer
//! and both values, and on any error the model is left as it was. Writes go to a temporary
//! file that is renamed over the target, so a failed save never damages what was saved before.
//!
//! A model saved in the dendrite phase keeps its candidate: weights, correlation statistics
//! and snapshot, so training continues exactly where it stopped.

mod matching;
mod pytorch;
mod read;

pub use matching::load_plain;
pub use pytorch::{export_pytorch, load_pytorch};
// a caller that reads a checkpoint's metadata before loading it (`Tracker::resume`)
pub use read::read_tensor;
pub(crate) use read::{metadata, read_file};

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use dfdx::shapes::{HasShape, Shape};
use dfdx::tensor::Tensor;
use dfdx::tensor_ops::Device;

use crate::dendritic::{Activation, CandidateState, DendriteLearning, SeedState};
use crate::disk::write_atomic;
use crate::error::{Error, Result};
use crate::float::Float;
use crate::model::DendriticModel;
use crate::params::{ExtraTensor, Param, ParamVisitor};
use crate::phase::Phase;
use matching::{copy_matching, Key};
use read::{CHECKSUM_KEY, DTYPE_KEY, FORMAT, FORMAT_KEY, MAX_HEADER, STRUCTURE_KEY};

/// One layer's structure as recorded in a file.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct LayerStructure {
    path: String,
    dendrites: usize,
    /// Present in the dendrite phase.
    candidate: Option<CandidateState>,
    /// Where its next dendrites come from.
    seeds: SeedState,
    /// The squash its dendrites were trained with (absent in the first format).
    #[serde(default)]
    activation: Option<Activation>,
    /// How its dendrites learn (absent in the first format).
    #[serde(default)]
    learning: Option<DendriteLearning>,
}

fn structure_of<M: DendriticModel + ?Sized>(model: &M) -> Vec<LayerStructure> {
    let mut out = Vec::new();
    model.visit_layers("", &mut |path, l| {
        out.push(LayerStructure {
            path: path.to_string(),
            dendrites: l.dendrite_count(),
            candidate: l.candidate_state(),
            seeds: l.seeds(),
            activation: Some(l.config().activation),
            learning: Some(l.config().learning),
        });
    });
    out
}

fn encode(structure: &[LayerStructure]) -> String {
    serde_json::to_string(structure).expect("plain data serialises")
}

fn decode(text: &str, file: &Path) -> Result<Vec<LayerStructure>> {
    serde_json::from_str(text).map_err(|e| {
        Error::corrupt(
            file,
            format!("bad structure metadata ({e})"),
            Some(e.into()),
        )
    })
}

struct Collect {
    tensors: Vec<(String, Vec<usize>, Vec<u8>)>,
}

impl<E: Float, D: Device<E>> ParamVisitor<E, D> for Collect {
    fn visit<S: Shape>(
        &mut self,
        param: Param<'_, E, D>,
        tensor: &mut Tensor<S, E, D>,
    ) -> Result<()> {
        let mut bytes = Vec::new();
        E::write_le(&tensor.as_vec(), &mut bytes);
        let dims = tensor.shape().concrete().into_iter().collect();
        self.tensors.push((param.path.to_string(), dims, bytes));
        Ok(())
    }
}

/// Saves every tensor of `model` and its structure to `path` (atomically).
///
/// # Errors
/// [`Error::Io`] when the file cannot be written.
pub fn save<M: DendriticModel>(model: &mut M, path: impl AsRef<Path>) -> Result<()> {
    save_with(model, path, HashMap::new(), &[])
}

/// [`save`] with extra metadata entries (keys must not clash with the format's own) and extra
/// tensors (names must contain a `/`).
///
/// # Errors
/// [`Error::Io`] when the file cannot be written; [`Error::Config`] for a reserved key or a
/// bad extra tensor name.
// safetensors takes the std `HashMap` as it is; a generic hasher would only be converted
#[allow(clippy::implicit_hasher)]
pub fn save_with<M: DendriticModel>(
    model: &mut M,
    path: impl AsRef<Path>,
    metadata: HashMap<String, String>,
    extra: &[ExtraTensor<M::Dtype>],
) -> Result<()> {
    let path = path.as_ref();
    write_atomic(path, &encode_with(model, path, metadata, extra)?)
}

/// The bytes [`save_with`] writes (`path` only names the file in errors).
pub(crate) fn encode_with<M: DendriticModel>(
    model: &mut M,
    path: &Path,
    mut metadata: HashMap<String, String>,
    extra: &[ExtraTensor<M::Dtype>],
) -> Result<Vec<u8>> {
    for key in [FORMAT_KEY, DTYPE_KEY, STRUCTURE_KEY] {
        if metadata.contains_key(key) {
            return Err(Error::Config(format!(
                "metadata key `{key}` is reserved by the checkpoint format"
            )));
        }
    }
    metadata.insert(FORMAT_KEY.into(), FORMAT.into());
    metadata.insert(DTYPE_KEY.into(), format!("{:?}", M::Dtype::SAFETENSORS));
    metadata.insert(STRUCTURE_KEY.into(), encode(&structure_of(model)));
    let mut collect = Collect {
        tensors: Vec::new(),
    };
    model.visit_params("", &mut collect)?;
    for (name, dims, values) in extra {
        if !name.contains('/') {
            return Err(Error::Config(format!(
                "extra tensor `{name}` must have a `/` in its name"
            )));
        }
        let mut bytes = Vec::new();
        M::Dtype::write_le(values, &mut bytes);
        collect.tensors.push((name.clone(), dims.clone(), bytes));
    }
    let sum = read::checksum(
        &metadata,
        collect.tensors.iter().map(|(n, d, b)| {
            (
                n.as_str(),
                M::Dtype::SAFETENSORS,
                d.as_slice(),
                b.as_slice(),
            )
        }),
    );
    metadata.insert(CHECKSUM_KEY.into(), sum);
    let views = collect
        .tensors
        .iter()
        .map(|(name, dims, bytes)| {
            safetensors::tensor::TensorView::new(M::Dtype::SAFETENSORS, dims.clone(), bytes)
                .map(|v| (name.clone(), v))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| encode_error(path, "a tensor", e))?;
    let bytes = safetensors::tensor::serialize(views, &Some(metadata))
        .map_err(|e| encode_error(path, "the file", e))?;
    let header = bytes
        .get(..8)
        .and_then(|p| p.try_into().ok())
        .map_or(0, u64::from_le_bytes);
    if header > MAX_HEADER {
        return Err(Error::Encode {
            path: path.to_path_buf(),
            what: format!(
                "its header ({header} bytes of names and metadata) is over the {MAX_HEADER} \
                 bytes a load accepts"
            ),
            source: std::io::Error::other("header too large").into(),
        });
    }
    Ok(bytes)
}

pub(super) fn encode_error(path: &Path, what: &str, e: safetensors::SafeTensorError) -> Error {
    Error::Encode {
        path: path.to_path_buf(),
        what: what.to_string(),
        source: e.into(),
    }
}

/// What a file holds beside the model's tensors.
#[derive(Debug, Clone, Default)]
pub struct Extras<E> {
    /// Every metadata entry, the format's own included.
    pub metadata: HashMap<String, String>,
    /// Extra tensors by name: shape and values.
    pub tensors: HashMap<String, (Vec<usize>, Vec<E>)>,
}

/// Loads a file written by [`save`] into `model`, giving it the file's structure first.
/// Returns the file's metadata and extra tensors.
///
/// Everything is checked before the model changes: the file (a regular file, its header
/// within it), its checksum, its dtype, finite values, the layers, each layer's dendrite
/// settings and a dendrite count backed by the tensors present. Tensor shapes can only be
/// checked once the file's structure is applied; if one does not match, the model is put
/// back as it was.
///
/// # Errors
/// [`Error::Io`] for an unreadable file; [`Error::Corrupt`] for a truncated, damaged or
/// foreign one; [`Error::Mismatch`] naming the first layer or tensor that does not match;
/// [`Error::NonFinite`] for a NaN or infinity in the file. On any error the model is
/// unchanged.
pub fn load<M: DendriticModel>(model: &mut M, path: impl AsRef<Path>) -> Result<Extras<M::Dtype>> {
    let path = path.as_ref();
    load_bytes(model, &read::read_file(path)?, path)
}

/// [`load`] from the bytes of a file (`path` only names it in errors).
pub(crate) fn load_bytes<M: DendriticModel>(
    model: &mut M,
    bytes: &[u8],
    path: &Path,
) -> Result<Extras<M::Dtype>> {
    let contents = read::checkpoint::<M::Dtype>(bytes, path)?;
    let structure = structure_in(&contents, path)?;
    check_structure(&structure_of(model), &structure, &contents.tensors)?;
    // Shapes can only be checked against the file's structure: apply it, then match; put
    // the model back if they do not.
    let before = encode_with(model, path, HashMap::new(), &[])?;
    if let Err(e) = apply(model, &contents, &structure) {
        let restored = read::checkpoint::<M::Dtype>(&before, path)
            .and_then(|c| apply(model, &c, &structure_in(&c, path)?));
        return Err(match restored {
            Ok(()) => e,
            Err(r) => Error::Config(format!(
                "{e}; and putting the model back failed too ({r}): rebuild it"
            )),
        });
    }
    let tensors = contents
        .tensors
        .into_iter()
        .filter(|(k, _)| k.contains('/'))
        .collect();
    Ok(Extras {
        metadata: contents.metadata,
        tensors,
    })
}

/// The structure a checkpoint's metadata records.
fn structure_in<E>(contents: &read::Contents<E>, path: &Path) -> Result<Vec<LayerStructure>> {
    let text = contents.metadata.get(STRUCTURE_KEY);
    decode(text.map_or("", String::as_str), path)
}

/// Gives `model` the checkpoint's `structure`, then its tensors (names and shapes checked).
fn apply<M: DendriticModel>(
    model: &mut M,
    contents: &read::Contents<M::Dtype>,
    structure: &[LayerStructure],
) -> Result<()> {
    apply_structure(model, structure)?;
    copy_matching(model, &contents.tensors, &|p| Some(Key::same(p)))
}

/// Checks the file's structure against the model's (the same layers, the same dendrite
/// settings) and against the file's own tensors (each layer's dendrites and candidate are
/// there), before anything is built from it: a count in the metadata alone is never trusted.
fn check_structure<E>(
    ours: &[LayerStructure],
    theirs: &[LayerStructure],
    tensors: &read::Values<E>,
) -> Result<()> {
    if ours.len() != theirs.len() || ours.iter().zip(theirs).any(|(a, b)| a.path != b.path) {
        let names = |s: &[LayerStructure]| {
            s.iter()
                .map(|l| l.path.clone())
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(Error::Mismatch {
            path: "layers".into(),
            expected: format!("[{}]", names(ours)),
            found: format!("[{}]", names(theirs)),
        });
    }
    for (ours, theirs) in ours.iter().zip(theirs) {
        let setting = |what: &str, a: String, b: String| Error::Mismatch {
            path: format!("{} ({what})", ours.path),
            expected: format!("{what} {a}"),
            found: format!("{what} {b} (build the model with the settings it was trained with)"),
        };
        // settings the file did not record (the first format) are not compared
        let settings = [
            (
                "dendrite activation",
                ours.activation.map(|a| format!("{a:?}")),
                theirs.activation.map(|a| format!("{a:?}")),
            ),
            (
                "dendrite learning",
                ours.learning.map(|l| format!("{l:?}")),
                theirs.learning.map(|l| format!("{l:?}")),
            ),
        ];
        for (what, a, b) in settings {
            if let (Some(a), Some(b)) = (a, b) {
                if a != b {
                    return Err(setting(what, a, b));
                }
            }
        }
        let dendrites = format!("{}.", crate::params::join(&ours.path, "dendrites"));
        let present: BTreeSet<usize> = tensors
            .keys()
            .filter_map(|k| k.strip_prefix(&dendrites))
            .filter_map(|rest| rest.split('.').next()?.parse().ok())
            .collect();
        let declared = theirs.dendrites;
        if present.len() != declared || present.last().is_some_and(|l| *l + 1 != declared) {
            return Err(Error::Mismatch {
                path: ours.path.clone(),
                expected: "tensors for every dendrite its metadata declares".into(),
                found: format!(
                    "{declared} dendrite(s) declared and tensors for {} (corrupt metadata)",
                    present.len()
                ),
            });
        }
        let candidate = format!("{}.", crate::params::join(&ours.path, "candidate"));
        let has_candidate = tensors.keys().any(|k| k.starts_with(&candidate));
        if has_candidate != theirs.candidate.is_some() {
            return Err(Error::Mismatch {
                path: ours.path.clone(),
                expected: "candidate tensors exactly when its metadata declares a candidate".into(),
                found: format!(
                    "a candidate {} and its tensors {} (corrupt metadata)",
                    if theirs.candidate.is_some() {
                        "declared"
                    } else {
                        "not declared"
                    },
                    if has_candidate { "present" } else { "absent" },
                ),
            });
        }
    }
    Ok(())
}

fn apply_structure<M: DendriticModel>(model: &mut M, structure: &[LayerStructure]) -> Result<()> {
    let mut wanted = structure.iter();
    model.visit_layers_mut("", &mut |path, layer| {
        let Some(want) = wanted.next() else {
            return Ok(());
        };
        let result = (|| {
            if layer.phase() == Phase::Dendrite {
                layer.discard_candidate()?;
            }
            layer.truncate_dendrites(want.dendrites)?;
            layer.grow_dendrites(want.dendrites)?;
            if let Some(state) = &want.candidate {
                layer.start_dendrite_phase()?;
                layer.restore_candidate_state(state)?;
            }
            layer.set_seeds(want.seeds);
            Ok(())
        })();
        result.map_err(|e: Error| e.in_layer(path))
    })
}

/// Writes a clean inference export of `model` (no candidate, optimizer or tracker state)
/// to `path`; it loads with [`load`] into the same model type.
///
/// # Errors
/// [`Error::WrongPhase`] in the dendrite phase (accept or discard the candidates first);
/// file errors.
pub fn export_inference<M: DendriticModel>(model: &mut M, path: impl AsRef<Path>) -> Result<()> {
    if model.phase() == Phase::Dendrite {
        return Err(Error::WrongPhase {
            layer: "(model)".into(),
            action: "an inference export",
            expected: Phase::Neuron,
            found: Phase::Dendrite,
        });
    }
    save(model, path)
}
