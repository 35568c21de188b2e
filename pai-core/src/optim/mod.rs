//! Adam and SGD over the parameter registry, phase-aware.
//!
//! dfdx's optimizers walk a `TensorCollection`, which cannot hold dendrites (their number
//! changes during training). [`DendriticOptimizer`] walks the registry instead and updates each tensor
//! with dfdx's own per-tensor kernels (`AdamConfig::try_update`, `SgdConfig::try_update`), so
//! the arithmetic is dfdx's. What it updates follows the phase: in the neuron phase the neurons,
//! the dendrite output weights and tracked layers; in the dendrite phase only the candidate
//! (from its correlation gradients, or from the task loss in the gradient mode).
//!
//! State (moments, step counts) is keyed by tensor path. When the model's structure changes,
//! state of tensors that no longer exist is dropped and the candidate's state starts over;
//! everything else keeps its state.

pub mod lr;
mod reduce;
mod rule;

pub use lr::{PlateauLr, PlateauState};
use rule::check_lr;
pub use rule::{Rule, RuleConfig};

use std::collections::HashMap;

use dfdx::optim::{AdamConfig, SgdConfig};
use dfdx::shapes::{HasShape, Shape};
use dfdx::tensor::{Gradients, Storage, Tensor};
use dfdx::tensor_ops::Device;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::float::Float;
use crate::host::{buffer_from_host, buffer_to_host};
use crate::model::DendriticModel;
use crate::params::{ExtraTensor, Param, ParamVisitor, Role};

struct Slot<E, D: Storage<E>> {
    role: Role,
    /// Updates applied (Adam's bias correction counts from 1).
    steps: i32,
    first: D::Vec,
    second: Option<D::Vec>,
    /// The walk that last visited the tensor (state of tensors no walk visits is dropped).
    visited: u64,
}

/// The [`DendriticOptimizer`] of model type `M`.
pub type OptimizerFor<M> =
    DendriticOptimizer<<M as DendriticModel>::Dtype, <M as DendriticModel>::Device>;

/// A phase-aware optimizer over a [`DendriticModel`].
///
/// ```
/// use pai_core::prelude::*;
/// use dfdx::prelude::*;
///
/// let dev: Cpu = Default::default();
/// let mut layer: Dendritic<_> =
///     Dendritic::new(&dev, dev.build_module::<Linear<2, 1>, f32>(), DendriteConfig::default())?;
/// let mut opt = DendriticOptimizer::adam(dfdx::optim::AdamConfig { lr: 0.05, ..Default::default() });
/// let x = dev.tensor([[1.0f32, 2.0], [0.5, -1.0]]);
/// let y = dev.tensor([[1.0f32], [0.0]]);
/// let mut losses = vec![];
/// for _ in 0..50 {
///     let grads = layer.alloc_grads()?;
///     let pred = layer.forward_mut(x.trace(grads));
///     let loss = mse_loss(pred, y.clone());
///     losses.push(loss.array());
///     opt.step(&mut layer, loss.backward())?;
/// }
/// assert!(losses[49] < losses[0] / 10.0);
/// # Ok::<(), pai_core::Error>(())
/// ```
pub struct DendriticOptimizer<E: Float, D: Device<E>> {
    rule: Rule,
    slots: HashMap<String, Slot<E, D>>,
    /// The device of the tensors with state (known after the first step).
    device: Option<D>,
    /// `(path, generation)` of every layer at the last step.
    structure: Vec<(String, u64)>,
    /// Parameter walks so far (marks which slots the last walk visited).
    walks: u64,
    /// The host buffer gradients are summed over data-parallel replicas in.
    reduced: Vec<E>,
}

impl<E: Float, D: Device<E>> std::fmt::Debug for DendriticOptimizer<E, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DendriticOptimizer")
            .field("rule", &self.rule)
            .field("tensors_with_state", &self.slots.len())
            .finish_non_exhaustive()
    }
}

impl<E: Float, D: Device<E>> DendriticOptimizer<E, D> {
    /// An optimizer with the given rule and no state.
    pub fn new(rule: Rule) -> Self {
        Self {
            rule,
            slots: HashMap::new(),
            device: None,
            structure: Vec::new(),
            walks: 0,
            reduced: Vec::new(),
        }
    }

    /// Adam.
    pub fn adam(config: AdamConfig) -> Self {
        Self::new(Rule::Adam(config))
    }

    /// SGD.
    pub fn sgd(config: SgdConfig) -> Self {
        Self::new(Rule::Sgd(config))
    }

    /// The update rule.
    pub fn rule(&self) -> &Rule {
        &self.rule
    }

    /// The learning rate.
    pub fn lr(&self) -> f64 {
        match &self.rule {
            Rule::Adam(c) => c.lr,
            Rule::Sgd(c) => c.lr,
        }
    }

    /// Sets the learning rate; state is kept.
    ///
    /// # Errors
    /// [`Error::Config`] for a rate that is NaN, infinite or negative (nothing changes).
    pub fn set_lr(&mut self, lr: f64) -> Result<()> {
        check_lr(lr)?;
        match &mut self.rule {
            Rule::Adam(c) => c.lr = lr,
            Rule::Sgd(c) => c.lr = lr,
        }
        Ok(())
    }

