//! The dendrite sum in one pass on the CPU.
//!
//! After the dendrite modules have run, a layer's output is
//! `y + Σⱼ wⱼ ⊙ aⱼ` with `aⱼ = f(preⱼ + Σᵢ<ⱼ cⱼᵢ ⊙ aᵢ)`: per dendrite, one or more broadcast
//! multiplies, adds and a squash. dfdx 0.13 runs each as its own CPU kernel that allocates
//! its output and walks every operand through a strided index, forward and backward; on the
//! 64-128-10 benchmark that chain cost more than the dendrite's own matrix product. On
//! [`Cpu`] the whole chain runs here as one forward loop and one backward op; on other devices
//! `forward.rs` builds it from dfdx ops.
//!
//! Every operand is made contiguous first (`reshape_like` to its own shape is free when it
//! already is), so host copies and gradient buffers are in logical order.

use std::any::{Any, TypeId};
use std::sync::{Arc, Mutex};

use dfdx::shapes::{ConstDim, HasShape, Shape};
use dfdx::tensor::{Cpu, Gradients, Merge, PutTape, SplitTape, Storage, Tape, Tensor};
use dfdx::tensor_ops::{Device, ReshapeTo};

use super::gemm::{matmul, Dst, Operand};
use super::{lock, Activation};
use crate::axis::{Layout, NeuronAxis};
use crate::Float;

/// Whether `D` is the CPU, where [`dendrite_sum`] applies.
pub(crate) fn on_host<E: Float, D: Device<E>>() -> bool {
    TypeId::of::<D>() == TypeId::of::<Cpu>()
}

/// A per-neuron vector of a layer whose neuron axis has `N` entries.
pub(crate) type PerNeuron<N, E, D> = Tensor<(N,), E, D>;

/// Where a dendrite's pre-activation comes from.
pub(crate) enum Pre<So: Shape, E: Float, D: Device<E>, P> {
    /// The dendrite module's output.
    Module(Tensor<So, E, D, P>),
    /// An affine dendrite's weight `W` `(neurons, inputs)`, sharing the layer weight's id: the
    /// sum computes `x · Wᵀ` from the input matrix it is given, and in the gradient mode
    /// writes the gradients of `W` and `x` itself, so that the product allocates no output
    /// and no gradient buffer of its own.
    Affine(Tensor<(usize, usize), E, D>),
}

/// What one dendrite contributes: its pre-activation (for an affine layer without its bias,
/// which is then given here), its cascade weights (one per earlier dendrite) and its output
/// weights.
pub(crate) struct Term<'a, So: Shape, N: ConstDim, E: Float, D: Device<E>, P> {
    pub pre: Pre<So, E, D, P>,
    /// Added per neuron; it gets a gradient when the terms train.
    pub bias: Option<&'a PerNeuron<N, E, D>>,
    pub cascade: &'a [PerNeuron<N, E, D>],
    pub output: &'a PerNeuron<N, E, D>,
}

/// Host vectors of one layer's fused sum, kept from one step to the next.
///
/// Every step the sum needs a host vector per dendrite the size of the layer's output (its
/// activation, kept until the backward pass). Allocated afresh they are freed together at the
/// end of the step, and glibc hands the top of its heap back to the system and page-faults it
/// in again on the next step: with 3 gradient-mode dendrites at batch 256 that was about 250
/// page faults a step and a sixth of its time. A layer's vectors all have its output's size,
/// so the ones it gives back serve the next step as they are.
pub(crate) struct Scratch<E> {
    free: Mutex<Vec<Vec<E>>>,
}

impl<E> Default for Scratch<E> {
    fn default() -> Self {
        Self {
            free: Mutex::new(Vec::new()),
        }
    }
}

impl<E> std::fmt::Debug for Scratch<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let free = self.free.lock().map_or(0, |v| v.len());
        f.debug_struct("Scratch").field("free", &free).finish()
    }
}

impl<E: Float> Scratch<E> {
    /// Vectors kept at most: a step gives back what it took, so this bounds only what a
    /// caller running several forward passes before one backward pass leaves behind.
    const KEEP: usize = 32;

    /// `len` zeros in a vector from the pool.
    fn zeros(&self, len: usize) -> Vec<E> {
        let mut v = lock(&self.free).pop().unwrap_or_default();
        v.clear();
        v.resize(len, E::zero());
        v
    }

