//! The dendrite sum in one pass on the CPU: the fast path of [`super::dendrite_sum`].
//!
//! Per dendrite the sum is one or more broadcast multiplies, adds and a squash. dfdx 0.13 runs
//! each as its own CPU kernel that allocates its output and walks every operand through a
//! strided index, forward and backward; on the 64-128-10 benchmark that chain cost more than
//! the dendrite's own matrix product. On the CPU the whole chain runs here as one forward loop
//! ([`Pass::add_term`] per dendrite) and one backward op ([`Pass::backward`]); on other
//! devices [`super::ops`] builds it from dfdx ops (the reference this kernel is tested
//! against).
//!
//! Every operand is made contiguous first (`reshape_like` to its own shape is free when it
//! already is), so host copies and gradient buffers are in logical order.

use std::sync::Arc;

use rayon::prelude::*;

use dfdx::shapes::{ConstDim, HasShape, Shape};
use dfdx::tensor::{Gradients, Merge, PutTape, SplitTape, Tape, Tensor};
use dfdx::tensor_ops::{Device, ReshapeTo};

use super::{Pre, Term};
use crate::axis::{Layout, NeuronAxis, PerNeuron};
use crate::dendritic::config::Activation;
use crate::float::Float;
use crate::host::{
    add_into, grad_mut, lend_grad, matmul, on_host, put_backward, Dst, Operand, Scratch,
};

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
    // The terms are summed apart and added to `y` in place: the output keeps `y`'s id, so its
    // gradient is `y`'s, with no new gradient buffer. `y`'s buffer is its own (backward ops
    // keep ghosts, `host::put_backward`), so the add writes it where it is, without a copy.
    let (mut y, mut tape) = y.try_reshape_like(&shape)?.split_tape();
    let input = match input {
        Some(x) => {
            let (x, x_tape) = x.split_tape();
            tape = tape.merge(x_tape);
            Some(Input::of(x, scratch)?)
        }
        None => None,
    };
    let mut pass = Pass::new(
        Layout::of::<So, Tags>(&shape),
        activation,
        P::OWNS_TAPE && T::OWNS_TAPE,
        input,
        scratch,
        terms.len(),
    );
    let mut out = vec![E::default(); pass.layout.len];
    for term in terms {
        if let Some(pre_tape) = pass.add_term(term, &mut out)? {
            tape = tape.merge(pre_tape);
        }
    }
    let dev = y.device().clone();
    y.try_axpy(1.0, &dev.try_tensor_from_vec(out, shape)?, 1.0)?;
    let kept = match keep_acts {
        true => pass
            .acts
            .iter()
            .map(|a| dev.try_tensor_from_vec(a.clone(), shape))
            .collect::<Result<Vec<_>, _>>()?,
        false => Vec::new(),
    };
    if !pass.trains {
        // nothing but `y` and the output weights needs the input from here on
        if let Some(x) = pass.input.take() {
            pass.scratch.give([x.host]);
        }
    }
    if !T::OWNS_TAPE {
        pass.scratch.give(std::mem::take(&mut pass.acts));
        return Ok((y.put_tape(tape), kept));
    }
    let y = put_backward(y, tape, move |grads, g| pass.backward(grads, g, &dev));
    Ok((y, kept))
}

/// One call of the sum: what its forward pass computed and its backward pass needs.
struct Pass<So: Shape, N: ConstDim, E: Float, D: Device<E>> {
    layout: Layout,
    activation: Activation,
    /// The terms train (tapes on both sides): their gradients are written too.
    trains: bool,
    input: Option<Input<E, D>>,
    scratch: Arc<Scratch<E>>,
    /// `aⱼ`, in cascade order.
    acts: Vec<Vec<E>>,
    /// The pre-activations, kept only when the terms train.
    pres: Vec<Saved<So, E, D>>,
    /// Per term: its cascade weights, as tensors and on the host.
    cascades: Vec<(Vec<PerNeuron<N, E, D>>, Vec<Vec<E>>)>,
    /// Per term: its output weights, as a tensor and on the host.
    outputs: Vec<(PerNeuron<N, E, D>, Vec<E>)>,
    /// Per term, when the terms train: its bias.
    biases: Vec<Option<PerNeuron<N, E, D>>>,
}

