//! Batch normalisation's training pass on the CPU: a few passes over the host copy of the
//! input, as one op with its own backward.
//!
//! dfdx 0.13 builds the training pass from a dozen broadcast ops (mean, centre, square, mean,
//! add, square root, divide, multiply, add), each its own CPU kernel that allocates its output
//! and walks every operand through a strided index, and as many backward ops: in a training
//! step of `fashion_cnn`'s CNN they took about half the time. Here, per channel `c` over its
//! `n` values (every batch element and position):
//!
//! ```text
//! μ = Σ x / n    σ² = Σ (x − μ)² / n    y = (x − μ) · scale / √(σ² + ε) + bias
//! ```
//!
//! with the running statistics updated as dfdx does (`momentum`, the unbiased variance), and
//! the exact gradient of that formula: with `x̂ = (x − μ) / √(σ² + ε)`,
//!
//! ```text
//! dbias = Σ dy    dscale = Σ dy · x̂    dx = scale / √(σ² + ε) · (dy − Σ dy / n − x̂ · Σ dy · x̂ / n)
//! ```
//!
//! dfdx's own pass is what runs on other devices and the reference this kernel is tested
//! against (`sequential.rs`). Sums per channel go through [`Layout`] (fixed partial sums: the
//! same bits on every machine and thread count).

use dfdx::shapes::{Const, HasShape, Shape};
use dfdx::tensor::{Gradients, OwnedTape, SplitTape, Tensor};
use dfdx::tensor_ops::Device;

use crate::axis::{Layout, NeuronAxis};
use crate::float::{all_finite, Float};
use crate::host::{add_into, grad_mut, host, put_backward};

/// One batch normalisation's per-channel tensors and settings, as dfdx's `BatchNorm*` holds
/// them.
pub(super) struct BatchNorm<'a, const C: usize, E: Float, D: Device<E>> {
    pub scale: &'a Tensor<(Const<C>,), E, D>,
    pub bias: &'a Tensor<(Const<C>,), E, D>,
    pub running_mean: &'a mut Tensor<(Const<C>,), E, D>,
    pub running_var: &'a mut Tensor<(Const<C>,), E, D>,
    pub epsilon: f64,
    pub momentum: f64,
}

/// Whether a batch of `n` values per channel whose statistics are `mean` and `var` (its own, or
/// the running ones just updated from it) may move the running statistics. Not when it cannot
/// give finite ones: a NaN or an infinity in it (the optimizer then refuses the step's
/// gradients, and nothing of the model moves), or one value per channel (batch 1 without
/// positions, or a 1x1 map: no variance to estimate; dfdx's update would make the running
/// variance NaN through `n / (n - 1)`, and every later inference with it; PyTorch refuses such
/// a batch).
pub(super) fn updates_statistics<E: Float>(n: usize, mean: &[E], var: &[E]) -> bool {
    n >= 2 && all_finite(mean) && all_finite(var)
}