    /// [`host`], in a vector from the pool.
    fn host<S: Shape, D: Device<E>, T: Tape<E, D>>(
        &self,
        t: Tensor<S, E, D, T>,
    ) -> Result<(Tensor<S, E, D, T>, Vec<E>), D::Err> {
        host_into(t, lock(&self.free).pop().unwrap_or_default())
    }

    /// Returns vectors to the pool.
    fn give(&self, vectors: impl IntoIterator<Item = Vec<E>>) {
        let mut free = lock(&self.free);
        for v in vectors {
            if free.len() < Self::KEEP {
                free.push(v);
            }
        }
    }
}

/// Contiguous host copy of `t`, and `t` itself (made contiguous).
pub(crate) fn host<S: Shape, E: Float, D: Device<E>, T: Tape<E, D>>(
    t: Tensor<S, E, D, T>,
) -> Result<(Tensor<S, E, D, T>, Vec<E>), D::Err> {
    host_into(t, Vec::new())
}

/// [`host`] into `v` (resized to fit; its old contents are overwritten).
fn host_into<S: Shape, E: Float, D: Device<E>, T: Tape<E, D>>(
    t: Tensor<S, E, D, T>,
    mut v: Vec<E>,
) -> Result<(Tensor<S, E, D, T>, Vec<E>), D::Err> {
    let shape = *t.shape();
    let t = t.try_reshape_like(&shape)?;
    // `copy_into` writes every element: a pooled vector of the right length is not cleared
    // first (only new elements are written twice)
    v.resize(shape.num_elements(), E::zero());
    t.copy_into(&mut v);
    Ok((t, v))
}

/// The gradient buffer of `t` (allocated if absent) as the CPU's vector type.
fn grad_buffer<'g, S: Shape, E: Float, D: Device<E>>(
    grads: &'g mut Gradients<E, D>,
    t: &Tensor<S, E, D>,
) -> Result<&'g mut <Cpu as Storage<E>>::Vec, D::Err> {
    let buf = grads.get_or_alloc_mut(t)?;
    Ok((buf as &mut dyn Any)
        .downcast_mut::<<Cpu as Storage<E>>::Vec>()
        .expect("dendrite_sum runs on the CPU only (checked by on_host)"))
}

/// The gradient buffer of `t` as a host slice (allocated if absent).
fn grad_mut<'g, S: Shape, E: Float, D: Device<E>>(
    grads: &'g mut Gradients<E, D>,
    t: &Tensor<S, E, D>,
) -> Result<&'g mut [E], D::Err> {
    Ok(&mut grad_buffer(grads, t)?[..])
}

/// An empty CPU vector (no allocation), to stand in for a lent gradient buffer.
fn empty<E: Float, D: Device<E>>(dev: &D) -> Result<<Cpu as Storage<E>>::Vec, D::Err> {
    let mut v = Some(<D as Storage<E>>::try_alloc_len(dev, 0)?);
    Ok((&mut v as &mut dyn Any)
        .downcast_mut::<Option<<Cpu as Storage<E>>::Vec>>()
        .and_then(Option::take)
        .expect("dendrite_sum runs on the CPU only (checked by on_host)"))
}

