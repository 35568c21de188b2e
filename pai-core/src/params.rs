//! The parameter registry: every tensor of a dendritic model, by path and role.
//!
//! dfdx's `TensorCollection` cannot hold tensors whose number changes at run time (dendrites
//! are added during training), so pai-core walks models itself. A model visits each of its
//! tensors once, with a dotted path (`fc1.dendrites.0.module.weight`), a [`Role`], whether it
//! trains in the current phase, and where its gradient lives. The optimizer, gradient
//! allocation, parameter counts and checkpoints are all visitors of this one walk.

use dfdx::nn::tensor_collection::{
    RecursiveWalker, TensorCollection, TensorOptions, TensorVisitor, ViewTensorMut, ViewTensorName,
};
use dfdx::shapes::{Dtype, HasShape, Shape};
use dfdx::tensor::{Gradients, Tensor};
use dfdx::tensor_ops::Device;

use crate::error::{Error, Result};

/// What a tensor is, in the method's terms.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Role {
    /// A weight of an original (converted) layer.
    Neuron,
    /// A per-neuron weight that feeds a dendrite's activation into its neuron.
    DendriteOutput,
    /// A weight of an accepted dendrite, including its cascade weights.
    Dendrite,
    /// A weight of the candidate being trained in the dendrite phase.
    Candidate,
    /// A weight of a layer that trains normally and gets no dendrites.
    Tracked,
    /// State that is saved but never trained (normalisation running statistics).
    Buffer,
}

impl Role {
    /// Every role, in display order.
    pub const ALL: [Role; 6] = [
        Role::Neuron,
        Role::DendriteOutput,
        Role::Dendrite,
        Role::Candidate,
        Role::Tracked,
        Role::Buffer,
    ];

    /// Lower-case name, as used in reports and CSV files.
    pub fn name(self) -> &'static str {
        match self {
            Role::Neuron => "neuron",
            Role::DendriteOutput => "dendrite_output",
            Role::Dendrite => "dendrite",
            Role::Candidate => "candidate",
            Role::Tracked => "tracked",
            Role::Buffer => "buffer",
        }
    }
}

/// One visited tensor's description.
#[derive(Debug)]
pub struct Param<'a, E: Dtype, D: Device<E>> {
    /// Dotted path from the model root.
    pub path: &'a str,
    /// What the tensor is.
    pub role: Role,
    /// Whether the optimizer updates it in the current phase.
    pub trainable: bool,
    /// `Some` when the tensor's gradient comes from its own backward pass (a candidate learning
    /// by correlation) rather than from the task loss; `None` means the task loss's gradients.
    pub own_grads: Option<&'a mut Gradients<E, D>>,
}

impl<E: Dtype, D: Device<E>> Param<'_, E, D> {
    /// True when the task loss's backward pass must produce a gradient for this tensor.
    pub fn needs_task_grad(&self) -> bool {
        self.trainable && self.own_grads.is_none()
    }
}

/// Something that visits every tensor of a model (the optimizer, a checkpoint writer, ...).
pub trait ParamVisitor<E: Dtype, D: Device<E>> {
    /// Called once per tensor.
    ///
    /// # Errors
    /// Whatever the visitor reports; the walk stops at the first error.
    fn visit<S: Shape>(
        &mut self,
        param: Param<'_, E, D>,
        tensor: &mut Tensor<S, E, D>,
    ) -> Result<()>;
}

/// Joins a path prefix and a field name with a dot.
///
/// Every parameter walk (each training step's update and gradient zeroing) builds its paths
/// with this, so it makes one allocation of the exact size and no formatting.
pub fn join(prefix: &str, name: &str) -> String {
    join_parts(prefix, &[name])
}

/// `prefix.name.index` (e.g. `fc1.dendrites.0`), as [`join`].
pub(crate) fn join_index(prefix: &str, name: &str, index: usize) -> String {
    join_parts(prefix, &[name, &index.to_string()])
}

