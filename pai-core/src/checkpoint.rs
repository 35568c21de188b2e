//! Saving and loading a dendritic model's tensors (safetensors).
//!
//! A file holds every tensor of the registry walk by path, plus metadata: a format tag, the
//! dtype, and the structure (dendrites per layer, candidate or not). Loading first gives the
//! model the file's structure (growing or dropping dendrites, starting or dropping a candidate)
//! and then copies every tensor, checking names, shapes and dtype; anything that does not
//! match is refused with an error naming the tensor or layer and both values, and the model is
//! only changed once the whole file has been checked. Writes go to a temporary file that is
//! renamed over the target, so a failed save never damages what was saved before.
//!
//! A model saved in the dendrite phase keeps its candidate: weights, correlation statistics
//! and snapshot, so training continues exactly where it stopped.

use std::collections::HashMap;
use std::path::Path;

use dfdx::shapes::{HasShape, Shape};
use dfdx::tensor::Tensor;
use dfdx::tensor_ops::Device;

use crate::dendritic::{CandidateState, SeedState};
use crate::disk::write_atomic;
use crate::error::{Error, Result};
use crate::float::Float;
use crate::model::DendriticModel;
use crate::params::{ExtraTensor, Param, ParamVisitor};
use crate::phase::Phase;

const FORMAT_KEY: &str = "format";
const FORMAT: &str = "perforated/1";
const DTYPE_KEY: &str = "dtype";
const STRUCTURE_KEY: &str = "structure";

/// One layer's structure as recorded in a file.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct LayerStructure {
    path: String,
    dendrites: usize,
    /// Present in the dendrite phase.
    candidate: Option<CandidateState>,
    /// Where its next dendrites come from.
    seeds: SeedState,
}

