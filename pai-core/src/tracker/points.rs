//! Save points: the model, optimizer and tracker state in one checkpoint under the run's
//! directory, written every epoch (`latest`), at each best and at each switch.
//!
//! On a data-parallel replica other than rank 0 the save points are kept in memory instead
//! ([`Store::Memory`]): it writes nothing the user sees, and a rollback still restores it to
//! the same weights as rank 0 (all replicas save the same model at the same moments).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::state::TrackerState;
use super::Tracker;
use crate::checkpoint;
use crate::disk::write_atomic;
use crate::error::{Error, Result};
use crate::model::DendriticModel;
use crate::optim::{OptimizerFor, OptimizerState};

pub(super) const CONFIG_KEY: &str = "tracker_config";
pub(super) const STATE_KEY: &str = "tracker_state";
pub(super) const OPTIMIZER_KEY: &str = "optimizer";

/// Where a run's save points go.
#[derive(Debug)]
pub(super) enum Store {
    /// Files under the run's directory, with the CSV files and the graph; holds the
    /// directory's lock while the tracker lives.
    Files {
        /// Held, never read: dropping it releases the lock.
        _lock: std::fs::File,
    },
    /// Memory only, by name (a replica other than rank 0); nothing is written, and `latest`
    /// (which only [`Tracker::resume`] reads, from rank 0's files) is not kept.
    Memory(HashMap<String, Vec<u8>>),
}

impl Store {
    /// Files in `dir` (locked) on rank 0 or without replicas; memory on the other replicas.
    pub(super) fn for_this_replica(dir: &Path) -> Result<Self> {
        match crate::collective::current() {
            Some(c) if c.rank() != 0 => Ok(Self::Memory(HashMap::new())),
            _ => Ok(Self::Files {
                _lock: lock_run(dir)?,
            }),
        }
    }
}

/// Takes the exclusive lock of the run directory `dir` (made if needed), then removes the
/// temporary files a killed writer left there.
fn lock_run(dir: &Path) -> Result<std::fs::File> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        action: "creating",
        path: dir.to_path_buf(),
        source,
    })?;
    let path = dir.join(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| Error::Io {
            action: "opening",
            path: path.clone(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(Error::Busy {
                path: dir.to_path_buf(),
            })
        }
        Err(std::fs::TryLockError::Error(source)) => {
            return Err(Error::Io {
                action: "locking",
                path,
                source,
            })
        }
    }
    let swept = crate::disk::sweep_temporaries(dir);
    if swept > 0 {
        tracing::info!(target: "perforated", "removed {swept} temporary file(s) an interrupted run left in {}", dir.display());
    }
    Ok(file)
}

impl Tracker {
    /// Whether this tracker writes the run's files (rank 0, or no replicas).
    pub(super) fn writes_files(&self) -> bool {
        matches!(self.store, Store::Files { .. })
    }
}

impl Tracker {
    pub(super) fn path(&self, name: &str) -> PathBuf {
        self.config.dir.join(format!("{name}.safetensors"))
    }

    /// Saves model, optimizer and tracker as `<dir>/<name>.safetensors`.
    pub(super) fn save_point<M: DendriticModel>(
        &mut self,
        model: &mut M,
        opt: &mut OptimizerFor<M>,
        name: &str,
    ) -> Result<()> {
        if matches!(self.store, Store::Memory(_)) && name == "latest" {
            return Ok(());
        }
        let (opt_state, tensors) = opt.export()?;
        let mut metadata = HashMap::new();
        metadata.insert(CONFIG_KEY.to_string(), json(&self.config));
        metadata.insert(STATE_KEY.to_string(), json(&self.state));
        metadata.insert(OPTIMIZER_KEY.to_string(), json(&opt_state));
        let path = self.path(name);
        let bytes = checkpoint::encode_with(model, &path, metadata, &tensors)?;
        match &mut self.store {
            Store::Files { .. } => write_atomic(&path, &bytes),
            Store::Memory(points) => {
                points.insert(name.to_string(), bytes);
                Ok(())
            }
        }
    }

