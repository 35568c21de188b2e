//! The dendrite sum from dfdx ops: the path on devices other than the CPU, and the reference
//! implementation [`super::host`] is tested against. Each step of the formula is one dfdx op
//! with its own backward, so its gradients are dfdx's.

use dfdx::shapes::{HasShape, Shape};
use dfdx::tensor::{Merge, NoneTape, PutTape, SplitTape, Tape, Tensor};
use dfdx::tensor_ops::{Device, PermuteTo, ReshapeTo, TryAdd, TryMatMul, TryMul};

use super::{Matrix, Pre, Term};
use crate::axis::{NeuronAxis, PerNeuron};
use crate::dendritic::config::Activation;
use crate::float::Float;

/// [`super::dendrite_sum`] by dfdx ops.
pub(super) fn dendrite_sum<Tags, So, E, D, T, P>(
    y: Tensor<So, E, D, T>,
    terms: Vec<Term<'_, So, Tags::Neurons, E, D, P>>,
    input: Option<Matrix<E, D, P>>,
    activation: Activation,
    keep_acts: bool,
) -> Result<(Tensor<So, E, D, T>, Vec<Tensor<So, E, D>>), D::Err>
where
    Tags: NeuronAxis<So>,
    So: Shape,
    E: Float,
    D: Device<E>,
    T: Tape<E, D> + Merge<P>,
    P: Tape<E, D>,
{
    let shape = *y.shape();
    // the input's own tape joins the output's once; each affine product reads it untaped
    let (input, input_tape) = match input {
        Some(x) => {
            let (x, tape) = x.split_tape();
            (Some(x), Some(tape))
        }
        None => (None, None),
    };
    let mut acts: Vec<Tensor<So, E, D, P>> = Vec::with_capacity(terms.len());
    let mut outputs = Vec::with_capacity(terms.len());
    for term in terms {
        let z = match term.pre {
            Pre::Module(pre) => pre,
            Pre::Affine(weight) => {
                let x = input
                    .as_ref()
                    .expect("affine terms come with the input matrix");
                x.retaped::<P>()
                    .try_matmul(weight.retaped::<P>().try_permute()?)?
                    .try_reshape_like(&shape)?
            }
        };
        acts.push(activation_of::<Tags, So, E, D, P, P>(
            z,
            term.bias,
            term.cascade,
            &acts,
            activation,
        )?);
        outputs.push(term.output);
    }
    let kept = match keep_acts {
        true => acts.iter().map(Tensor::retaped::<NoneTape>).collect(),
        false => Vec::new(),
    };
    let mut y = y;
    if let Some(tape) = input_tape {
        let (value, y_tape) = y.split_tape();
        y = value.put_tape(y_tape.merge(tape));
    }
    for (w, a) in outputs.into_iter().zip(acts) {
        y = y.try_add(Tags::broadcast(w.retaped::<T>(), &shape)?.try_mul(a)?)?;
    }
    Ok((y, kept))
}

/// `σ(z + b + Σᵢ cᵢ ⊙ aᵢ)`: one dendrite's activation on `z`'s tape, given its bias, its
/// cascade weights and the activations `earlier` of the dendrites before it (read without
/// their tapes). The candidate's activation in the correlation mode is taken here too.
///
/// # Errors
/// Backend errors.
pub(crate) fn activation_of<Tags, So, E, D, P, A>(
    z: Tensor<So, E, D, P>,
    bias: Option<&PerNeuron<Tags::Neurons, E, D>>,
    cascade: &[PerNeuron<Tags::Neurons, E, D>],
    earlier: &[Tensor<So, E, D, A>],
    activation: Activation,
) -> Result<Tensor<So, E, D, P>, D::Err>
where
    Tags: NeuronAxis<So>,
    So: Shape,
    E: Float,
    D: Device<E>,
    P: Tape<E, D>,
    A: Tape<E, D>,
{
    let shape = *z.shape();
    let mut z = z;
    if let Some(bias) = bias {
        z = z.try_add(Tags::broadcast(bias.retaped::<P>(), &shape)?)?;
    }
    for (c, a) in cascade.iter().zip(earlier) {
        z = z.try_add(Tags::broadcast(c.retaped::<P>(), &shape)?.try_mul(a.retaped::<P>())?)?;
    }
    squash(z, activation)
}

fn squash<So: Shape, E: Float, D: Device<E>, P: Tape<E, D>>(
    z: Tensor<So, E, D, P>,
    activation: Activation,
) -> Result<Tensor<So, E, D, P>, D::Err> {
    match activation {
        Activation::Sigmoid => z.try_sigmoid(),
        Activation::Tanh => z.try_tanh(),
        Activation::Relu => z.try_relu(),
    }
}