fn structure_of<M: DendriticModel + ?Sized>(model: &M) -> Vec<LayerStructure> {
    let mut out = Vec::new();
    model.visit_layers("", &mut |path, l| {
        out.push(LayerStructure {
            path: path.to_string(),
            dendrites: l.dendrite_count(),
            candidate: l.candidate_state(),
            seeds: l.seeds(),
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
    let views = collect
        .tensors
        .iter()
        .map(|(name, dims, bytes)| {
            safetensors::tensor::TensorView::new(M::Dtype::SAFETENSORS, dims.clone(), bytes)
                .map(|v| (name.clone(), v))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| encode_error(path, "a tensor", e))?;
    safetensors::tensor::serialize(views, &Some(metadata))
        .map_err(|e| encode_error(path, "the file", e))
}

fn encode_error(path: &Path, what: &str, e: safetensors::SafeTensorError) -> Error {
    Error::Encode {
        path: path.to_path_buf(),
        what: what.to_string(),
        source: e.into(),
    }
}

/// Tensors of a file by name: shape and values.
type Values<E> = HashMap<String, (Vec<usize>, Vec<E>)>;

/// A file read and checked, ready to be copied into the model.
struct Loaded<E> {
    tensors: Values<E>,
    structure: Vec<LayerStructure>,
    metadata: HashMap<String, String>,
}

fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::Io {
        action: "reading",
        path: path.to_path_buf(),
        source,
    })
}

/// Every tensor of a safetensors file, in dtype `E`. Rank-0 entries (module scalars such as a
/// norm's epsilon, which dfdx saves as f64) are configuration, not weights, and are skipped.
fn tensors_of<E: Float>(bytes: &[u8], path: &Path) -> Result<Values<E>> {
    let st = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| Error::corrupt(path, format!("unreadable tensors ({e:?})"), Some(e.into())))?;
    let mut tensors = HashMap::new();
    for (name, view) in st.tensors() {
        if view.shape().is_empty() {
            continue;
        }
        if view.dtype() != E::SAFETENSORS {
            return Err(Error::Mismatch {
                path: name,
                expected: format!("{:?}", E::SAFETENSORS),
                found: format!("{:?}", view.dtype()),
            });
        }
        tensors.insert(name, (view.shape().to_vec(), E::read_le(view.data())));
    }
    Ok(tensors)
}

fn parse<E: Float>(bytes: &[u8], path: &Path) -> Result<Loaded<E>> {
    let corrupt = |reason: String| Error::corrupt(path, reason, None);
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| Error::corrupt(path, format!("unreadable header ({e:?})"), Some(e.into())))?;
    let metadata = header.metadata().clone().unwrap_or_default();
    if metadata.get(FORMAT_KEY).map(String::as_str) != Some(FORMAT) {
        return Err(corrupt(format!(
            "metadata `{FORMAT_KEY}` is {:?}, expected {FORMAT:?}",
            metadata.get(FORMAT_KEY)
        )));
    }
    let file_dtype = metadata.get(DTYPE_KEY).cloned().unwrap_or_default();
    if file_dtype != format!("{:?}", E::SAFETENSORS) {
        return Err(Error::Mismatch {
            path: "dtype".into(),
            expected: format!("{:?}", E::SAFETENSORS),
            found: file_dtype,
        });
    }
    let structure = decode(metadata.get(STRUCTURE_KEY).map_or("", String::as_str), path)?;
    Ok(Loaded {
        tensors: tensors_of(bytes, path)?,
        structure,
        metadata,
    })
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
/// # Errors
/// [`Error::Io`] for an unreadable file; [`Error::Corrupt`] for a truncated or foreign one;
/// [`Error::Mismatch`] naming the first layer or tensor that does not match (the model is
/// unchanged then, unless the mismatch is only found in the tensors after the structure was
/// applied: the model then keeps the file's structure with fresh dendrite weights).
pub fn load<M: DendriticModel>(model: &mut M, path: impl AsRef<Path>) -> Result<Extras<M::Dtype>> {
    let path = path.as_ref();
    load_bytes(model, &read_bytes(path)?, path)
}

/// [`load`] from the bytes of a file (`path` only names it in errors).
pub(crate) fn load_bytes<M: DendriticModel>(
    model: &mut M,
    bytes: &[u8],
    path: &Path,
) -> Result<Extras<M::Dtype>> {
    let loaded = parse::<M::Dtype>(bytes, path)?;
    let ours = structure_of(model);
    if ours.len() != loaded.structure.len()
        || ours
            .iter()
            .zip(&loaded.structure)
            .any(|(a, b)| a.path != b.path)
    {
        let names = |s: &[LayerStructure]| {
            s.iter()
                .map(|l| l.path.clone())
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(Error::Mismatch {
            path: "layers".into(),
            expected: format!("[{}]", names(&ours)),
            found: format!("[{}]", names(&loaded.structure)),
        });
    }
    // Shapes can only be checked against the file's structure: apply it, then match.
    apply_structure(model, &loaded.structure)?;
    let ours = |path: &str| Some(path.to_string());
    let for_model = loaded.tensors.keys().filter(|k| !k.contains('/')).count();
    copy_matching(model, &loaded.tensors, &ours, for_model)?;
    let tensors = loaded
        .tensors
        .into_iter()
        .filter(|(k, _)| k.contains('/'))
        .collect();
    Ok(Extras {
        metadata: loaded.metadata,
        tensors,
    })
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

/// Checks (with `copy` false) or copies (true) every tensor of the model that `key` maps to
/// a file entry.
struct Match<'a, E> {
    tensors: &'a Values<E>,
    key: &'a dyn Fn(&str) -> Option<String>,
    copy: bool,
    used: usize,
}

impl<E: Float, D: Device<E>> ParamVisitor<E, D> for Match<'_, E> {
    fn visit<S: Shape>(
        &mut self,
        param: Param<'_, E, D>,
        tensor: &mut Tensor<S, E, D>,
    ) -> Result<()> {
        let Some(key) = (self.key)(param.path) else {
            return Ok(());
        };
        let named = if key == param.path {
            key.clone()
        } else {
            format!("{} (`{key}` in the file)", param.path)
        };
        let dims: Vec<usize> = tensor.shape().concrete().into_iter().collect();
        match self.tensors.get(&key) {
            None => Err(Error::Mismatch {
                path: named,
                expected: format!("a tensor of shape {dims:?}"),
                found: "no such tensor".into(),
            }),
            Some((file_dims, _)) if *file_dims != dims => Err(Error::Mismatch {
                path: named,
                expected: format!("shape {dims:?}"),
                found: format!("shape {file_dims:?}"),
            }),
            Some((_, values)) => {
                if self.copy {
                    tensor.copy_from(values);
                }
                self.used += 1;
                Ok(())
            }
        }
    }
}

/// Checks every model tensor `key` maps to against `tensors`, and that the file has no other
/// entry for the model (`for_model` of them), then copies: all or nothing.
fn copy_matching<M: DendriticModel>(
    model: &mut M,
    tensors: &Values<M::Dtype>,
    key: &dyn Fn(&str) -> Option<String>,
    for_model: usize,
) -> Result<()> {
    let mut check = Match {
        tensors,
        key,
        copy: false,
        used: 0,
    };
    model.visit_params("", &mut check)?;
    if check.used != for_model {
        let mut names = Names(Vec::new());
        model.visit_params("", &mut names)?;
        let ours: Vec<String> = names.0.iter().filter_map(|p| key(p)).collect();
        let extra = tensors
            .keys()
            .find(|k| !k.contains('/') && !ours.contains(k))
            .cloned()
            .unwrap_or_default();
        return Err(Error::Mismatch {
            path: extra,
            expected: "no such tensor in the model".into(),
            found: "a tensor in the file".into(),
        });
    }
    model.visit_params(
        "",
        &mut Match {
            tensors,
            key,
            copy: true,
            used: 0,
        },
    )
}

struct Names(Vec<String>);

impl<E: Float, D: Device<E>> ParamVisitor<E, D> for Names {
    fn visit<S: Shape>(&mut self, param: Param<'_, E, D>, _: &mut Tensor<S, E, D>) -> Result<()> {
        self.0.push(param.path.to_string());
        Ok(())
    }
}

/// The path a plain (dendrite-free) model uses for the tensor at `path` in a dendritic model:
/// `.neurons` segments dropped, then the first matching prefix renamed. `None` for dendrite
/// and candidate tensors, which a plain model does not have.
fn plain_path(path: &str, renames: &[(&str, &str)]) -> Option<String> {
    let parts: Vec<&str> = path.split('.').collect();
    if parts.iter().any(|p| *p == "dendrites" || *p == "candidate") {
        return None;
    }
    let plain = parts
        .into_iter()
        .filter(|p| *p != "neurons")
        .collect::<Vec<_>>()
        .join(".");
    for (ours, theirs) in renames {
        if plain == *ours || plain.starts_with(&format!("{ours}.")) {
            return Some(format!("{theirs}{}", &plain[ours.len()..]));
        }
    }
    Some(plain)
}

/// Loads the weights of a plain model, saved by dfdx's `save_safetensors` (or any safetensors
/// file keyed by field path), into the neurons and tracked layers of `model`. Paths match
/// once `.neurons` is dropped from ours; `renames` maps prefixes of ours to theirs (e.g.
/// `[("fc1", "0"), ("fc2", "2")]` for a dfdx tuple model). Dendrites are left as they are, so
/// with none yet the model computes exactly what the plain one did. Rank-0 entries (module
/// scalars such as a norm's epsilon, which dfdx saves too) are configuration and are skipped.
///
/// # Errors
/// [`Error::Io`] / [`Error::Corrupt`] for an unreadable file; [`Error::Mismatch`] naming the
/// first tensor that is missing, has another shape or dtype, or is left over in the file.
/// Nothing is copied unless every tensor matches.
pub fn load_plain<M: DendriticModel>(
    model: &mut M,
    path: impl AsRef<Path>,
    renames: &[(&str, &str)],
) -> Result<()> {
    let path = path.as_ref();
    let tensors = tensors_of::<M::Dtype>(&read_bytes(path)?, path)?;
    let key = |ours: &str| plain_path(ours, renames);
    let for_model = tensors.keys().filter(|k| !k.contains('/')).count();
    copy_matching(model, &tensors, &key, for_model)
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