/// `prefix` and the non-empty `parts`, joined with dots.
fn join_parts(prefix: &str, parts: &[&str]) -> String {
    let len = prefix.len() + parts.iter().map(|p| p.len() + 1).sum::<usize>();
    let mut path = String::with_capacity(len);
    path.push_str(prefix);
    for p in parts.iter().filter(|p| !p.is_empty()) {
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(p);
    }
    path
}

/// How a dfdx module's tensors are presented to a [`ParamVisitor`].
#[derive(Debug)]
pub struct ModuleParams<'g, E: Dtype, D: Device<E>> {
    /// Path of the module.
    pub path: &'g str,
    /// Role of its trainable tensors (non-trainable ones are [`Role::Buffer`]).
    pub role: Role,
    /// Whether its trainable tensors train in the current phase.
    pub trainable: bool,
    /// Where their gradients live (see [`Param::own_grads`]).
    pub own_grads: Option<&'g mut Gradients<E, D>>,
}

impl<'g, E: Dtype, D: Device<E>> ModuleParams<'g, E, D> {
    /// Tensors trained by the task loss (or frozen, when `trainable` is false).
    pub fn new(path: &'g str, role: Role, trainable: bool) -> Self {
        Self {
            path,
            role,
            trainable,
            own_grads: None,
        }
    }
}

/// Visits every tensor of a dfdx module (anything with a `TensorCollection`), e.g. a tracked
/// layer of a hand-written model.
///
/// # Errors
/// The visitor's first error.
pub fn visit_module<E, D, M, V>(
    module: &mut M,
    how: ModuleParams<'_, E, D>,
    visitor: &mut V,
) -> Result<()>
where
    E: Dtype,
    D: Device<E>,
    M: TensorCollection<E, D>,
    V: ParamVisitor<E, D>,
{
    let mut adapter = Adapter { how, visitor };
    M::iter_tensors(&mut RecursiveWalker {
        m: (module, String::new()),
        f: &mut adapter,
    })?;
    Ok(())
}

struct Adapter<'g, 'v, E: Dtype, D: Device<E>, V> {
    how: ModuleParams<'g, E, D>,
    visitor: &'v mut V,
}

impl<E: Dtype, D: Device<E>, V: ParamVisitor<E, D>> TensorVisitor<E, D>
    for Adapter<'_, '_, E, D, V>
{
    type Viewer = (ViewTensorMut, ViewTensorName);
    type Err = Error;
    type E2 = E;
    type D2 = D;

    fn visit<S: Shape>(
        &mut self,
        opts: TensorOptions<S, E, D>,
        (tensor, name): (&mut Tensor<S, E, D>, String),
    ) -> Result<Option<Tensor<S, E, D>>> {
        let path = join(self.how.path, &name);
        let param = Param {
            path: &path,
            role: if opts.do_gradient_update {
                self.how.role
            } else {
                Role::Buffer
            },
            trainable: self.how.trainable && opts.do_gradient_update,
            own_grads: self.how.own_grads.as_deref_mut(),
        };
        self.visitor.visit(param, tensor)?;
        Ok(None)
    }
}

/// Parameter counts by role.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParamCounts {
    counts: [usize; Role::ALL.len()],
}

impl ParamCounts {
    /// Scalars in tensors of `role`.
    pub fn get(&self, role: Role) -> usize {
        self.counts[role as usize]
    }

    /// Scalars a deployed model carries: everything but the candidate and buffers.
    pub fn inference(&self) -> usize {
        self.get(Role::Neuron)
            + self.get(Role::DendriteOutput)
            + self.get(Role::Dendrite)
            + self.get(Role::Tracked)
    }

    /// All trainable-kind scalars (everything but buffers), the candidate included.
    pub fn total(&self) -> usize {
        self.inference() + self.get(Role::Candidate)
    }
}

