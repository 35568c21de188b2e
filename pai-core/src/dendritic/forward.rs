//! Forward passes of [`Dendritic`]: inference (`Module`, no tape) and training (`ModuleMut`,
//! any tape), in both learning modes, for any [`Route`] (the plain one-tensor case is
//! [`Plain`](crate::processor::Plain)).

use dfdx::nn::{Module, ModuleMut};
use dfdx::shapes::{HasShape, Shape};
use std::any::TypeId;

use dfdx::tensor::{HasErr, NoneTape, OwnedTape, PutTape, SplitTape, Tape, Tensor};
use dfdx::tensor_ops::{Backward, Device, PermuteTo, ReshapeTo, SumTo, TryAdd, TryMatMul, TryMul};

use super::fused::{dendrite_sum, on_host, Pre, Term};
use super::gemm::gemm_runs;
use super::{
    lock, Activation, Affine, Convertible, Dendrite, DendriteLearning, Dendritic, Training,
};
use crate::axis::NeuronAxis;
use crate::correlation::CorrelationConfig;
use crate::processor::{Inputs, Plain, Processor, Route};
use crate::Float;

impl<M, Tags, P, X, So, E, D, T> Module<X> for Dendritic<M, Tags, P>
where
    E: Float,
    D: Device<E>,
    So: Shape,
    T: Tape<E, D>,
    X: Inputs<E, D>,
    X::Detached: Clone,
    M: Convertible<Dtype = E, Device = D>
        + Module<X, Output = <P as Route<M, X, E, D>>::Output, Error = D::Err>
        + Module<X::Detached, Output = <P as Route<M, X::Detached, E, D>>::Output, Error = D::Err>,
    P: Processor
        + Route<M, X, E, D, Main = Tensor<So, E, D, T>>
        + Route<M, X::Detached, E, D, Main = Tensor<So, E, D, NoneTape>>,
    Tags: NeuronAxis<So, Neurons = M::Neurons>,
{
    type Output = <P as Route<M, X, E, D>>::Joined;
    type Error = D::Err;

    /// Inference: the neurons plus every dendrite (and, in the gradient mode's dendrite
    /// phase, the candidate, which is part of the output there). Nothing trains and no
    /// candidate statistics move; with a tape on the input, the gradient flows through the
    /// neurons (and the output weights) only, as through any frozen layer.
    fn try_forward(&self, x: X) -> Result<Self::Output, D::Err> {
        let detached = x.detached();
        let chain = self.output_chain();
        let matrix = self.affine_input::<X, So, NoneTape>(&x, chain.first().copied())?;
        let (y, rest) = <P as Route<M, X, E, D>>::split(self.neurons.try_forward(x)?);
        let (y, _) = self.frozen_sum::<X::Detached, So, T>(y, &chain, &detached, matrix, false)?;
        Ok(<P as Route<M, X, E, D>>::join(y, rest))
    }
}