    /// How many updates the tensor at `path` has received since its state was created, or
    /// `None` when it has no state (never trained, or dropped by a structure change).
    pub fn steps(&self, path: &str) -> Option<i32> {
        self.slots.get(path).map(|s| s.steps)
    }

    /// The whole state as plain data (rule, step counts) plus tensors (moments), for
    /// checkpoints.
    ///
    /// # Errors
    /// Backend errors.
    ///
    /// # Panics
    /// Never: tensors have state only after a step, which records their device.
    pub fn export(&mut self) -> Result<(OptimizerState, Vec<ExtraTensor<E>>)> {
        let mut slots = Vec::new();
        let mut tensors = Vec::new();
        let mut paths: Vec<&String> = self.slots.keys().collect();
        paths.sort();
        for path in paths {
            let slot = &self.slots[path];
            let dev = self.device.as_ref().expect("slots exist only after a step");
            let len = <D as Storage<E>>::len(dev, &slot.first);
            slots.push(SlotState {
                path: path.clone(),
                role: slot.role,
                steps: slot.steps,
            });
            tensors.push((
                format!("optimizer/{path}/first"),
                vec![len],
                buffer_to_host(dev, &slot.first)?,
            ));
            if let Some(second) = &slot.second {
                tensors.push((
                    format!("optimizer/{path}/second"),
                    vec![len],
                    buffer_to_host(dev, second)?,
                ));
            }
        }
        let state = OptimizerState {
            rule: (&self.rule).into(),
            slots,
        };
        Ok((state, tensors))
    }

    /// Replaces the whole state by an exported one, for `model` as loaded from the same
    /// checkpoint.
    ///
    /// # Errors
    /// [`Error::Mismatch`] when a moment tensor is missing; backend errors.
    pub fn import<M: DendriticModel<Dtype = E, Device = D>>(
        &mut self,
        model: &M,
        state: &OptimizerState,
        tensors: &HashMap<String, (Vec<usize>, Vec<E>)>,
        dev: &D,
    ) -> Result<()> {
        let rule: Rule = state.rule.clone().into();
        let mut slots = HashMap::new();
        for s in &state.slots {
            let moment = |name: &str| -> Result<<D as Storage<E>>::Vec> {
                let key = format!("optimizer/{}/{name}", s.path);
                let (_, values) = tensors.get(&key).ok_or_else(|| Error::Mismatch {
                    path: key.clone(),
                    expected: "optimizer moments".into(),
                    found: "no such tensor".into(),
                })?;
                buffer_from_host(dev, values)
            };
            let second = match rule {
                Rule::Adam(_) => Some(moment("second")?),
                Rule::Sgd(_) => None,
            };
            slots.insert(
                s.path.clone(),
                Slot {
                    role: s.role,
                    steps: s.steps,
                    first: moment("first")?,
                    second,
                    visited: 0,
                },
            );
        }
        self.rule = rule;
        self.slots = slots;
        self.device = Some(dev.clone());
        // generation counters are local history; the loaded model's are the ones that count.
        self.structure = structure_at(model, "");
        Ok(())
    }

    /// Forgets all state (moments, step counts).
    pub fn reset(&mut self) {
        self.slots.clear();
        self.structure.clear();
    }

    /// Applies one update to every tensor that trains in the model's current phase.
    ///
    /// `grads` are the task loss's gradients (`loss.backward()`); candidates learning by
    /// correlation bring their own, captured during that same backward pass.
    ///
    /// # Errors
    /// [`Error::NonFinite`] when a layer captured a NaN or infinite neuron error (nothing is
    /// updated then); backend errors.
    pub fn step<M>(&mut self, model: &mut M, mut grads: Gradients<E, D>) -> Result<()>
    where
        M: DendriticModel<Dtype = E, Device = D>,
    {
        self.update_at(model, "", &mut grads)
    }

    /// [`Self::step`] on a gradient buffer that stays the caller's, to be readied for the next
    /// step with [`DendriticModel::zero_grads`] instead of allocated afresh.
    ///
    /// # Errors
    /// As [`Self::step`].
    pub fn update<M>(&mut self, model: &mut M, grads: &mut Gradients<E, D>) -> Result<()>
    where
        M: DendriticModel<Dtype = E, Device = D>,
    {
        self.update_at(model, "", grads)
    }

    /// [`Self::step`] for the part of a larger model found at `path` (e.g. `"generator"`
    /// inside a GAN pair): its state is kept under the same paths as when the whole model
    /// steps, so one optimizer (and one tracker) serves every part, and the state of the other
    /// parts is left alone.
    ///
    /// # Errors
    /// As [`Self::step`].
    pub fn step_at<M>(
        &mut self,
        model: &mut M,
        path: &str,
        mut grads: Gradients<E, D>,
    ) -> Result<()>
    where
        M: DendriticModel<Dtype = E, Device = D>,
    {
        self.update_at(model, path, &mut grads)
    }