    /// The model and the optimizer as checkpoint bytes in memory (no tracker state), to put
    /// back with [`Self::restore`] when an epoch's call fails.
    pub(super) fn snapshot<M: DendriticModel>(
        &self,
        model: &mut M,
        opt: &mut OptimizerFor<M>,
    ) -> Result<Vec<u8>> {
        let (opt_state, tensors) = opt.export()?;
        let metadata = HashMap::from([(OPTIMIZER_KEY.to_string(), json(&opt_state))]);
        checkpoint::encode_with(model, &self.path("(snapshot)"), metadata, &tensors)
    }

    /// Puts back what [`Self::snapshot`] took.
    pub(super) fn restore<M: DendriticModel>(
        &self,
        model: &mut M,
        opt: &mut OptimizerFor<M>,
        bytes: &[u8],
    ) -> Result<()> {
        let path = self.path("(snapshot)");
        let extras = checkpoint::load_bytes(model, bytes, &path)?;
        let opt_state: OptimizerState = metadata(&extras.metadata, OPTIMIZER_KEY, &path)?;
        let dev = model_device(model)?;
        opt.import(model, &opt_state, &extras.tensors, &dev)
    }

    pub(super) fn load_point<M: DendriticModel>(
        &mut self,
        model: &mut M,
        opt: &mut OptimizerFor<M>,
        name: &str,
        take: LoadTracker,
    ) -> Result<()> {
        let path = self.path(name);
        let extras = match &self.store {
            Store::Files { .. } => checkpoint::load(model, &path)?,
            Store::Memory(points) => {
                let bytes = points.get(name).ok_or_else(|| {
                    Error::Config(format!(
                        "save point `{name}` was never made on this replica"
                    ))
                })?;
                checkpoint::load_bytes(model, bytes, &path)?
            }
        };
        let opt_state: OptimizerState = metadata(&extras.metadata, OPTIMIZER_KEY, &path)?;
        let dev = model_device(model)?;
        opt.import(model, &opt_state, &extras.tensors, &dev)?;
        if take == LoadTracker::LearningRate {
            let saved: TrackerState = metadata(&extras.metadata, STATE_KEY, &path)?;
            self.state.lr = saved.lr;
        }
        Ok(())
    }
}

/// What a rollback takes from the saved tracker state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LoadTracker {
    Nothing,
    LearningRate,
}

/// Plain data as JSON metadata.
fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("plain data serialises")
}

pub(super) fn metadata<T: serde::de::DeserializeOwned>(
    map: &HashMap<String, String>,
    key: &str,
    path: &Path,
) -> Result<T> {
    let text = map.get(key).ok_or_else(|| {
        let reason = format!("no `{key}` metadata: not a tracker checkpoint");
        Error::corrupt(path, reason, None)
    })?;
    serde_json::from_str(text)
        .map_err(|e| Error::corrupt(path, format!("bad `{key}` metadata ({e})"), Some(e.into())))
}

/// The device of the model's tensors.
pub(super) fn model_device<M: DendriticModel>(model: &mut M) -> Result<M::Device> {
    struct First<D>(Option<D>);
    impl<E: crate::float::Float, D: dfdx::tensor_ops::Device<E>> crate::params::ParamVisitor<E, D>
        for First<D>
    {
        fn visit<S: dfdx::shapes::Shape>(
            &mut self,
            _: crate::params::Param<'_, E, D>,
            t: &mut dfdx::tensor::Tensor<S, E, D>,
        ) -> Result<()> {
            if self.0.is_none() {
                self.0 = Some(t.device().clone());
            }
            Ok(())
        }
    }
    let mut first = First(None);
    model.visit_params("", &mut first)?;
    first
        .0
        .ok_or_else(|| Error::Config("the model has no tensors".into()))
}