impl<M, Tags, P, X, So, E, D, T> ModuleMut<X> for Dendritic<M, Tags, P>
where
    E: Float,
    D: Device<E>,
    So: Shape,
    T: Tape<E, D> + 'static,
    X: Inputs<E, D>,
    X::Detached: Clone,
    M: Convertible<Dtype = E, Device = D>
        + ModuleMut<X, Output = <P as Route<M, X, E, D>>::Output, Error = D::Err>
        + Module<X, Output = <P as Route<M, X, E, D>>::Output, Error = D::Err>
        + Module<X::Detached, Output = <P as Route<M, X::Detached, E, D>>::Output, Error = D::Err>
        + ModuleMut<
            X::Taped<OwnedTape<E, D>>,
            Output = <P as Route<M, X::Taped<OwnedTape<E, D>>, E, D>>::Output,
            Error = D::Err,
        >,
    P: Processor
        + Route<M, X, E, D, Main = Tensor<So, E, D, T>>
        + Route<M, X::Detached, E, D, Main = Tensor<So, E, D, NoneTape>>
        + Route<M, X::Taped<OwnedTape<E, D>>, E, D, Main = Tensor<So, E, D, OwnedTape<E, D>>>,
    Tags: NeuronAxis<So, Neurons = M::Neurons>,
{
    type Output = <P as Route<M, X, E, D>>::Joined;
    type Error = D::Err;

    /// Training forward pass. The neurons run in training mode in the neuron phase and in
    /// inference mode (frozen) in the dendrite phase.
    fn try_forward_mut(&mut self, x: X) -> Result<Self::Output, D::Err> {
        let neuron_phase = self.candidate.is_none();
        match self.config.learning {
            DendriteLearning::Correlation => {
                let detached = x.detached();
                let matrix = self.affine_input::<X, So, NoneTape>(&x, self.dendrites.first())?;
                let candidate_input =
                    (T::OWNS_TAPE && !neuron_phase).then(|| x.taped::<OwnedTape<E, D>>());
                let out = if neuron_phase {
                    self.neurons.try_forward_mut(x)?
                } else {
                    self.neurons.try_forward(x)?
                };
                let (y, rest) = <P as Route<M, X, E, D>>::split(out);
                let y = self.correlation_dendrites(y, detached, matrix, candidate_input)?;
                Ok(<P as Route<M, X, E, D>>::join(y, rest))
            }
            DendriteLearning::Gradient => {
                let chain = self.output_chain();
                let matrix = self.affine_input::<X, So, T>(&x, chain.first().copied())?;
                let inputs: Vec<X> = (0..=self.dendrites.len()).map(|_| x.fresh()).collect();
                let out = if neuron_phase {
                    self.neurons.try_forward_mut(x)?
                } else {
                    self.neurons.try_forward(x)?
                };
                let (y, rest) = <P as Route<M, X, E, D>>::split(out);
                let y = self.gradient_dendrites(y, inputs, matrix)?;
                Ok(<P as Route<M, X, E, D>>::join(y, rest))
            }
        }
    }
}

