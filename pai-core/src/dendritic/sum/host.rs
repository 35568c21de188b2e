//! The dendrite sum in one pass on the CPU: the fast path of [`super::dendrite_sum`].
//!
//! Per dendrite the sum is one or more broadcast multiplies, adds and a squash. dfdx 0.13 runs each as its own CPU kernel that allocates
//! its output and walks every operand through a strided index, forward and backward; on the
//! 64-128-10 benchmark that chain cost more than the dendrite's own matrix product. On
//! [`Cpu`] the whole chain runs here as one forward loop and one backward op; on other devices
//! [`super::ops`] builds it from dfdx ops (the reference this kernel is tested against).
//!
//! Every operand is made contiguous first (`reshape_like` to its own shape is free when it
//! already is), so host copies and gradient buffers are in logical order.

use std::sync::Arc;

use dfdx::shapes::{ConstDim, HasShape, Shape};
use dfdx::tensor::{Merge, PutTape, SplitTape, Tape, Tensor};
use dfdx::tensor_ops::{Device, ReshapeTo};

use super::{Pre, Term};
use crate::axis::{Layout, NeuronAxis, PerNeuron};
use crate::dendritic::config::Activation;
use crate::float::Float;
use crate::host::{empty, grad_buffer, grad_mut, matmul, on_host, Dst, Operand, Scratch};