impl std::fmt::Display for ParamCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = Role::ALL
            .iter()
            .filter(|r| self.get(**r) > 0)
            .map(|r| format!("{} {}", r.name(), self.get(*r)))
            .collect();
        write!(f, "{} parameters ({})", self.inference(), parts.join(", "))
    }
}

pub(crate) struct Counter(pub ParamCounts);

impl<E: Dtype, D: Device<E>> ParamVisitor<E, D> for Counter {
    fn visit<S: Shape>(
        &mut self,
        param: Param<'_, E, D>,
        tensor: &mut Tensor<S, E, D>,
    ) -> Result<()> {
        self.0.counts[param.role as usize] += tensor.shape().num_elements();
        Ok(())
    }
}

/// Zeroes (allocating where absent) the gradient of every tensor the task loss trains now and
/// marks them as leaves, as dfdx's `ZeroGrads::zero_grads` does, so that a trace keeps these.
pub(crate) struct GradZeroer<'g, E: Dtype, D: Device<E>> {
    pub grads: &'g mut Gradients<E, D>,
    pub ids: dfdx::optim::UnusedTensors,
}

impl<E: Dtype, D: Device<E>> ParamVisitor<E, D> for GradZeroer<'_, E, D> {
    fn visit<S: Shape>(
        &mut self,
        param: Param<'_, E, D>,
        tensor: &mut Tensor<S, E, D>,
    ) -> Result<()> {
        if param.needs_task_grad() {
            let grad = self.grads.get_or_alloc_mut(tensor).map_err(Error::device)?;
            tensor
                .device()
                .try_fill_with_zeros(grad)
                .map_err(Error::device)?;
            self.ids.add(tensor);
        }
        Ok(())
    }
}

/// A tensor stored beside the model's: name, shape, values. Names contain a `/`, which model
/// paths never do (optimizer state uses `optimizer/<path>/<moment>`).
pub type ExtraTensor<E> = (String, Vec<usize>, Vec<E>);

#[cfg(test)]
mod tests {
    use super::*;
    use dfdx::prelude::*;

    struct Names(Vec<(String, Role, bool)>);
    impl ParamVisitor<f32, Cpu> for Names {
        fn visit<S: Shape>(
            &mut self,
            p: Param<'_, f32, Cpu>,
            _: &mut Tensor<S, f32, Cpu>,
        ) -> Result<()> {
            self.0.push((p.path.to_string(), p.role, p.trainable));
            Ok(())
        }
    }

    #[test]
    fn dfdx_modules_are_walked_by_path_with_buffers_apart() {
        let dev: Cpu = Default::default();
        let mut m = dev.build_module::<(Linear<2, 3>, BatchNorm1D<3>), f32>();
        let mut names = Names(vec![]);
        let how = ModuleParams::new("block", Role::Tracked, true);
        visit_module(&mut m, how, &mut names).unwrap();
        let got: Vec<_> = names
            .0
            .iter()
            .map(|(p, r, t)| format!("{p} {} {t}", r.name()))
            .collect();
        assert_eq!(
            got,
            [
                "block.0.weight tracked true",
                "block.0.bias tracked true",
                "block.1.scale tracked true",
                "block.1.bias tracked true",
                "block.1.running_mean buffer false",
                "block.1.running_var buffer false",
            ]
        );
    }

    #[test]
    fn join_skips_empty_parts() {
        assert_eq!(join("", "fc1"), "fc1");
        assert_eq!(join("gen", "fc1"), "gen.fc1");
        assert_eq!(join("gen", ""), "gen");
        assert_eq!(join("", ""), "");
        assert_eq!(join_index("fc1", "dendrites", 0), "fc1.dendrites.0");
        assert_eq!(join_index("", "cascade", 1234), "cascade.1234");
        assert_eq!(
            join_index("g.fc1", "dendrites", usize::MAX),
            format!("g.fc1.dendrites.{}", usize::MAX)
        );
    }
}