impl<M, Tags, P, E, D> Dendritic<M, Tags, P>
where
    E: Float,
    D: Device<E>,
    M: Convertible<Dtype = E, Device = D>,
    Tags: 'static,
    P: Processor,
{
    /// Dendrites whose activations are added to the output, in cascade order.
    fn output_chain(&self) -> Vec<&Dendrite<M>> {
        let candidate = match (self.config.learning, &self.candidate) {
            (DendriteLearning::Gradient, Some(c)) => Some(&c.dendrite),
            _ => None,
        };
        self.dendrites.iter().chain(candidate).collect()
    }

    /// `σ(pre + Σⱼ cⱼ ⊙ aⱼ)` for dendrite `d` given the activations of the dendrites before it.
    fn dendrite_activation<So, T>(
        &self,
        pre: Tensor<So, E, D, T>,
        d: &Dendrite<M>,
        earlier: &[Tensor<So, E, D, impl Tape<E, D>>],
        shape: &So,
    ) -> Result<Tensor<So, E, D, T>, D::Err>
    where
        So: Shape,
        T: Tape<E, D>,
        Tags: NeuronAxis<So, Neurons = M::Neurons>,
    {
        let mut pre = pre;
        for (c, a) in d.cascade.iter().zip(earlier) {
            let term =
                Tags::broadcast(c.clone().retaped::<T>(), shape)?.try_mul(a.retaped::<T>())?;
            pre = pre.try_add(term)?;
        }
        match self.config.activation {
            Activation::Sigmoid => pre.try_sigmoid(),
            Activation::Tanh => pre.try_tanh(),
            Activation::Relu => pre.try_relu(),
        }
    }

    /// The input as a matrix on tape `T` where dendrites may take the affine path (see
    /// [`Convertible::affine`]): on the CPU, for an affine layer without a processor whose
    /// neurons are its output's last axis, with dendrites to run (`first` of them; every
    /// dendrite is a copy of the same layer, and [`affine_products`] and [`affine_terms`] check
    /// each). `None` elsewhere, without touching the input (a non-contiguous one would be
    /// copied for nothing).
    fn affine_input<X, So, T>(
        &self,
        x: &X,
        first: Option<&Dendrite<M>>,
    ) -> Result<Option<Matrix<E, D, T>>, D::Err>
    where
        X: Inputs<E, D>,
        So: Shape,
        T: Tape<E, D>,
        Tags: NeuronAxis<So>,
    {
        let applies = on_host::<E, D>()
            && TypeId::of::<P>() == TypeId::of::<Plain>()
            && Tags::AXIS + 1 == So::NUM_DIMS
            && match first {
                Some(d) => d.module.affine()?.is_some(),
                None => false,
            };
        match applies {
            true => x.matrix::<T>(),
            false => Ok(None),
        }
    }

    /// `y` plus the terms of the frozen dendrites `chain` (in cascade order) on the detached
    /// input, and, when `keep_acts`, their activations (a candidate's cascade inputs).
    /// `matrix` is the input for the affine path ([`Self::affine_input`]).
    #[allow(clippy::type_complexity)]
    fn frozen_sum<X, So, T>(
        &self,
        y: Tensor<So, E, D, T>,
        chain: &[&Dendrite<M>],
        detached: &X,
        matrix: Option<Matrix<E, D>>,
        keep_acts: bool,
    ) -> Result<(Tensor<So, E, D, T>, Vec<Tensor<So, E, D>>), D::Err>
    where
        X: Clone,
        So: Shape,
        T: Tape<E, D>,
        M: Module<X, Output = <P as Route<M, X, E, D>>::Output, Error = D::Err>,
        P: Route<M, X, E, D, Main = Tensor<So, E, D, NoneTape>>,
        Tags: NeuronAxis<So, Neurons = M::Neurons>,
    {
        let shape = *y.shape();
        if let Some(matrix) = matrix {
            if let Some(terms) = affine_products(chain, &matrix, &shape)? {
                return dendrite_sum::<Tags, So, E, D, T, NoneTape>(
                    y,
                    terms,
                    None,
                    self.config.activation,
                    keep_acts,
                    &self.scratch,
                );
            }
        }
        let pres = self.frozen_pres::<X, So>(chain, detached)?;
        if on_host::<E, D>() {
            let terms = terms(chain, pres);
            return dendrite_sum::<Tags, So, E, D, T, NoneTape>(
                y,
                terms,
                None,
                self.config.activation,
                keep_acts,
                &self.scratch,
            );
        }
        let mut acts: Vec<Tensor<So, E, D>> = Vec::with_capacity(chain.len());
        for (d, pre) in chain.iter().zip(pres) {
            acts.push(self.dendrite_activation::<So, NoneTape>(pre, d, &acts, &shape)?);
        }
        let y = add_outputs::<M, Tags, So, T, NoneTape, E, D>(y, chain, acts.clone())?;
        Ok((y, acts))
    }

    /// Outputs of frozen dendrites' modules (`chain`, in cascade order) on the detached input,
    /// each from and to its own recurrent state.
    fn frozen_pres<X, So>(
        &self,
        chain: &[&Dendrite<M>],
        detached: &X,
    ) -> Result<Vec<Tensor<So, E, D>>, D::Err>
    where
        X: Clone,
        So: Shape,
        M: Module<X, Output = <P as Route<M, X, E, D>>::Output, Error = D::Err>,
        P: Route<M, X, E, D, Main = Tensor<So, E, D, NoneTape>>,
    {
        let accepted = self.dendrites.len();
        let mut states = lock(&self.states);
        let mut pres = Vec::with_capacity(chain.len());
        for (k, d) in chain.iter().enumerate() {
            let input = <P as Route<M, X, E, D>>::dendrite_input(
                detached.clone(),
                states.get(k, accepted),
            )?;
            let out = d.module.try_forward(input)?;
            states.set(k, accepted, <P as Route<M, X, E, D>>::state_of(&out));
            pres.push(<P as Route<M, X, E, D>>::split(out).0);
        }
        Ok(pres)
    }

    /// Correlation mode: accepted dendrites see the detached input and are frozen; in the
    /// dendrite phase the candidate runs on its own tape and learns from the captured error.
    fn correlation_dendrites<X, XO, So, T>(
        &mut self,
        y: Tensor<So, E, D, T>,
        detached: X,
        matrix: Option<Matrix<E, D>>,
        candidate_input: Option<XO>,
    ) -> Result<Tensor<So, E, D, T>, D::Err>
    where
        X: Clone,
        So: Shape,
        T: Tape<E, D> + 'static,
        M: Module<X, Output = <P as Route<M, X, E, D>>::Output, Error = D::Err>
            + ModuleMut<XO, Output = <P as Route<M, XO, E, D>>::Output, Error = D::Err>,
        P: Route<M, X, E, D, Main = Tensor<So, E, D, NoneTape>>
            + Route<M, XO, E, D, Main = Tensor<So, E, D, OwnedTape<E, D>>>,
        Tags: NeuronAxis<So, Neurons = M::Neurons>,
    {
        let shape = *y.shape();
        let chain: Vec<&Dendrite<M>> = self.dendrites.iter().collect();
        let keep_acts = candidate_input.is_some() && self.candidate.is_some();
        let (y, acts) = self.frozen_sum::<X, So, T>(y, &chain, &detached, matrix, keep_acts)?;
        let (Some(input), Some(candidate)) = (candidate_input, &mut self.candidate) else {
            return Ok(y);
        };

        // The candidate: its own tape, a detached input, cascade inputs from the dendrites.
        let state = lock(&self.states).candidate.clone();
        let input = <P as Route<M, XO, E, D>>::dendrite_input(input, state.as_ref())?;
        let out = candidate.dendrite.module.try_forward_mut(input)?;
        lock(&self.states).candidate = <P as Route<M, XO, E, D>>::state_of(&out);
        let (pre, _) = <P as Route<M, XO, E, D>>::split(out);
        let Some(candidate) = &self.candidate else {
            unreachable!("matched above")
        };
        let act = self.dendrite_activation::<So, OwnedTape<E, D>>(
            pre,
            &candidate.dendrite,
            &acts,
            &shape,
        )?;
        let training = candidate.training.clone();

        // Once the task loss's backward pass reaches this layer's output, its gradient there
        // (the neuron error) is complete: fold it into the statistics and backpropagate the
        // correlation objective through the candidate.
        let config = self.config.correlation.clone();
        let (y, mut tape) = y.split_tape();
        let handle = y.clone();
        tape.add_backward_op(move |grads| {
            grads.try_alloc_for(&handle)?;
            let error = grads.get(&handle);
            observe::<M, Tags, So, E, D>(&training, act, &error, &config)
        });
        Ok(y.put_tape(tape))
    }

    /// Gradient mode: nothing detached, every dendrite that trains runs on the task tape.
    /// `inputs` holds one tape-free copy of the input per accepted dendrite plus one;
    /// `matrix`, where the affine path applies ([`Self::affine_input`]), the input as a
    /// matrix.
    fn gradient_dendrites<X, So, T>(
        &mut self,
        y: Tensor<So, E, D, T>,
        inputs: Vec<X>,
        matrix: Option<Matrix<E, D, T>>,
    ) -> Result<Tensor<So, E, D, T>, D::Err>
    where
        So: Shape,
        T: Tape<E, D> + 'static,
        M: ModuleMut<X, Output = <P as Route<M, X, E, D>>::Output, Error = D::Err>
            + Module<X, Output = <P as Route<M, X, E, D>>::Output, Error = D::Err>,
        P: Route<M, X, E, D, Main = Tensor<So, E, D, T>>,
        Tags: NeuronAxis<So, Neurons = M::Neurons>,
    {
        let shape = *y.shape();
        if let Some(matrix) = matrix.filter(|_| gemm_runs::<E>()) {
            let chain = self.output_chain();
            if let Some(terms) = affine_terms(&chain)? {
                let activation = self.config.activation;
                return Ok(dendrite_sum::<Tags, So, E, D, T, T>(
                    y,
                    terms,
                    Some(matrix),
                    activation,
                    false,
                    &self.scratch,
                )?
                .0);
            }
        }
        let neuron_phase = self.candidate.is_none();
        let accepted = self.dendrites.len();
        let fused = on_host::<E, D>();
        let mut pres: Vec<Tensor<So, E, D, T>> = Vec::with_capacity(accepted + 1);
        let mut acts: Vec<Tensor<So, E, D, T>> = Vec::with_capacity(accepted + 1);
        // accepted dendrites train in the neuron phase; the candidate in the dendrite phase.
        for (k, input) in inputs.into_iter().enumerate() {
            let trains = k == accepted || neuron_phase;
            let state = lock(&self.states).get(k, accepted).cloned();
            let input = <P as Route<M, X, E, D>>::dendrite_input(input, state.as_ref())?;
            let module = if k < accepted {
                &mut self.dendrites[k].module
            } else if let Some(c) = &mut self.candidate {
                &mut c.dendrite.module
            } else {
                break;
            };
            let out = if trains {
                module.try_forward_mut(input)?
            } else {
                module.try_forward(input)?
            };
            lock(&self.states).set(k, accepted, <P as Route<M, X, E, D>>::state_of(&out));
            let (pre, _) = <P as Route<M, X, E, D>>::split(out);
            if fused {
                pres.push(pre);
                continue;
            }
            let d: &Dendrite<M> = if k < accepted {
                &self.dendrites[k]
            } else {
                &self
                    .candidate
                    .as_ref()
                    .expect("candidate checked above")
                    .dendrite
            };
            let act = self.dendrite_activation::<So, T>(pre, d, &acts, &shape)?;
            acts.push(act);
        }
        let chain = self.output_chain();
        if fused {
            let terms = terms(&chain, pres);
            return Ok(dendrite_sum::<Tags, So, E, D, T, T>(
                y,
                terms,
                None,
                self.config.activation,
                false,
                &self.scratch,
            )?
            .0);
        }
        add_outputs::<M, Tags, So, T, T, E, D>(y, &chain, acts)
    }
}