/// `y + Σⱼ wⱼ ⊙ aⱼ` as one op on `y`'s tape, and, when `keep_acts`, the activations `aⱼ` as
/// tensors (in cascade order). With tapes on the pre-activations (the gradient mode) they and
/// the cascade weights get gradients too; without (frozen, detached dendrites) only `y` and the
/// output weights do. `input` is the layer input as a `(rows, inputs)` matrix, which
/// [`Pre::Affine`] terms need (the layer's neurons are then its output's last axis); in the
/// gradient mode it is on the pre-activations' tape and gets their gradient. Call only where
/// [`on_host`] holds.
pub(super) fn dendrite_sum<Tags, So, E, D, T, P>(
    y: Tensor<So, E, D, T>,
    terms: Vec<Term<'_, So, Tags::Neurons, E, D, P>>,
    input: Option<Tensor<(usize, usize), E, D, P>>,
    activation: Activation,
    keep_acts: bool,
    scratch: &Arc<Scratch<E>>,
) -> Result<(Tensor<So, E, D, T>, Vec<Tensor<So, E, D>>), D::Err>
where
    Tags: NeuronAxis<So>,
    So: Shape,
    E: Float,
    D: Device<E>,
    T: Tape<E, D> + Merge<P>,
    P: Tape<E, D>,
{
    debug_assert!(on_host::<E, D>());
    if terms.is_empty() {
        return Ok((y, Vec::new()));
    }
    let shape = *y.shape();
    let layout = Layout::of::<So, Tags>(&shape);
    // The terms are summed apart and added to `y` in place: the output keeps `y`'s id, so its
    // gradient is `y`'s, with no new tensor, gradient buffer or copy of `y` or of its gradient.
    let (mut y, mut tape) = y.try_reshape_like(&shape)?.split_tape();
    let mut out = vec![E::default(); layout.len];

    let trains_terms = P::OWNS_TAPE && T::OWNS_TAPE;
    // the input matrix, on the host, for the affine terms
    let mut input = match input {
        Some(x) => {
            let (x, x_tape) = x.split_tape();
            tape = tape.merge(x_tape);
            let (x, host) = scratch.host(x)?;
            let (rows, features) = *x.shape();
            Some(Input {
                tensor: x,
                host,
                rows,
                features,
            })
        }
        None => None,
    };
    let mut acts: Vec<Vec<E>> = Vec::with_capacity(terms.len());
    let mut pres = Vec::with_capacity(terms.len());
    let mut cascades = Vec::with_capacity(terms.len());
    let mut outputs = Vec::with_capacity(terms.len());
    let mut biases = Vec::with_capacity(terms.len());
    for term in terms {
        let (pre, mut z) = match term.pre {
            Pre::Module(pre) => {
                let (pre, z) = scratch.host(pre)?;
                let (pre, pre_tape) = pre.split_tape();
                tape = tape.merge(pre_tape);
                (Saved::Module(pre), z)
            }
            Pre::Affine(weight) => {
                let x = input
                    .as_ref()
                    .expect("affine terms come with the input matrix");
                let (weight, w) = scratch.host(weight)?;
                let neurons = weight.shape().0;
                debug_assert_eq!(x.rows * neurons, layout.len);
                let mut z = scratch.zeros(layout.len);
                // z = x · Wᵀ
                matmul(
                    Dst::new(&mut z, x.rows, neurons, false),
                    Operand::new(&x.host, x.rows, x.features, false),
                    Operand::new(&w, neurons, x.features, true),
                );
                (
                    Saved::Affine {
                        weight,
                        host: w,
                        grad: Vec::new(),
                    },
                    z,
                )
            }
        };
        if let Some(bias) = term.bias {
            layout.add(&mut z, &per_neuron(bias));
        }
        if trains_terms {
            biases.push(term.bias.cloned());
        }
        let cascade: Vec<Vec<E>> = term.cascade.iter().map(per_neuron).collect();
        for (c, a) in cascade.iter().zip(&acts) {
            layout.axpy(&mut z, c, a);
        }
        let a = squash(z, activation);
        let w = per_neuron(term.output);
        layout.axpy(&mut out, &w, &a);
        acts.push(a);
        // kept for their gradients only: frozen, detached pre-activations are freed here
        if trains_terms {
            pres.push(pre);
        } else if let Saved::Affine { host, .. } = pre {
            scratch.give([host]);
        }
        cascades.push((term.cascade.to_vec(), cascade));
        outputs.push((term.output.clone(), w));
    }
    let dev = y.device().clone();
    y.try_axpy(1.0, &dev.try_tensor_from_vec(out, shape)?, 1.0)?;
    let kept = match keep_acts {
        true => acts
            .iter()
            .map(|a| dev.try_tensor_from_vec(a.clone(), shape))
            .collect::<Result<Vec<_>, _>>()?,
        false => Vec::new(),
    };
    if !trains_terms {
        // nothing but `y` and the output weights needs the input from here on
        if let Some(x) = input.take() {
            scratch.give([x.host]);
        }
    }
    if !T::OWNS_TAPE {
        scratch.give(acts);
        return Ok((y.put_tape(tape), kept));
    }

    let handle = y.clone();
    let saved = acts;
    let scratch = Arc::clone(scratch);
    tape.add_backward_op(move |grads| {
        // the output's gradient (which is `y`'s), lent out of `grads` (and returned below) so
        // that other entries can be written while it is read, without copying it
        let lent = std::mem::replace(grad_buffer(grads, &handle)?, empty(&dev)?);
        let g: &[E] = &lent;
        // dL/dzⱼ is built in preⱼ's own gradient buffer, lent out like the output's (preⱼ
        // feeds only this sum), or for an affine term in a zeroed vector of its own: when j is
        // reached it holds exactly the cascade terms of the later dendrites. (`pres` holds
        // terms only when they train.)
        let mut pres = pres;
        for p in &mut pres {
            if let Saved::Affine { grad, .. } = p {
                *grad = scratch.zeros(layout.len);
            }
        }
        for j in (0..saved.len()).rev() {
            let (w_tensor, w) = &outputs[j];
            add_into(grad_mut(grads, w_tensor)?, &layout.dot(&saved[j], g));
            let Some((term, earlier)) = pres.get_mut(..=j).and_then(<[_]>::split_last_mut) else {
                continue;
            };
            let mut lent_pre = None;
            let d: &mut [E] = match term {
                Saved::Module(pre) => {
                    lent_pre.insert(std::mem::replace(grad_buffer(grads, pre)?, empty(&dev)?))
                }
                Saved::Affine { grad, .. } => grad,
            };
            layout.axpy(d, w, g);
            // through the squash
            squash_grad(d, &saved[j], activation);
            if let Some(bias) = &biases[j] {
                add_into(grad_mut(grads, bias)?, &layout.sum(d));
            }
            let (c_tensors, c) = &cascades[j];
            for ((c_tensor, c), (a, earlier)) in
                c_tensors.iter().zip(c).zip(saved.iter().zip(earlier))
            {
                add_into(grad_mut(grads, c_tensor)?, &layout.dot(a, d));
                match earlier {
                    Saved::Module(pre) => layout.axpy(grad_mut(grads, pre)?, c, d),
                    Saved::Affine { grad, .. } => layout.axpy(grad, c, d),
                }
            }
            match term {
                Saved::Module(pre) => {
                    if let Some(d) = lent_pre {
                        *grad_buffer(grads, pre)? = d;
                    }
                }
                Saved::Affine { weight, host, grad } => {
                    let x = input
                        .as_ref()
                        .expect("affine terms come with the input matrix");
                    let neurons = weight.shape().0;
                    // dW += dᵀ · x
                    matmul(
                        Dst::new(grad_mut(grads, weight)?, neurons, x.features, true),
                        Operand::new(grad, x.rows, neurons, true),
                        Operand::new(&x.host, x.rows, x.features, false),
                    );
                    // dx += d · W
                    matmul(
                        Dst::new(grad_mut(grads, &x.tensor)?, x.rows, x.features, true),
                        Operand::new(grad, x.rows, neurons, false),
                        Operand::new(host, neurons, x.features, false),
                    );
                }
            }
        }
        *grad_buffer(grads, &handle)? = lent;
        scratch.give(saved);
        for p in pres {
            if let Saved::Affine { host, grad, .. } = p {
                scratch.give([host, grad]);
            }
        }
        if let Some(x) = input {
            scratch.give([x.host]);
        }
        Ok(())
    });
    Ok((y.put_tape(tape), kept))
}

