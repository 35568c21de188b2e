//! Matching a file's tensors to a model's by name and shape, and copying them: all or
//! nothing. Also the plain (dendrite-free) loader built on it, and the naming table both
//! plain loaders share.

use std::cell::RefCell;
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

/// Where a model tensor's values are in a file.
pub(super) struct Key {
    /// The tensor's path as errors print it (and as naming tables match it).
    pub shown: String,
    /// The file entry.
    pub file: String,
}

impl Key {
    /// The same name in the model and the file.
    pub fn same(path: &str) -> Self {
        Self {
            shown: path.to_string(),
            file: path.to_string(),
        }
    }
}

/// The function from a model tensor's full path to its [`Key`]; `None` for tensors the file
/// does not hold (dendrites, for a plain load).
pub(super) type KeyFn<'a> = &'a dyn Fn(&str) -> Option<Key>;

/// Checks (with `copy` false) or copies (true) every tensor of the model that `key` maps to
/// a file entry, recording which file entries it used.
struct Match<'a, E> {
    tensors: &'a Values<E>,
    key: KeyFn<'a>,
    copy: bool,
    used: BTreeSet<String>,
}

impl<E: Float, D: Device<E>> ParamVisitor<E, D> for Match<'_, E> {
    fn visit<S: Shape>(
        &mut self,
        param: Param<'_, E, D>,
        tensor: &mut Tensor<S, E, D>,
    ) -> Result<()> {
        let Some(Key { shown, file: key }) = (self.key)(param.path) else {
            return Ok(());
        };
        let named = if key == shown {
            shown
        } else {
            format!("{shown} (`{key}` in the file)")
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
    key: KeyFn<'_>,
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

/// A model tensor's path as a plain (dendrite-free) model has it: `.neurons` segments
/// dropped. `None` for dendrite and candidate tensors, which a plain model does not have.
fn plain_path(path: &str) -> Option<String> {
    let parts: Vec<&str> = path.split('.').collect();
    if parts.iter().any(|p| *p == "dendrites" || *p == "candidate") {
        return None;
    }
    Some(
        parts
            .into_iter()
            .filter(|p| *p != "neurons")
            .collect::<Vec<_>>()
            .join("."),
    )
}

/// A naming table: `(ours, theirs)` pairs, each renaming a path prefix of ours (as errors
/// print paths: no `.neurons`) to the file's, the first match winning; it records which
/// entries matched, so that one matching nothing is reported.
pub(super) struct Table<'a> {
    entries: &'a [(&'a str, &'a str)],
    used: RefCell<BTreeSet<usize>>,
}

impl<'a> Table<'a> {
    pub fn new(entries: &'a [(&'a str, &'a str)]) -> Self {
        Self {
            entries,
            used: RefCell::new(BTreeSet::new()),
        }
    }

    /// `plain` with its prefix renamed by the first entry that matches it at a segment
    /// boundary.
    pub fn rename(&self, plain: &str) -> String {
        for (i, (ours, theirs)) in self.entries.iter().enumerate() {
            if plain == *ours || plain.starts_with(&format!("{ours}.")) {
                self.used.borrow_mut().insert(i);
                let rest = &plain[ours.len()..];
                // a rename to the root (`""`) drops the dot that followed the prefix
                return if theirs.is_empty() {
                    rest.trim_start_matches('.').to_string()
                } else {
                    format!("{theirs}{rest}")
                };
            }
        }
        plain.to_string()
    }

    /// The key of our tensor at `ours` (a full path): shown as its plain path, read from the
    /// file at `to_file` of that path with its prefix renamed; `None` for dendrite tensors.
    pub fn key(&self, ours: &str, to_file: fn(&str) -> String) -> Option<Key> {
        plain_path(ours).map(|shown| Key {
            file: to_file(&self.rename(&shown)),
            shown,
        })
    }

    /// Every model tensor's key computed once (so each entry that can match has), then an
    /// error naming the entries that matched nothing, with some of the paths there are.
    pub fn check_used<M: DendriticModel>(&self, model: &mut M, key: KeyFn<'_>) -> Result<()> {
        struct Paths(Vec<String>);
        impl<E: Float, D: Device<E>> ParamVisitor<E, D> for Paths {
            fn visit<S: Shape>(
                &mut self,
                p: Param<'_, E, D>,
                _: &mut Tensor<S, E, D>,
            ) -> Result<()> {
                self.0.push(p.path.to_string());
                Ok(())
            }
        }
        let mut paths = Paths(Vec::new());
        model.visit_params("", &mut paths)?;
        let shown: Vec<String> = paths
            .0
            .iter()
            .filter_map(|p| key(p))
            .map(|k| k.shown)
            .collect();
        let used = self.used.borrow();
        let unused: Vec<String> = self
            .entries
            .iter()
            .enumerate()
            .filter(|(i, _)| !used.contains(i))
            .map(|(_, (ours, theirs))| format!("(`{ours}`, `{theirs}`)"))
            .collect();
        if unused.is_empty() {
            return Ok(());
        }
        let examples: Vec<String> = shown.iter().take(6).map(|p| format!("`{p}`")).collect();
        Err(Error::Mismatch {
            path: unused[0].clone(),
            expected: "a naming-table entry whose first path is a prefix of one of the \
                       model's tensor paths"
                .into(),
            found: format!(
                "{} entr{} matching nothing: {}; the model's paths are like {}",
                unused.len(),
                if unused.len() == 1 { "y" } else { "ies" },
                unused.join(", "),
                examples.join(", ")
            ),
        })
    }
}

/// Loads the weights of a plain model, saved by dfdx's `save_safetensors` (or any safetensors
/// file keyed by field path), into the neurons and tracked layers of `model`. Paths match
/// once `.neurons` is dropped from ours (the paths errors print); `renames` maps prefixes of
/// ours to theirs (e.g. `[("fc1", "0"), ("fc2", "2")]` for a dfdx tuple model), the first
/// match winning. Dendrites are left as they are, so with none yet the model computes exactly
/// what the plain one did. Rank-0 entries (module scalars such as a norm's epsilon, which dfdx
/// saves too) are configuration and are skipped. f16, bf16 and f64 tensors are converted to
/// the model's dtype. For a PyTorch `state_dict`, see [`load_pytorch`](super::load_pytorch).
///
/// # Errors
/// [`Error::Io`] / [`Error::Corrupt`] for an unreadable file; [`Error::Mismatch`] naming the
/// first tensor that is missing or has another shape, a tensor that is not floating point, a
/// file tensor two of ours map to, the file tensors nothing of ours takes, or a rename that
/// matches none of our paths; [`Error::NonFinite`] for a NaN or infinity in the file. Nothing
/// is copied unless every tensor matches.
pub fn load_plain<M: DendriticModel>(
    model: &mut M,
    path: impl AsRef<Path>,
    renames: &[(&str, &str)],
) -> Result<()> {
    let path = path.as_ref();
    let tensors = read::plain::<M::Dtype>(&read::read_file(path)?, path)?;
    load_named(model, &tensors, renames, str::to_string)
}

/// The plain loaders' common part: `tensors` copied into the neurons and tracked layers of
/// `model`, each of ours read from the file entry `to_file` gives for its path renamed by
/// the table `names`, once the table has no entry matching nothing.
pub(super) fn load_named<M: DendriticModel>(
    model: &mut M,
    tensors: &Values<M::Dtype>,
    names: &[(&str, &str)],
    to_file: fn(&str) -> String,
) -> Result<()> {
    let table = Table::new(names);
    let key = |ours: &str| table.key(ours, to_file);
    table.check_used(model, &key)?;
    copy_matching(model, tensors, &key)
}