/// The input of the affine path: `(rows, features)`, on tape `T`.
type Matrix<E, D, T = NoneTape> = Tensor<(usize, usize), E, D, T>;

type AffineTerms<'a, M, So, T> = Result<
    Option<
        Vec<
            Term<
                'a,
                So,
                <M as Convertible>::Neurons,
                <M as Convertible>::Dtype,
                <M as Convertible>::Device,
                T,
            >,
        >,
    >,
    <<M as Convertible>::Device as HasErr>::Err,
>;

/// Terms of frozen dendrites `chain` by the affine path: `matrix · Wᵀ` per dendrite (dfdx's
/// product, without a tape: nothing needs its gradient), laid out as the layer's output
/// `shape`, with the bias left to the fused sum. `None` when a dendrite's module is not affine.
fn affine_products<'a, M, So>(
    chain: &[&'a Dendrite<M>],
    matrix: &Matrix<M::Dtype, M::Device>,
    shape: &So,
) -> AffineTerms<'a, M, So, NoneTape>
where
    M: Convertible,
    So: Shape,
{
    let mut terms = Vec::with_capacity(chain.len());
    for d in chain {
        let Some(Affine { weight, bias }) = d.module.affine()? else {
            return Ok(None);
        };
        let pre = matrix
            .clone()
            .try_matmul(weight.try_permute()?)?
            .try_reshape_like(shape)?;
        terms.push(Term {
            pre: Pre::Module(pre),
            bias: Some(bias),
            cascade: &d.cascade,
            output: &d.output,
        });
    }
    Ok(Some(terms))
}