/// `y + Σⱼ wⱼ ⊙ aⱼ` as one op on `y`'s tape, and, when `keep_acts`, the activations `aⱼ` as
/// tensors (in cascade order). With tapes on the pre-activations (the gradient mode) they and
/// the cascade weights get gradients too; without (frozen, detached dendrites) only `y` and the
/// output weights do. `input` is the layer input as a `(rows, inputs)` matrix, which
/// [`Pre::Affine`] terms need (the layer's neurons are then its output's last axis); in the
/// gradient mode it is on the pre-activations' tape and gets their gradient. Call only where
/// [`on_host`] holds.
#[allow(clippy::type_complexity)]
pub(crate) fn dendrite_sum<Tags, So, E, D, T, P>(
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

#[cfg(test)]
mod tests {
    use dfdx::shapes::{Const, Rank1, Rank2, Rank4};
    use dfdx::tensor::{Cpu, NoneTape, OwnedTape, SampleTensor, Tensor, TensorFrom, WithEmptyTape};
    use dfdx::tensor_ops::{Backward, PermuteTo, SumTo, TryAdd, TryMatMul, TryMul};

    use super::*;
    use crate::axis::{Any, Batch, Neurons};

    type Tags = (Batch, Neurons, Any, Any);
    type Out = Rank4<2, 3, 2, 2>;
    type Vec3 = Tensor<Rank1<3>, f64, Cpu>;

    /// The same chain from dfdx ops, as `forward.rs` builds it on other devices.
    fn reference(
        y: Tensor<Out, f64, Cpu, OwnedTape<f64, Cpu>>,
        pres: Vec<Tensor<Out, f64, Cpu, OwnedTape<f64, Cpu>>>,
        biases: &[Vec3],
        cascades: &[Vec<Vec3>],
        outputs: &[Vec3],
        activation: Activation,
    ) -> Tensor<Out, f64, Cpu, OwnedTape<f64, Cpu>> {
        let shape = *y.shape();
        let mut acts: Vec<Tensor<Out, f64, Cpu, OwnedTape<f64, Cpu>>> = Vec::new();
        for (j, pre) in pres.into_iter().enumerate() {
            let b = biases[j].clone().retaped::<OwnedTape<f64, Cpu>>();
            let mut z = pre.try_add(Tags::broadcast(b, &shape).unwrap()).unwrap();
            for (c, a) in cascades[j].iter().zip(&acts) {
                let c =
                    Tags::broadcast(c.clone().retaped::<OwnedTape<f64, Cpu>>(), &shape).unwrap();
                z = z.try_add(c.try_mul(a.with_empty_tape()).unwrap()).unwrap();
            }
            let a = match activation {
                Activation::Sigmoid => z.sigmoid(),
                Activation::Tanh => z.tanh(),
                Activation::Relu => z.relu(),
            };
            acts.push(a);
        }
        let mut y = y;
        for (w, a) in outputs.iter().zip(acts) {
            let w = Tags::broadcast(w.clone().retaped::<OwnedTape<f64, Cpu>>(), &shape).unwrap();
            y = y.try_add(w.try_mul(a).unwrap()).unwrap();
        }
        y
    }

    #[test]
    fn fused_sum_matches_dfdx_ops_in_value_and_every_gradient() {
        for activation in [Activation::Sigmoid, Activation::Tanh, Activation::Relu] {
            let dev = Cpu::seed_from_u64(3);
            let y: Tensor<Out, f64, Cpu> = dev.sample_normal();
            let pres: Vec<Tensor<Out, f64, Cpu>> = (0..3).map(|_| dev.sample_normal()).collect();
            let outputs: Vec<Vec3> = (0..3).map(|_| dev.sample_normal()).collect();
            let biases: Vec<Vec3> = (0..3).map(|_| dev.sample_normal()).collect();
            let cascades: Vec<Vec<Vec3>> = (0..3)
                .map(|j| (0..j).map(|_| dev.sample_normal()).collect())
                .collect();
            let target: Tensor<Out, f64, Cpu> = dev.sample_normal();
            let scratch = Arc::default();
            // one tape for the whole step, as in the gradient mode
            let run = |fused: bool| {
                let taped_y = y.clone().put_tape(OwnedTape::<f64, Cpu>::default());
                let taped_pres: Vec<_> = pres
                    .iter()
                    .map(|p| p.clone().put_tape(OwnedTape::default()))
                    .collect();
                let out = if fused {
                    let terms = taped_pres
                        .into_iter()
                        .enumerate()
                        .map(|(j, pre)| Term {
                            pre: Pre::Module(pre),
                            bias: Some(&biases[j]),
                            cascade: &cascades[j],
                            output: &outputs[j],
                        })
                        .collect();
                    dendrite_sum::<Tags, _, _, _, _, _>(
                        taped_y, terms, None, activation, false, &scratch,
                    )
                    .unwrap()
                    .0
                } else {
                    reference(
                        taped_y, taped_pres, &biases, &cascades, &outputs, activation,
                    )
                };
                let value = out.retaped::<NoneTape>().as_vec();
                let loss = (out - target.clone()).square().sum::<(), _>();
                let grads = loss.backward();
                let mut all = vec![grads.get(&y).as_vec()];

                all.extend(pres.iter().map(|p| grads.get(p).as_vec()));
                all.extend(outputs.iter().map(|w| grads.get(w).as_vec()));
                all.extend(cascades.iter().flatten().map(|c| grads.get(c).as_vec()));
                all.extend(biases.iter().map(|b| grads.get(b).as_vec()));
                (value, all)
            };
            let (value, grads) = run(true);
            let (want_value, want_grads) = run(false);
            let close = |a: &[f64], b: &[f64]| {
                a.iter()
                    .zip(b)
                    .all(|(a, b)| (a - b).abs() <= 1e-12 * (1.0 + b.abs()))
            };
            assert!(close(&value, &want_value), "{activation:?}: forward values");
            assert_eq!(grads.len(), 1 + 3 + 3 + 3 + 3);
            for (k, (g, want)) in grads.iter().zip(&want_grads).enumerate() {
                assert!(
                    close(g, want),
                    "{activation:?}: gradient {k}: {g:?} vs {want:?}"
                );
            }
        }
    }

    /// One taped step of the fused sum on `scratch`: the output and the gradients of `y`
    /// and of every pre-activation.
    fn step(
        scratch: &Arc<Scratch<f64>>,
        y: &Tensor<Out, f64, Cpu>,
        pres: &[Tensor<Out, f64, Cpu>],
    ) -> Vec<Vec<f64>> {
        let dev = y.device().clone();
        let outputs: Vec<Vec3> = (1..=pres.len())
            .map(|j| dev.tensor([0.5 * j as f64, -1.0, 2.0]))
            .collect();
        let cascades: Vec<Vec<Vec3>> = (0..pres.len())
            .map(|j| vec![dev.tensor([0.3, 0.2, -0.1]); j])
            .collect();
        let terms = pres
            .iter()
            .enumerate()
            .map(|(j, p)| Term {
                pre: Pre::Module(p.clone().put_tape(OwnedTape::<f64, Cpu>::default())),
                bias: None,
                cascade: &cascades[j],
                output: &outputs[j],
            })
            .collect();
        let taped_y = y.clone().put_tape(OwnedTape::<f64, Cpu>::default());
        let (out, _) = dendrite_sum::<Tags, _, _, _, _, _>(
            taped_y,
            terms,
            None,
            Activation::Sigmoid,
            false,
            scratch,
        )
        .unwrap();
        let value = out.retaped::<NoneTape>().as_vec();
        let grads = out.square().sum::<(), _>().backward();
        let mut all = vec![value, grads.get(y).as_vec()];
        all.extend(pres.iter().map(|p| grads.get(p).as_vec()));
        all
    }

    #[test]
    fn scratch_vectors_are_reused_and_leave_no_trace() {
        let dev = Cpu::seed_from_u64(5);
        let scratch = Arc::default();
        let draw = || -> (Tensor<Out, f64, Cpu>, Vec<Tensor<Out, f64, Cpu>>) {
            (
                dev.sample_normal(),
                (0..3).map(|_| dev.sample_normal()).collect(),
            )
        };
        let (y1, pres1) = draw();
        step(&scratch, &y1, &pres1);
        // the backward pass gave back one vector per dendrite
        assert_eq!(scratch.free.lock().unwrap().len(), 3);
        let (y2, pres2) = draw();
        let reused = step(&scratch, &y2, &pres2);
        assert_eq!(
            scratch.free.lock().unwrap().len(),
            3,
            "the pool does not grow"
        );
        // a second step on reused vectors equals one on fresh vectors, bit for bit
        assert_eq!(reused, step(&Arc::default(), &y2, &pres2));
    }

    #[test]
    fn affine_terms_match_the_product_taken_by_dfdx() {
        // a (Batch, Neurons) layer of 3 neurons on 4 inputs, 5 rows; terms that train (one
        // tape) and frozen ones (no tape on the terms), each with an affine product computed
        // in the sum or by dfdx before it.
        type Y = Tensor<Rank2<5, 3>, f64, Cpu>;
        let dev = Cpu::seed_from_u64(8);
        let x: Tensor<Rank2<5, 4>, f64, Cpu> = dev.sample_normal();
        let y: Y = dev.sample_normal();
        let weights: Vec<Tensor<Rank2<3, 4>, f64, Cpu>> =
            (0..3).map(|_| dev.sample_normal()).collect();
        let biases: Vec<Vec3> = (0..3).map(|_| dev.sample_normal()).collect();
        let outputs: Vec<Vec3> = (0..3).map(|_| dev.sample_normal()).collect();
        let cascades: Vec<Vec<Vec3>> = (0..3)
            .map(|j| (0..j).map(|_| dev.sample_normal()).collect())
            .collect();
        let target: Y = dev.sample_normal();
        let scratch = Arc::default();
        // the fused sum with a sigmoid, on `y`'s tape and terms on tape `P`
        fn sum<P: Tape<f64, Cpu>>(
            y: Tensor<Rank2<5, 3>, f64, Cpu, OwnedTape<f64, Cpu>>,
            terms: Vec<Term<'_, Rank2<5, 3>, Const<3>, f64, Cpu, P>>,
            input: Option<Tensor<(usize, usize), f64, Cpu, P>>,
            scratch: &Arc<Scratch<f64>>,
        ) -> Tensor<Rank2<5, 3>, f64, Cpu, OwnedTape<f64, Cpu>>
        where
            OwnedTape<f64, Cpu>: Merge<P>,
        {
            dendrite_sum::<(Batch, Neurons), _, _, _, _, _>(
                y,
                terms,
                input,
                Activation::Sigmoid,
                false,
                scratch,
            )
            .unwrap()
            .0
        }
        let run = |in_sum: bool, trains: bool| {
            let tape = OwnedTape::<f64, Cpu>::default;
            let taped_y = y.clone().put_tape(tape());
            let matrix = |t: Tensor<Rank2<5, 4>, f64, Cpu, OwnedTape<f64, Cpu>>| {
                t.reshape_like(&(5usize, 4usize))
            };
            let weight =
                |w: &Tensor<Rank2<3, 4>, f64, Cpu>| w.clone().reshape_like(&(3usize, 4usize));
            let terms =
                |pre: &mut dyn FnMut(usize) -> Pre<Rank2<5, 3>, f64, Cpu, OwnedTape<f64, Cpu>>| {
                    (0..3)
                        .map(|j| Term {
                            pre: pre(j),
                            bias: Some(&biases[j]),
                            cascade: &cascades[j],
                            output: &outputs[j],
                        })
                        .collect::<Vec<_>>()
                };
            let out = if trains {
                let (terms, input) = if in_sum {
                    let terms = terms(&mut |j| Pre::Affine(weight(&weights[j])));
                    (terms, Some(matrix(x.clone().put_tape(tape()))))
                } else {
                    let product = |j: usize| {
                        x.clone()
                            .put_tape(tape())
                            .matmul(weights[j].clone().permute())
                    };
                    (terms(&mut |j| Pre::Module(product(j))), None)
                };
                sum(taped_y, terms, input, &scratch)
            } else {
                let terms: Vec<Term<'_, _, _, _, _, NoneTape>> = (0..3)
                    .map(|j| Term {
                        pre: if in_sum {
                            Pre::Affine(weight(&weights[j]))
                        } else {
                            Pre::Module(x.clone().matmul(weights[j].clone().permute()))
                        },
                        bias: Some(&biases[j]),
                        cascade: &cascades[j],
                        output: &outputs[j],
                    })
                    .collect();
                let input = in_sum.then(|| x.clone().reshape_like(&(5usize, 4usize)));
                sum(taped_y, terms, input, &scratch)
            };
            let value = out.retaped::<NoneTape>().as_vec();
            let grads = (out - target.clone()).square().sum::<(), _>().backward();
            let mut all = vec![value, grads.get(&y).as_vec()];
            if trains {
                all.push(grads.get(&x).as_vec());
                all.extend(weights.iter().map(|w| grads.get(w).as_vec()));
                all.extend(biases.iter().map(|b| grads.get(b).as_vec()));
                all.extend(cascades.iter().flatten().map(|c| grads.get(c).as_vec()));
            }
            all.extend(outputs.iter().map(|w| grads.get(w).as_vec()));
            all
        };
        for trains in [true, false] {
            let (got, want) = (run(true, trains), run(false, trains));
            assert_eq!(got.len(), want.len());
            for (k, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(g.len(), w.len());
                for (a, b) in g.iter().zip(w) {
                    assert!(
                        (a - b).abs() <= 1e-12 * (1.0 + b.abs()),
                        "trains {trains}, entry {k}: {g:?} vs {w:?}"
                    );
                }
            }
        }
    }
}