    /// [`Self::update`] for the part of a larger model found at `path`, as [`Self::step_at`].
    ///
    /// # Errors
    /// As [`Self::step`].
    pub fn update_at<M>(
        &mut self,
        model: &mut M,
        path: &str,
        grads: &mut Gradients<E, D>,
    ) -> Result<()>
    where
        M: DendriticModel<Dtype = E, Device = D>,
    {
        self.rule.validate()?;
        let within = |p: &str| path.is_empty() || p == path || p.starts_with(&format!("{path}."));
        let structure = structure_at(model, path);
        let before: Vec<(String, u64)> = self
            .structure
            .iter()
            .filter(|(p, _)| within(p))
            .cloned()
            .collect();
        if structure != before {
            self.slots
                .retain(|p, s| !(within(p) && s.role == Role::Candidate));
            self.structure.retain(|(p, _)| !within(p));
            self.structure.extend(structure);
        }
        // every layer prepares (and clears its flags) even when an earlier one fails, so the
        // next step starts clean; the first failure is reported and nothing is updated.
        let mut first_error = None;
        model.visit_layers_mut(path, &mut |p, layer| {
            if let Err(e) = layer.prepare_step() {
                first_error.get_or_insert(e.in_layer(p));
            }
            Ok(())
        })?;
        // with data-parallel replicas: a failure on any of them fails the step on all, and
        // the gradients are summed over them
        if let Some(c) = crate::collective::active() {
            if !crate::collective::all_ok(&*c, first_error.is_none())? {
                return Err(first_error.unwrap_or_else(|| {
                    Error::Collective(
                        "another replica's step failed (its own error says why); no replica \
                         updated"
                            .into(),
                    )
                }));
            }
            reduce::reduce_gradients(model, path, grads, &*c, &mut self.reduced)?;
        } else if first_error.is_none() {
            reduce::check_finite(model, path, grads)?;
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        self.walks += 1;
        let walk = self.walks;
        let mut updater = Updater {
            rule: self.rule,
            slots: &mut self.slots,
            device: &mut self.device,
            task_grads: grads,
            walk,
        };
        model.visit_params(path, &mut updater)?;
        self.slots.retain(|p, s| !within(p) || s.visited == walk);
        Ok(())
    }
}

struct Updater<'a, E: Float, D: Device<E>> {
    rule: Rule,
    slots: &'a mut HashMap<String, Slot<E, D>>,
    device: &'a mut Option<D>,
    task_grads: &'a mut Gradients<E, D>,
    /// This walk's number: slots it visits are marked with it.
    walk: u64,
}

impl<E: Float, D: Device<E>> ParamVisitor<E, D> for Updater<'_, E, D> {
    fn visit<S: Shape>(
        &mut self,
        param: Param<'_, E, D>,
        tensor: &mut Tensor<S, E, D>,
    ) -> Result<()> {
        let mut existing = self.slots.get_mut(param.path);
        if let Some(slot) = existing.as_deref_mut() {
            slot.visited = self.walk;
        }
        if !param.trainable {
            return Ok(());
        }
        // a tensor's own gradients (a correlation-mode candidate), else the task loss's
        let grads = param.own_grads.unwrap_or(&mut *self.task_grads);
        let grad = grads.get_or_alloc_mut(tensor).map_err(Error::device)?;
        let slot = match existing {
            Some(slot) if slot.role == param.role => slot,
            _ => {
                let dev = tensor.device();
                if self.device.is_none() {
                    *self.device = Some(dev.clone());
                }
                let len = tensor.shape().num_elements();
                let alloc = || <D as Storage<E>>::try_alloc_len(dev, len).map_err(Error::device);
                let slot = Slot {
                    role: param.role,
                    steps: 0,
                    visited: self.walk,
                    first: alloc()?,
                    second: match self.rule {
                        Rule::Adam(_) => Some(alloc()?),
                        Rule::Sgd(_) => None,
                    },
                };
                self.slots.insert(param.path.to_string(), slot);
                self.slots.get_mut(param.path).expect("just inserted")
            }
        };
        slot.steps = slot.steps.saturating_add(1);
        match (&self.rule, &mut slot.second) {
            (Rule::Adam(cfg), Some(second)) => {
                cfg.try_update(slot.steps, tensor, &mut slot.first, second, grad)
            }
            (Rule::Sgd(cfg), _) => cfg.try_update(tensor, &mut slot.first, grad),
            (Rule::Adam(_), None) => unreachable!("Adam slots have a second moment"),
        }
        .map_err(Error::device)
    }
}

/// The optimizer's state without its moments, for checkpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptimizerState {
    /// The update rule.
    pub rule: RuleConfig,
    /// Every tensor with state.
    pub slots: Vec<SlotState>,
}

/// `(path, generation)` of every layer under `path`: what tells a restructure.
fn structure_at<M: DendriticModel>(model: &M, path: &str) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    model.visit_layers(path, &mut |p, l| out.push((p.to_string(), l.generation())));
    out
}

/// One tensor's optimizer state, without its moments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlotState {
    /// Tensor path.
    pub path: String,
    /// Its role when the state was made.
    pub role: Role,
    /// Updates applied.
    pub steps: i32,
}