/// Terms of training dendrites `chain` by the affine path: the fused sum computes each
/// `x · Wᵀ` from the input matrix and adds the bias, and with tapes writes the gradients of
/// `W`, `b` and `x` itself, so that the products allocate no output and no gradient buffer.
/// `None` when a dendrite's module is not affine.
fn affine_terms<'a, M, So, T>(chain: &[&'a Dendrite<M>]) -> AffineTerms<'a, M, So, T>
where
    M: Convertible,
    So: Shape,
    T: Tape<M::Dtype, M::Device>,
{
    let mut terms = Vec::with_capacity(chain.len());
    for d in chain {
        let Some(Affine { weight, bias }) = d.module.affine()? else {
            return Ok(None);
        };
        terms.push(Term {
            pre: Pre::Affine(weight),
            bias: Some(bias),
            cascade: &d.cascade,
            output: &d.output,
        });
    }
    Ok(Some(terms))
}

/// The fused sum's terms: each dendrite of `chain` with its module's output.
fn terms<'a, M, So, P>(
    chain: &[&'a Dendrite<M>],
    pres: Vec<Tensor<So, M::Dtype, M::Device, P>>,
) -> Vec<Term<'a, So, M::Neurons, M::Dtype, M::Device, P>>
where
    M: Convertible,
    M::Dtype: Float,
    M::Device: Device<M::Dtype>,
    So: Shape,
{
    chain
        .iter()
        .zip(pres)
        .map(|(d, pre)| Term {
            pre: Pre::Module(pre),
            bias: None,
            cascade: &d.cascade,
            output: &d.output,
        })
        .collect()
}

