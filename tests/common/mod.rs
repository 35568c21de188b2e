//! Test helpers: a hand-written two-layer model (the code `#[perforated]` generates, written
//! out, so the path the macro targets stays tested on its own).
#![allow(dead_code)]

mod mlp;
pub mod run;
pub mod sealed;
pub use mlp::*;

/// The device the behaviour tests run on: the CPU, or the GPU with the `cuda` feature (as
/// dfdx's own tests choose theirs).
#[cfg(not(feature = "cuda"))]
pub type TestDevice = perforated::prelude::Cpu;
/// The device the behaviour tests run on: the CPU, or the GPU with the `cuda` feature (as
/// dfdx's own tests choose theirs).
#[cfg(feature = "cuda")]
pub type TestDevice = perforated::prelude::Cuda;

use perforated::params::{Param, ParamVisitor};
use perforated::prelude::*;

/// Sets every dendrite output weight tensor (the `k`-th met in the walk) to `value(k)`, so
/// that dendrites really are in the output.
pub fn set_outputs<M: DendriticModel>(model: &mut M, value: impl FnMut(usize) -> f64) {
    struct Set<F>(F, usize);
    impl<E: perforated::Float, D: Device<E>, F: FnMut(usize) -> f64> ParamVisitor<E, D> for Set<F> {
        fn visit<S: Shape>(
            &mut self,
            p: Param<'_, E, D>,
            t: &mut Tensor<S, E, D>,
        ) -> perforated::Result<()> {
            if p.role == Role::DendriteOutput {
                let v = E::of_f64((self.0)(self.1));
                self.1 += 1;
                t.copy_from(&vec![v; t.shape().num_elements()]);
            }
            Ok(())
        }
    }
    model.visit_params("", &mut Set(value, 0)).unwrap();
}

/// Every tensor's role and values, by path.
pub fn values<M: DendriticModel>(
    model: &mut M,
) -> std::collections::HashMap<String, (Role, Vec<M::Dtype>)> {
    snapshot(model)
        .into_iter()
        .map(|(p, r, v)| (p, (r, v)))
        .collect()
}

/// One training step of `model` on `(x, y)` with MSE; returns the loss.
pub fn mse_step<const I: usize, const H: usize, const O: usize, const B: usize>(
    model: &mut Mlp<I, H, O, f32, TestDevice>,
    opt: &mut DendriticOptimizer<f32, TestDevice>,
    x: &Tensor<Rank2<B, I>, f32, TestDevice>,
    y: &Tensor<Rank2<B, O>, f32, TestDevice>,
) -> f32 {
    let grads = model.alloc_grads().unwrap();
    let loss = mse_loss(model.forward_mut(x.trace(grads)), y.clone());
    let value = loss.array();
    opt.step(model, loss.backward()).unwrap();
    value
}
