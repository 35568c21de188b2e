//! Test helpers: a hand-written two-layer model (the code `#[perforated]` generates, written
//! out, so the path the macro targets stays tested on its own).
#![allow(dead_code)]

mod mlp;
pub use mlp::*;

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