/// `y + Σᵢ wᵢ ⊙ aᵢ`, the output weights on `y`'s tape.
fn add_outputs<M, Tags, So, T, A, E, D>(
    y: Tensor<So, E, D, T>,
    chain: &[&Dendrite<M>],
    acts: Vec<Tensor<So, E, D, A>>,
) -> Result<Tensor<So, E, D, T>, D::Err>
where
    E: Float,
    D: Device<E>,
    M: Convertible<Dtype = E, Device = D>,
    So: Shape,
    T: Tape<E, D> + dfdx::tensor::Merge<A>,
    A: Tape<E, D>,
    Tags: NeuronAxis<So, Neurons = M::Neurons>,
{
    let shape = *y.shape();
    let mut y = y;
    for (d, a) in chain.iter().zip(acts) {
        let term = Tags::broadcast(d.output.clone().retaped::<T>(), &shape)?.try_mul(a)?;
        y = y.try_add(term)?;
    }
    Ok(y)
}

/// The candidate's backward hook: statistics, then the correlation objective's gradients.
fn observe<M, Tags, So, E, D>(
    training: &std::sync::Mutex<Training<M>>,
    act: Tensor<So, E, D, OwnedTape<E, D>>,
    error: &Tensor<So, E, D>,
    config: &CorrelationConfig,
) -> Result<(), D::Err>
where
    E: Float,
    D: Device<E>,
    M: Convertible<Dtype = E, Device = D>,
    So: Shape,
    Tags: NeuronAxis<So, Neurons = M::Neurons>,
{
    if error.shape().num_elements() == 0 {
        // an empty batch (sequences with no steps): nothing to learn from or to count
        return Ok(());
    }
    let value = act.retaped::<NoneTape>();
    let mut training = lock(training);
    match training.stats.update::<So, Tags>(&value, error, config)? {
        None => training.non_finite = true,
        Some(update) => {
            training.improved |= update.improved;
            let objective = act.try_mul(update.activation_grad)?.try_sum()?;
            training.grads = Some(objective.try_backward()?);
        }
    }
    Ok(())
}
