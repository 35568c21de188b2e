//! Forward passes of [`Dendritic`]: inference (`Module`, no tape) and training (`ModuleMut`,
//! any tape), in both learning modes, for any [`Route`] (the plain one-tensor case is
//! [`Plain`](crate::processor::Plain)).

use std::any::TypeId;

use dfdx::nn::{Module, ModuleMut};
use dfdx::shapes::{HasShape, Shape};
use dfdx::tensor::{HasErr, NoneTape, OwnedTape, Tape, Tensor};
use dfdx::tensor_ops::{Device, PermuteTo, ReshapeTo, TryMatMul};

use super::config::DendriteLearning;
use super::convertible::{Affine, Convertible};
use super::dendrite::Dendrite;
use super::sum::{activation_of, dendrite_sum, Matrix, Path, Pre, Term};
use super::Dendritic;
use crate::axis::NeuronAxis;
use crate::float::Float;
use crate::host::{gemm_runs, lock, memo, on_host, retain_freed_memory};
use crate::processor::{Inputs, Plain, Processor, Route};

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
        dendritic_pass(|| {
            let detached = x.detached();
            let chain = self.output_chain();
            let path = Self::path::<X, So, NoneTape>(&x, chain.first().copied())?;
            prepare_frozen(chain.iter().copied(), &path);
            let (y, rest) = <P as Route<M, X, E, D>>::split(self.neurons.try_forward(x)?);
            let (y, _) =
                self.frozen_sum::<X::Detached, So, T>(y, &chain, &detached, path, false)?;
            Ok(<P as Route<M, X, E, D>>::join(y, rest))
        })
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
        dendritic_pass(|| {
            let neuron_phase = self.candidate.is_none();
            // the neurons train in the neuron phase and run frozen in the dendrite phase
            let neurons = |m: &mut M, x: X| match neuron_phase {
                true => m.try_forward_mut(x),
                false => m.try_forward(x),
            };
            match self.config.learning {
                DendriteLearning::Correlation => {
                    let detached = x.detached();
                    let path = Self::path::<X, So, NoneTape>(&x, self.dendrites.first())?;
                    prepare_frozen(&self.dendrites, &path);
                    let candidate_input =
                        (T::OWNS_TAPE && !neuron_phase).then(|| x.taped::<OwnedTape<E, D>>());
                    let out = neurons(&mut self.neurons, x)?;
                    let (y, rest) = <P as Route<M, X, E, D>>::split(out);
                    let y = self.correlation_dendrites(y, detached, path, candidate_input)?;
                    Ok(<P as Route<M, X, E, D>>::join(y, rest))
                }
                DendriteLearning::Gradient => {
                    let chain = self.output_chain();
                    let path = Self::path::<X, So, T>(&x, chain.first().copied())?;
                    let inputs: Vec<X> = (0..=self.dendrites.len()).map(|_| x.fresh()).collect();
                    let out = neurons(&mut self.neurons, x)?;
                    let (y, rest) = <P as Route<M, X, E, D>>::split(out);
                    let y = self.gradient_dendrites(y, inputs, path)?;
                    Ok(<P as Route<M, X, E, D>>::join(y, rest))
                }
            }
        })
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

    /// How this call's dendrite terms are given ([`Path`]), chosen once per forward pass:
    /// [`Path::Affine`], with the input as a matrix on tape `T`, on the CPU for an affine layer
    /// without a processor whose neurons are its output's last axis, with dendrites to run
    /// (`first` of them: every dendrite is a copy of the same layer); [`Path::Modules`]
    /// elsewhere, without touching the input (a non-contiguous one would be copied for
    /// nothing).
    fn path<X, So, T>(x: &X, first: Option<&Dendrite<M>>) -> Result<Path<E, D, T>, D::Err>
    where
        X: Inputs<E, D>,
        So: Shape,
        T: Tape<E, D>,
        Tags: NeuronAxis<So>,
    {
        let affine = on_host::<E, D>()
            && gemm_runs::<E>()
            && TypeId::of::<P>() == TypeId::of::<Plain>()
            && Tags::AXIS + 1 == So::NUM_DIMS
            && match first {
                Some(d) => d.module.affine()?.is_some(),
                None => false,
            };
        Ok(match affine {
            true => x.matrix::<T>()?.map_or(Path::Modules, Path::Affine),
            false => Path::Modules,
        })
    }

    /// `y` plus the terms of the frozen dendrites `chain` (in cascade order) on the detached
    /// input, and, when `keep_acts`, their activations (a candidate's cascade inputs).
    fn frozen_sum<X, So, T>(
        &self,
        y: Tensor<So, E, D, T>,
        chain: &[&Dendrite<M>],
        detached: &X,
        path: Path<E, D, NoneTape>,
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
        let products = match path {
            Path::Affine(matrix) => affine_products(chain, &matrix, &shape)?,
            Path::Modules => None,
        };
        let terms = match products {
            Some(terms) => terms,
            None => module_terms(chain, self.frozen_pres::<X, So>(chain, detached)?),
        };
        dendrite_sum::<Tags, So, E, D, T, NoneTape>(
            y,
            terms,
            None,
            self.config.activation,
            keep_acts,
            &self.scratch,
        )
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
    /// dendrite phase the candidate runs on its own tape and learns from the captured error
    /// (see [`super::candidate`]).
    fn correlation_dendrites<X, XO, So, T>(
        &mut self,
        y: Tensor<So, E, D, T>,
        detached: X,
        path: Path<E, D, NoneTape>,
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
        let chain: Vec<&Dendrite<M>> = self.dendrites.iter().collect();
        let keep_acts = candidate_input.is_some() && self.candidate.is_some();
        let (y, acts) = self.frozen_sum::<X, So, T>(y, &chain, &detached, path, keep_acts)?;
        let (Some(input), Some(candidate)) = (candidate_input, &mut self.candidate) else {
            return Ok(y);
        };
        // The candidate: its own tape, a detached input, cascade inputs from the dendrites.
        let state = lock(&self.states).candidate.clone();
        let input = <P as Route<M, XO, E, D>>::dendrite_input(input, state.as_ref())?;
        let out = candidate.dendrite.module.try_forward_mut(input)?;
        lock(&self.states).candidate = <P as Route<M, XO, E, D>>::state_of(&out);
        let (pre, _) = <P as Route<M, XO, E, D>>::split(out);
        let act = activation_of::<Tags, So, E, D, _, NoneTape>(
            pre,
            None,
            &candidate.dendrite.cascade,
            &acts,
            self.config.activation,
        )?;
        Ok(candidate.capture::<Tags, So, T>(y, act, &self.config.correlation))
    }

    /// Gradient mode: nothing detached, every dendrite that trains runs on the task tape.
    /// `inputs` holds one tape-free copy of the input per accepted dendrite plus one.
    fn gradient_dendrites<X, So, T>(
        &mut self,
        y: Tensor<So, E, D, T>,
        inputs: Vec<X>,
        path: Path<E, D, T>,
    ) -> Result<Tensor<So, E, D, T>, D::Err>
    where
        So: Shape,
        T: Tape<E, D> + 'static,
        M: ModuleMut<X, Output = <P as Route<M, X, E, D>>::Output, Error = D::Err>
            + Module<X, Output = <P as Route<M, X, E, D>>::Output, Error = D::Err>,
        P: Route<M, X, E, D, Main = Tensor<So, E, D, T>>,
        Tags: NeuronAxis<So, Neurons = M::Neurons>,
    {
        let activation = self.config.activation;
        if let Path::Affine(matrix) = path {
            if let Some(terms) = affine_terms(&self.output_chain())? {
                let sum = dendrite_sum::<Tags, So, E, D, T, T>(
                    y,
                    terms,
                    Some(matrix),
                    activation,
                    false,
                    &self.scratch,
                );
                return Ok(sum?.0);
            }
        }
        let pres = self.training_pres::<X, So, T>(inputs)?;
        let terms = module_terms(&self.output_chain(), pres);
        let sum =
            dendrite_sum::<Tags, So, E, D, T, T>(y, terms, None, activation, false, &self.scratch);
        Ok(sum?.0)
    }

    /// Gradient mode: the outputs of the dendrites that add to the output, each on the task
    /// tape. Accepted dendrites train in the neuron phase, the candidate in the dendrite
    /// phase; each runs from and to its own recurrent state.
    fn training_pres<X, So, T>(
        &mut self,
        inputs: Vec<X>,
    ) -> Result<Vec<Tensor<So, E, D, T>>, D::Err>
    where
        So: Shape,
        T: Tape<E, D>,
        M: ModuleMut<X, Output = <P as Route<M, X, E, D>>::Output, Error = D::Err>
            + Module<X, Output = <P as Route<M, X, E, D>>::Output, Error = D::Err>,
        P: Route<M, X, E, D, Main = Tensor<So, E, D, T>>,
    {
        let neuron_phase = self.candidate.is_none();
        let accepted = self.dendrites.len();
        let mut pres = Vec::with_capacity(accepted + 1);
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
            pres.push(<P as Route<M, X, E, D>>::split(out).0);
        }
        Ok(pres)
    }
}

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
/// `shape`, with the bias left to the sum. `None` when a dendrite's module is not affine.
fn affine_products<'a, M, So>(
    chain: &[&'a Dendrite<M>],
    matrix: &Matrix<M::Dtype, M::Device, NoneTape>,
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

/// Terms of training dendrites `chain` by the affine path: the sum computes each `x · Wᵀ`
/// from the input matrix and adds the bias, and with tapes writes the gradients of `W`, `b`
/// and `x` itself, so that the products allocate no output and no gradient buffer. `None`
/// when a dendrite's module is not affine.
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

/// Runs one forward pass of a dendritic layer: the neurons and the dendrites share what their
/// modules derive from the input (a convolution's columns: see `host::memo`). The first pass
/// of the process pins glibc's heap thresholds (`host::heap`): from then on a step's freed
/// outputs, one per dendrite copy, serve the next step.
fn dendritic_pass<R>(f: impl FnOnce() -> R) -> R {
    retain_freed_memory();
    memo::scope(f)
}

/// Before the neurons run: each frozen dendrite of `chain` whose module will run
/// ([`Path::Modules`]) may ask the neurons' pass to share its work
/// ([`Convertible::prepare_frozen`]).
fn prepare_frozen<'a, M: Convertible, T>(
    chain: impl IntoIterator<Item = &'a Dendrite<M>>,
    path: &Path<M::Dtype, M::Device, T>,
) {
    if matches!(path, Path::Modules) {
        for d in chain {
            d.module.prepare_frozen();
        }
    }
}

/// The sum's terms: each dendrite of `chain` with its module's output.
fn module_terms<'a, M, So, P>(
    chain: &[&'a Dendrite<M>],
    pres: Vec<Tensor<So, M::Dtype, M::Device, P>>,
) -> Vec<Term<'a, So, M::Neurons, M::Dtype, M::Device, P>>
where
    M: Convertible,
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