impl<So: Shape, N: ConstDim, E: Float, D: Device<E>> Pass<So, N, E, D> {
    fn new(
        layout: Layout,
        activation: Activation,
        trains: bool,
        input: Option<Input<E, D>>,
        scratch: &Arc<Scratch<E>>,
        terms: usize,
    ) -> Self {
        Self {
            layout,
            activation,
            trains,
            input,
            scratch: Arc::clone(scratch),
            acts: Vec::with_capacity(terms),
            pres: Vec::with_capacity(terms),
            cascades: Vec::with_capacity(terms),
            outputs: Vec::with_capacity(terms),
            biases: Vec::with_capacity(terms),
        }
    }

    /// Adds term `j`'s `wⱼ ⊙ aⱼ` to `out`, keeping what the backward pass needs; returns the
    /// tape of a module pre-activation, to be merged into the output's.
    fn add_term<P: Tape<E, D>>(
        &mut self,
        term: Term<'_, So, N, E, D, P>,
        out: &mut [E],
    ) -> Result<Option<P>, D::Err> {
        let (saved, mut z, pre_tape) = match term.pre {
            Pre::Module(pre) => {
                let (pre, z) = self.scratch.host(pre)?;
                let (pre, pre_tape) = pre.split_tape();
                (Saved::Module(pre), z, Some(pre_tape))
            }
            Pre::Affine(weight) => {
                let (saved, z) = self.affine_product(weight)?;
                (saved, z, None)
            }
        };
        if self.trains {
            self.biases.push(term.bias.cloned());
        }
        let bias = term.bias.map(per_neuron);
        let cascade: Vec<Vec<E>> = term.cascade.iter().map(per_neuron).collect();
        let w = per_neuron(term.output);
        // zⱼ + bⱼ + Σ cⱼᵢ ⊙ aᵢ, squashed into aⱼ, and wⱼ ⊙ aⱼ added to `out`: one pass over
        // each chunk of whole blocks while it is in cache, the chunks spread over the threads
        let (layout, activation, acts) = (self.layout, self.activation, &self.acts);
        by_chunks(layout, &mut z, out, |at, z, out| {
            if let Some(b) = &bias {
                layout.add(z, b);
            }
            for (c, a) in cascade.iter().zip(acts) {
                layout.axpy(z, c, &a[at..at + z.len()]);
            }
            squash(z, activation);
            layout.axpy(out, &w, z);
        });
        self.acts.push(z);
        // kept for their gradients only: frozen, detached pre-activations are freed here
        if self.trains {
            self.pres.push(saved);
        } else if let Saved::Affine { host, .. } = saved {
            self.scratch.give([host]);
        }
        self.cascades.push((term.cascade.to_vec(), cascade));
        self.outputs.push((term.output.clone(), w));
        Ok(pre_tape)
    }

    /// `z = x · Wᵀ` for an affine term, from the host copy of the input.
    fn affine_product(
        &self,
        weight: Tensor<(usize, usize), E, D>,
    ) -> Result<(Saved<So, E, D>, Vec<E>), D::Err> {
        let x = self
            .input
            .as_ref()
            .expect("affine terms come with the input matrix");
        let (weight, w) = self.scratch.host(weight)?;
        let neurons = weight.shape().0;
        debug_assert_eq!(x.rows * neurons, self.layout.len);
        let mut z = self.scratch.zeros(self.layout.len);
        matmul(
            Dst::new(&mut z, x.rows, neurons, false),
            Operand::new(&x.host, x.rows, x.features, false),
            Operand::new(&w, neurons, x.features, true),
        );
        let saved = Saved::Affine {
            weight,
            host: w,
            grad: Vec::new(),
        };
        Ok((saved, z))
    }

    /// The backward op: from the output's gradient (which is `y`'s) to the output weights'
    /// and, when the terms train, to every term's, latest dendrite first.
    fn backward(mut self, grads: &mut Gradients<E, D>, g: &[E], dev: &D) -> Result<(), D::Err> {
        for p in &mut self.pres {
            if let Saved::Affine { grad, .. } = p {
                *grad = self.scratch.zeros(self.layout.len);
            }
        }
        for j in (0..self.acts.len()).rev() {
            self.term_backward(grads, j, g, dev)?;
        }
        let Self {
            scratch,
            acts,
            pres,
            input,
            ..
        } = self;
        scratch.give(acts);
        for p in pres {
            if let Saved::Affine { host, grad, .. } = p {
                scratch.give([host, grad]);
            }
        }
        if let Some(x) = input {
            scratch.give([x.host]);
        }
        Ok(())
    }

