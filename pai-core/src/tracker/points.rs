//! Save points: the model, optimizer and tracker state in one checkpoint under the run's
//! directory, written every epoch (`latest`), at each best and at each switch.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::state::TrackerState;
use super::Tracker;
use crate::checkpoint;
use crate::error::{Error, Result};
use crate::model::DendriticModel;
use crate::optim::{OptimizerFor, OptimizerState};

pub(super) const CONFIG_KEY: &str = "tracker_config";
pub(super) const STATE_KEY: &str = "tracker_state";
pub(super) const OPTIMIZER_KEY: &str = "optimizer";

impl Tracker {
    pub(super) fn path(&self, name: &str) -> PathBuf {
        self.config.dir.join(format!("{name}.safetensors"))
    }

    /// Saves model, optimizer and tracker as `<dir>/<name>.safetensors`.
    pub(super) fn save_point<M: DendriticModel>(
        &self,
        model: &mut M,
        opt: &mut OptimizerFor<M>,
        name: &str,
    ) -> Result<()> {
        let (opt_state, tensors) = opt.export()?;
        let mut metadata = HashMap::new();
        metadata.insert(CONFIG_KEY.to_string(), json(&self.config));
        metadata.insert(STATE_KEY.to_string(), json(&self.state));
        metadata.insert(OPTIMIZER_KEY.to_string(), json(&opt_state));
        checkpoint::save_with(model, self.path(name), metadata, &tensors)
    }

    pub(super) fn load_point<M: DendriticModel>(
        &mut self,
        model: &mut M,
        opt: &mut OptimizerFor<M>,
        name: &str,
        take: LoadTracker,
    ) -> Result<()> {
        let path = self.path(name);
        let extras = checkpoint::load(model, &path)?;
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
