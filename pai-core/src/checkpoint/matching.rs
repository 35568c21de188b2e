//! Matching a file's tensors to a model's by name and shape, and copying them: all or
//! nothing. Also the plain (dendrite-free) loader built on it.

use std::collections::BTreeSet;
use std::path::Path;

use dfdx::shapes::{HasShape, Shape};
use dfdx::tensor::Tensor;
use dfdx::tensor_ops::Device;

use super::read::{self, Values};
use crate::error::{Error, Result};
use crate::float::Float;
use crate::model::DendriticModel;
use crate::params::{Param, ParamVisitor};

/// Checks (with `copy` false) or copies (true) every tensor of the model that `key` maps to
/// a file entry, recording which file entries it used.
struct Match<'a, E> {
    tensors: &'a Values<E>,
    key: &'a dyn Fn(&str) -> Option<String>,
    copy: bool,
    used: BTreeSet<String>,
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
                found: format!("no such tensor ({})", nearby(self.tensors, &key)),
            }),
            Some((file_dims, _)) if *file_dims != dims => Err(Error::Mismatch {
                path: named,
                expected: format!("shape {dims:?}"),
                found: format!("shape {file_dims:?}"),
            }),
            Some(_) if !self.copy && self.used.contains(&key) => Err(Error::Mismatch {
                path: named,
                expected: "each file tensor used once".into(),
                found: format!("`{key}` already used by another tensor of the model"),
            }),
            Some((_, values)) => {
                if self.copy {
                    tensor.copy_from(values);
                }
                self.used.insert(key);
                Ok(())
            }
        }
    }
}

/// What the file holds near `key`: the names under its first segment, or else the first
/// names of the file, so a missing tensor's error shows what to rename to.
fn nearby<E>(tensors: &Values<E>, key: &str) -> String {
    let head = key.split('.').next().unwrap_or(key);
    let mut names: Vec<&String> = tensors
        .keys()
        .filter(|k| k.split('.').next() == Some(head))
        .collect();
    let under = !names.is_empty();
    if !under {
        names = tensors.keys().filter(|k| !k.contains('/')).collect();
    }
    names.sort();
    let shown: Vec<String> = names.iter().take(6).map(|n| format!("`{n}`")).collect();
    let more = names.len().saturating_sub(6);
    format!(
        "the file has {}{}{}",
        if under {
            format!("under `{head}`: ")
        } else {
            String::new()
        },
        shown.join(", "),
        if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        }
    )
}

/// Checks every model tensor `key` maps to against `tensors`, each file entry used at most
/// once, and that the file has no entry for the model left unused (extras, with a `/` in the
/// name, are not the model's), then copies: all or nothing.
pub(super) fn copy_matching<M: DendriticModel>(
    model: &mut M,
    tensors: &Values<M::Dtype>,
    key: &dyn Fn(&str) -> Option<String>,
) -> Result<()> {
    let mut check = Match {
        tensors,
        key,
        copy: false,
        used: BTreeSet::new(),
    };
    model.visit_params("", &mut check)?;
    let mut unused: Vec<&String> = tensors
        .keys()
        .filter(|k| !k.contains('/') && !check.used.contains(*k))
        .collect();
    if !unused.is_empty() {
        unused.sort();
        let names = unused
            .iter()
            .take(8)
            .map(|k| format!("`{k}`"))
            .collect::<Vec<_>>()
            .join(", ");
        let more = unused.len().saturating_sub(8);
        return Err(Error::Mismatch {
            path: unused[0].clone(),
            expected: "no tensor of that name".into(),
            found: format!(
                "{} tensor(s) no tensor of the model takes: {names}{}",
                unused.len(),
                if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                }
            ),
        });
    }
    model.visit_params(
        "",
        &mut Match {
            tensors,
            key,
            copy: true,
            used: BTreeSet::new(),
        },
    )
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
/// first tensor that is missing or has another shape or dtype, a file tensor two of ours map
/// to, or the file tensors nothing of ours takes; [`Error::NonFinite`] for a NaN or infinity in
/// the file. Nothing is copied unless every tensor matches.
pub fn load_plain<M: DendriticModel>(
    model: &mut M,
    path: impl AsRef<Path>,
    renames: &[(&str, &str)],
) -> Result<()> {
    let path = path.as_ref();
    let tensors = read::plain::<M::Dtype>(&read::read_file(path)?, path)?;
    let key = |ours: &str| plain_path(ours, renames);
    copy_matching(model, &tensors, &key)
}