    /// Term `j`'s share of the backward pass, given the output's gradient `g`. dL/dzⱼ is built
    /// in preⱼ's own gradient buffer, lent out like the output's (preⱼ feeds only this sum), or
    /// for an affine term in a zeroed vector of its own: when `j` is reached it holds exactly
    /// the cascade terms of the later dendrites.
    fn term_backward(
        &mut self,
        grads: &mut Gradients<E, D>,
        j: usize,
        g: &[E],
        dev: &D,
    ) -> Result<(), D::Err> {
        let (w_tensor, w) = &self.outputs[j];
        add_into(
            grad_mut(grads, w_tensor)?,
            &self.layout.dot(&self.acts[j], g),
        );
        let Some((term, earlier)) = self.pres.get_mut(..=j).and_then(<[_]>::split_last_mut) else {
            return Ok(());
        };
        // dL/dzⱼ from the output's gradient, through the squash, into the bias and the
        // cascade weights and on to the earlier dendrites' dL/dzᵢ
        let (layout, activation, act) = (self.layout, self.activation, &self.acts[j]);
        let (bias, (c_tensors, c)) = (&self.biases[j], &self.cascades[j]);
        let acts = &self.acts;
        let through = |grads: &mut Gradients<E, D>, d: &mut [E]| -> Result<(), D::Err> {
            layout.axpy(d, w, g);
            squash_grad(d, act, activation);
            if let Some(bias) = bias {
                add_into(grad_mut(grads, bias)?, &layout.sum(d));
            }
            let cascade = c_tensors.iter().zip(c).zip(acts.iter().zip(earlier));
            for ((c_tensor, c), (a, earlier)) in cascade {
                add_into(grad_mut(grads, c_tensor)?, &layout.dot(a, d));
                match earlier {
                    Saved::Module(pre) => layout.axpy(grad_mut(grads, pre)?, c, d),
                    Saved::Affine { grad, .. } => layout.axpy(grad, c, d),
                }
            }
            Ok(())
        };
        match term {
            // built in preⱼ's own gradient buffer, lent out (preⱼ feeds only this sum)
            Saved::Module(pre) => lend_grad(grads, |g| g.get_or_alloc_mut(pre), dev, through)?,
            Saved::Affine { weight, host, grad } => {
                through(grads, grad)?;
                let x = self
                    .input
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
        Ok(())
    }
}

/// The layer input of the affine terms: its `(rows, features)` tensor and a host copy.
struct Input<E: Float, D: Device<E>> {
    tensor: Tensor<(usize, usize), E, D>,
    host: Vec<E>,
    rows: usize,
    features: usize,
}

impl<E: Float, D: Device<E>> Input<E, D> {
    fn of(x: Tensor<(usize, usize), E, D>, scratch: &Scratch<E>) -> Result<Self, D::Err> {
        let (tensor, host) = scratch.host(x)?;
        let (rows, features) = *tensor.shape();
        Ok(Self {
            tensor,
            host,
            rows,
            features,
        })
    }
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

fn squash<E: Float>(z: &mut [E], activation: Activation) {
    match activation {
        Activation::Sigmoid => E::sigmoid_in_place(z),
        Activation::Tanh => z.iter_mut().for_each(|v| *v = v.tanh()),
        Activation::Relu => z.iter_mut().for_each(|v| *v = v.max(E::zero())),
    }
}

/// Elements a chunk of [`by_chunks`] holds at least: below this, spreading the work over the
/// threads costs more than it saves (an MLP layer's few hundred elements run in one piece).
const CHUNK: usize = 1 << 14;

/// `f(at, a_chunk, b_chunk)` over `a` and `b` (of `layout`) cut at the same places into
/// chunks of whole blocks (`at`: where the chunk starts), on rayon's pool when there is more
/// than one chunk. Each element's result depends on its own chunk only, so the cut changes no
/// bit.
fn by_chunks<E: Float>(
    layout: Layout,
    a: &mut [E],
    b: &mut [E],
    f: impl Fn(usize, &mut [E], &mut [E]) + Sync,
) {
    let block = layout.block().max(1);
    let chunk = block * CHUNK.div_ceil(block);
    if a.len() <= chunk {
        return f(0, a, b);
    }
    a.par_chunks_mut(chunk)
        .zip(b.par_chunks_mut(chunk))
        .enumerate()
        .for_each(|(i, (a, b))| f(i * chunk, a, b));
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