/// The layer input of the affine terms: its `(rows, features)` tensor and a host copy.
struct Input<E: Float, D: Device<E>> {
    tensor: Tensor<(usize, usize), E, D>,
    host: Vec<E>,
    rows: usize,
    features: usize,
}

/// A term's pre-activation as kept for the backward pass: the module output (its gradient
/// goes to its buffer), or the affine weight with a host copy and, in the backward pass, the
/// gradient of its product.
enum Saved<So: Shape, E: Float, D: Device<E>> {
    Module(Tensor<So, E, D>),
    Affine {
        weight: Tensor<(usize, usize), E, D>,
        host: Vec<E>,
        grad: Vec<E>,
    },
}

fn per_neuron<N: ConstDim, E: Float, D: Device<E>>(t: &PerNeuron<N, E, D>) -> Vec<E> {
    let mut v = vec![E::default(); N::SIZE];
    t.copy_into(&mut v);
    v
}

fn add_into<E: Float>(dst: &mut [E], src: &[E]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d += *s;
    }
}

fn squash<E: Float>(mut z: Vec<E>, activation: Activation) -> Vec<E> {
    match activation {
        Activation::Sigmoid => E::sigmoid_in_place(&mut z),
        Activation::Tanh => z.iter_mut().for_each(|v| *v = v.tanh()),
        Activation::Relu => z.iter_mut().for_each(|v| *v = v.max(E::zero())),
    }
    z
}

/// Multiplies `d` by the squash's derivative, written in terms of its output `a`.
fn squash_grad<E: Float>(d: &mut [E], a: &[E], activation: Activation) {
    let one = E::one();
    for (d, a) in d.iter_mut().zip(a) {
        *d *= match activation {
            Activation::Sigmoid => *a * (one - *a),
            Activation::Tanh => one - *a * *a,
            Activation::Relu => {
                if *a > E::zero() {
                    one
                } else {
                    E::zero()
                }
            }
        };
    }
}
