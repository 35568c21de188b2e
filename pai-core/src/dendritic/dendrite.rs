//! One dendrite (a copy of the layer with its cascade and output weights), the seeds new
//! dendrites are drawn from, and the recurrent state each dendrite keeps.

use dfdx::shapes::ConstDim;
use dfdx::tensor::{Gradients, TensorFromVec, ZerosTensor};
use dfdx::tensor_ops::Device;
use rand::SeedableRng;
use rand_distr::Distribution;

use super::convertible::Convertible;
use crate::axis::PerNeuron;
use crate::error::{Error, Result};
use crate::float::ScaledNormal;
use crate::params::{join, join_index, ModuleParams, ParamVisitor, Role};

/// A per-neuron vector of layer `M`.
type Weights<M> =
    PerNeuron<<M as Convertible>::Neurons, <M as Convertible>::Dtype, <M as Convertible>::Device>;

/// One dendrite: a copy of the layer, its cascade weights, its output weights.
#[derive(Debug)]
pub(crate) struct Dendrite<M: Convertible> {
    pub module: M,
    /// One per earlier dendrite: `cᵢⱼ`.
    pub cascade: Vec<Weights<M>>,
    /// `wᵢ`.
    pub output: Weights<M>,
}

impl<M: Convertible> Dendrite<M> {
    /// A new dendrite: the layer copied, then drawn from `N(0, std²)` with `seed`.
    pub(super) fn fresh(
        neurons: &M,
        earlier: usize,
        dev: &M::Device,
        std: f64,
        seed: u64,
    ) -> Result<Self> {
        let mut module = neurons.try_copy(dev)?;
        module.reinit(std, seed)?;
        let shape = (M::Neurons::default(),);
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15);
        let cascade = (0..earlier)
            .map(|_| {
                let values: Vec<M::Dtype> = ScaledNormal { std }
                    .sample_iter(&mut rng)
                    .take(M::Neurons::SIZE)
                    .collect();
                dev.try_tensor_from_vec(values, shape)
            })
            .collect::<Result<_, _>>()
            .map_err(Error::device)?;
        let output = dev.try_zeros_like(&shape).map_err(Error::device)?;
        Ok(Self {
            module,
            cascade,
            output,
        })
    }

    pub(super) fn copy(&self, dev: &M::Device) -> Result<Self> {
        let vector = |t: &Weights<M>| {
            let mut c = dev.try_zeros_like(&(M::Neurons::default(),))?;
            c.copy_from(&t.as_vec());
            Ok::<_, <M::Device as dfdx::tensor::HasErr>::Err>(c)
        };
        Ok(Self {
            module: self.module.try_copy(dev)?,
            cascade: self
                .cascade
                .iter()
                .map(vector)
                .collect::<Result<_, _>>()
                .map_err(Error::device)?,
            output: vector(&self.output).map_err(Error::device)?,
        })
    }

    pub(super) fn visit_params<V: ParamVisitor<M::Dtype, M::Device>>(
        &mut self,
        path: &str,
        how: DendriteParams<'_, M::Dtype, M::Device>,
        visitor: &mut V,
    ) -> Result<()> {
        let DendriteParams {
            role,
            trainable,
            output_trainable,
            mut own_grads,
        } = how;
        let module_path = join(path, "module");
        self.module.visit_params(
            ModuleParams {
                path: &module_path,
                role,
                trainable,
                own_grads: own_grads.as_deref_mut(),
            },
            visitor,
        )?;
        for (j, c) in self.cascade.iter_mut().enumerate() {
            let p = join_index(path, "cascade", j);
            let param = crate::params::Param {
                path: &p,
                role,
                trainable,
                own_grads: own_grads.as_deref_mut(),
            };
            visitor.visit(param, c)?;
        }
        let p = join(path, "output");
        let param = crate::params::Param {
            path: &p,
            role: if role == Role::Buffer {
                Role::Buffer
            } else {
                Role::DendriteOutput
            },
            trainable: output_trainable,
            own_grads: None,
        };
        visitor.visit(param, &mut self.output)
    }
}

pub(super) struct DendriteParams<'g, E: dfdx::shapes::Dtype, D: Device<E>> {
    pub role: Role,
    pub trainable: bool,
    pub output_trainable: bool,
    pub own_grads: Option<&'g mut Gradients<E, D>>,
}

/// Per-dendrite recurrent states: accepted dendrites by index, then the candidate.
#[derive(Debug)]
pub(crate) struct States<S> {
    pub dendrites: Vec<Option<S>>,
    pub candidate: Option<S>,
}

impl<S> Default for States<S> {
    fn default() -> Self {
        Self {
            dendrites: Vec::new(),
            candidate: None,
        }
    }
}

impl<S> States<S> {
    /// The state of dendrite `k` of the output chain (`k == dendrites` is the candidate).
    pub fn get(&self, k: usize, dendrites: usize) -> Option<&S> {
        if k == dendrites {
            self.candidate.as_ref()
        } else {
            self.dendrites.get(k).and_then(Option::as_ref)
        }
    }

    pub fn set(&mut self, k: usize, dendrites: usize, state: Option<S>) {
        if k == dendrites {
            self.candidate = state;
        } else {
            if self.dendrites.len() <= k {
                self.dendrites.resize_with(k + 1, || None);
            }
            self.dendrites[k] = state;
        }
    }
}

/// Where a layer's next dendrite weights come from: a layer seed and a count of draws. Saved
/// with checkpoints so a resumed run draws the dendrites the uninterrupted run would have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SeedState {
    /// Drawn from the device's generator when the layer is made.
    pub seed: u64,
    /// Dendrites (and candidates) drawn so far.
    pub drawn: u64,
}

impl SeedState {
    /// The seed of the next dendrite, advancing the count (splitmix64 of the pair).
    pub(super) fn next(&mut self) -> u64 {
        self.drawn += 1;
        let mut z = self
            .seed
            .wrapping_add(self.drawn.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}