/// Normalises `x` (channels on the axis `Tags` names, the others' values pooled) by its batch
/// statistics, updating the running statistics where [`updates_statistics`] lets it. Call only where [`crate::host::on_host`]
/// holds.
///
/// # Errors
/// Backend errors.
pub(super) fn train<S, Tags, const C: usize, E, D>(
    x: Tensor<S, E, D, OwnedTape<E, D>>,
    bn: BatchNorm<'_, C, E, D>,
) -> Result<Tensor<S, E, D, OwnedTape<E, D>>, D::Err>
where
    S: Shape,
    Tags: NeuronAxis<S, Neurons = Const<C>>,
    E: Float,
    D: Device<E>,
{
    let BatchNorm {
        scale,
        bias,
        running_mean,
        running_var,
        epsilon,
        momentum,
    } = bn;
    let shape = *x.shape();
    let layout = Layout::of::<S, Tags>(&shape);
    let n = shape.num_elements() / C.max(1);
    let per = E::one() / E::of_f64(n as f64);
    let (x, tape) = x.split_tape();
    let (x, mut centred) = host(x)?;
    let mean: Vec<E> = layout.sum(&centred).into_iter().map(|s| s * per).collect();
    let neg_mean: Vec<E> = mean.iter().map(|m| -*m).collect();
    layout.add(&mut centred, &neg_mean);
    let var: Vec<E> = (layout.dot(&centred, &centred).into_iter())
        .map(|s| s * per)
        .collect();
    let eps = E::of_f64(epsilon);
    let inv_std: Vec<E> = var.iter().map(|v| E::one() / (*v + eps).sqrt()).collect();
    let (scale_h, bias_h) = (scale.as_vec(), bias.as_vec());
    let gain: Vec<E> = scale_h.iter().zip(&inv_std).map(|(s, i)| *s * *i).collect();
    let mut y = vec![E::zero(); layout.len];
    layout.add(&mut y, &bias_h);
    layout.axpy(&mut y, &gain, &centred);
    // the running statistics, as dfdx updates them (the variance unbiased), from a batch that
    // can give them
    let dev = x.device().clone();
    if updates_statistics(n, &mean, &var) {
        let m = momentum;
        let unbiased = m * n as f64 / (n as f64 - 1.0);
        running_mean.try_axpy(1.0 - m, &dev.try_tensor_from_vec(mean, (Const::<C>,))?, m)?;
        running_var.try_axpy(
            1.0 - m,
            &dev.try_tensor_from_vec(var, (Const::<C>,))?,
            unbiased,
        )?;
    }
    let y = dev.try_tensor_from_vec(y, shape)?;
    let saved = Saved {
        x,
        scale: scale.clone(),
        bias: bias.clone(),
        centred,
        inv_std,
        gain,
        layout,
        per,
    };
    Ok(put_backward(y, tape, move |grads, dy| {
        saved.backward(grads, dy)
    }))
}

/// What the backward pass needs from the forward pass.
struct Saved<S: Shape, const C: usize, E: Float, D: Device<E>> {
    x: Tensor<S, E, D>,
    scale: Tensor<(Const<C>,), E, D>,
    bias: Tensor<(Const<C>,), E, D>,
    /// `x − μ`.
    centred: Vec<E>,
    /// `1 / √(σ² + ε)` per channel.
    inv_std: Vec<E>,
    /// `scale / √(σ² + ε)` per channel.
    gain: Vec<E>,
    layout: Layout,
    /// `1 / n`.
    per: E,
}

impl<S: Shape, const C: usize, E: Float, D: Device<E>> Saved<S, C, E, D> {
    /// The gradients of the input, scale and bias from the output's, `dy`.
    fn backward(self, grads: &mut Gradients<E, D>, dy: &[E]) -> Result<(), D::Err> {
        let layout = self.layout;
        let sum_dy = layout.sum(dy);
        // Σ dy · (x − μ), and from it Σ dy · x̂
        let sum_dyc = layout.dot(dy, &self.centred);
        let dscale: Vec<E> = sum_dyc
            .iter()
            .zip(&self.inv_std)
            .map(|(s, i)| *s * *i)
            .collect();
        add_into(grad_mut(grads, &self.bias)?, &sum_dy);
        add_into(grad_mut(grads, &self.scale)?, &dscale);
        // dx = gain · dy − gain · Σdy / n − (x − μ) · gain · Σ dy · (x − μ) / (n · (σ² + ε))
        let shift: Vec<E> = (self.gain.iter().zip(&sum_dy))
            .map(|(g, s)| -*g * *s * self.per)
            .collect();
        let slope: Vec<E> = (self.gain.iter().zip(&sum_dyc).zip(&self.inv_std))
            .map(|((g, s), i)| -*g * *s * *i * *i * self.per)
            .collect();
        let dx = grad_mut(grads, &self.x)?;
        layout.axpy(dx, &self.gain, dy);
        layout.add(dx, &shift);
        layout.axpy(dx, &slope, &self.centred);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use dfdx::nn::modules::{BatchNorm1D, BatchNorm2D};
    use dfdx::prelude::{BuildModule, Cpu, ModuleMut, Rank0, SampleTensor, SumTo, Trace};
    use dfdx::shapes::Const;
    use dfdx::tensor::{AsArray, NoneTape, Tensor, TensorFromVec};
    use dfdx::tensor_ops::{Backward, TryMul};

    use super::super::sequential::Norm;
    use crate::float::Float;
    use crate::testing::{assert_close, check_gradient};

    /// The output, the running mean and variance after the pass, and the gradients of the
    /// input, scale and bias of `Σ y ⊙ r`, by `$pass` on a copy of `$bn`.
    macro_rules! outcome {
        ($bn:expr, $x:expr, $r:expr, $pass:expr) => {{
            let mut n = $bn.clone();
            let y = $pass(&mut n, $x.leaky_trace());
            let value = y.retaped::<NoneTape>().as_vec();
            let g = y.try_mul($r.clone()).unwrap().sum::<Rank0, _>().backward();
            let f = |v: Vec<_>| v.into_iter().map(Float::as_f64).collect::<Vec<f64>>();
            [
                f(value),
                f(n.running_mean.as_vec()),
                f(n.running_var.as_vec()),
                f(g.get(&$x).as_vec()),
                f(g.get(&n.scale).as_vec()),
                f(g.get(&n.bias).as_vec()),
            ]
        }};
    }

    macro_rules! check {
        ($bn:ident, $e:ty, $shape:expr, $tol:expr) => {{
            let dev = Cpu::seed_from_u64(3);
            let mut bn = $bn::<3, $e, Cpu>::build(&dev);
            bn.scale = dev.sample_normal();
            bn.bias = dev.sample_normal();
            bn.running_var = dev.sample_uniform();
            let x: Tensor<_, $e, Cpu> = dev.sample_normal_like(&$shape);
            let r: Tensor<_, $e, Cpu> = dev.sample_normal_like(&$shape);
            let ours = outcome!(bn, x, r, |n: &mut $bn<3, $e, Cpu>, x| Norm::forward_train(
                n, x
            )
            .unwrap());
            let dfdx = outcome!(bn, x, r, |n: &mut $bn<3, $e, Cpu>, x| n
                .try_forward_mut(x)
                .unwrap());
            assert_close(&ours, &dfdx, $tol, stringify!($bn $e $shape));
        }};
    }

    #[test]
    fn training_pass_matches_dfdx_in_value_running_statistics_and_every_gradient() {
        check!(BatchNorm2D, f64, (4, Const::<3>, 5, 2), 1e-12);
        check!(BatchNorm2D, f64, (1, Const::<3>, 3, 3), 1e-12);
        check!(BatchNorm1D, f64, (6, Const::<3>), 1e-12);
        check!(BatchNorm1D, f64, (2, Const::<3>, 7), 1e-12);
        check!(BatchNorm2D, f32, (8, Const::<3>, 9, 11), 1e-5);
        check!(BatchNorm1D, f32, (5, Const::<3>, 19), 1e-5);
    }

    #[test]
    fn input_gradient_matches_finite_differences() {
        let dev = Cpu::seed_from_u64(5);
        let mut bn = BatchNorm2D::<3, f64, Cpu>::build(&dev);
        bn.scale = dev.sample_normal();
        let shape = (3, Const::<3>, 2, 3);
        let x: Tensor<_, f64, Cpu> = dev.sample_normal_like(&shape);
        let r: Tensor<_, f64, Cpu> = dev.sample_normal_like(&shape);
        let loss = |v: &[f64]| {
            let mut bn = bn.clone();
            let x = dev.tensor_from_vec(v.to_vec(), shape).leaky_traced();
            let y = Norm::forward_train(&mut bn, x).unwrap();
            y.try_mul(r.clone()).unwrap().sum::<Rank0, _>().array()
        };
        let ours = outcome!(bn, x, r, |n: &mut BatchNorm2D<3, f64, Cpu>, x| {
            Norm::forward_train(n, x).unwrap()
        });
        check_gradient("batchnorm dx", loss, &x.as_vec(), &ours[3], 1e-6);
    }
}
