//! Forward passes of [`Dendritic`]: inference (`Module`, no tape) and training
//! (`ModuleMut`, any tape), in both learning modes.

use dfdx::nn::{Module, ModuleMut};
use dfdx::shapes::{HasShape, Shape};
use dfdx::tensor::{NoneTape, OwnedTape, PutTape, SplitTape, Tape, Tensor, Trace};
use dfdx::tensor_ops::{Backward, Device, SumTo, TryAdd, TryMul};

use super::{lock, Activation, Convertible, Dendrite, DendriteLearning, Dendritic, Training};
use crate::axis::NeuronAxis;
use crate::correlation::CorrelationConfig;
use crate::Float;

impl<M, Tags, E, D, Si, So> Module<Tensor<Si, E, D>> for Dendritic<M, Tags>
where
    E: Float,
    D: Device<E>,
    Si: Shape,
    So: Shape,
    M: Convertible<Dtype = E, Device = D>
        + Module<Tensor<Si, E, D>, Output = Tensor<So, E, D>, Error = D::Err>,
    Tags: NeuronAxis<So, Neurons = M::Neurons>,
{
    type Output = Tensor<So, E, D>;
    type Error = D::Err;

    /// Inference: the neurons plus every dendrite (and, in the gradient mode's dendrite
    /// phase, the candidate, which is part of the output there).
    fn try_forward(&self, x: Tensor<Si, E, D>) -> Result<Self::Output, D::Err> {
        let y = self.neurons.try_forward(x.clone())?;
        let shape = *y.shape();
        let chain = self.output_chain();
        let mut acts: Vec<Tensor<So, E, D>> = Vec::with_capacity(chain.len());
        for d in &chain {
            let pre = d.module.try_forward(x.clone())?;
            acts.push(self.dendrite_activation::<So, NoneTape>(pre, d, &acts, &shape)?);
        }
        add_outputs::<M, Tags, So, NoneTape, NoneTape, E, D>(y, &chain, acts)
    }
}

impl<M, Tags, E, D, Si, So, T> ModuleMut<Tensor<Si, E, D, T>> for Dendritic<M, Tags>
where
    E: Float,
    D: Device<E>,
    Si: Shape,
    So: Shape,
    T: Tape<E, D> + 'static,
    M: Convertible<Dtype = E, Device = D>
        + ModuleMut<Tensor<Si, E, D, T>, Output = Tensor<So, E, D, T>, Error = D::Err>
        + Module<Tensor<Si, E, D, T>, Output = Tensor<So, E, D, T>, Error = D::Err>
        + Module<Tensor<Si, E, D>, Output = Tensor<So, E, D>, Error = D::Err>
        + ModuleMut<
            Tensor<Si, E, D, OwnedTape<E, D>>,
            Output = Tensor<So, E, D, OwnedTape<E, D>>,
            Error = D::Err,
        >,
    Tags: NeuronAxis<So, Neurons = M::Neurons>,
{
    type Output = Tensor<So, E, D, T>;
    type Error = D::Err;

    /// Training forward pass. The neurons run in training mode in the neuron phase and in
    /// inference mode (frozen) in the dendrite phase.
    fn try_forward_mut(&mut self, x: Tensor<Si, E, D, T>) -> Result<Self::Output, D::Err> {
        match self.config.learning {
            DendriteLearning::Correlation => self.forward_correlation(x),
            DendriteLearning::Gradient => self.forward_gradient(x),
        }
    }
}

impl<M, Tags, E, D> Dendritic<M, Tags>
where
    E: Float,
    D: Device<E>,
    M: Convertible<Dtype = E, Device = D>,
    Tags: 'static,
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

    /// Correlation mode: dendrites see a detached input and are frozen; in the dendrite phase
    /// a candidate is run on its own tape and trained from the captured neuron error.
    fn forward_correlation<Si, So, T>(
        &mut self,
        x: Tensor<Si, E, D, T>,
    ) -> Result<Tensor<So, E, D, T>, D::Err>
    where
        Si: Shape,
        So: Shape,
        T: Tape<E, D> + 'static,
        M: ModuleMut<Tensor<Si, E, D, T>, Output = Tensor<So, E, D, T>, Error = D::Err>
            + Module<Tensor<Si, E, D, T>, Output = Tensor<So, E, D, T>, Error = D::Err>
            + Module<Tensor<Si, E, D>, Output = Tensor<So, E, D>, Error = D::Err>
            + ModuleMut<
                Tensor<Si, E, D, OwnedTape<E, D>>,
                Output = Tensor<So, E, D, OwnedTape<E, D>>,
                Error = D::Err,
            >,
        Tags: NeuronAxis<So, Neurons = M::Neurons>,
    {
        let (detached, tape) = x.split_tape();
        let y = if self.candidate.is_none() {
            self.neurons
                .try_forward_mut(detached.clone().put_tape(tape))?
        } else {
            self.neurons.try_forward(detached.clone().put_tape(tape))?
        };
        let shape = *y.shape();
        let mut acts: Vec<Tensor<So, E, D>> = Vec::with_capacity(self.dendrites.len());
        for d in &self.dendrites {
            let pre = d.module.try_forward(detached.clone())?;
            acts.push(self.dendrite_activation::<So, NoneTape>(pre, d, &acts, &shape)?);
        }
        let chain: Vec<&Dendrite<M>> = self.dendrites.iter().collect();
        let y = add_outputs::<M, Tags, So, T, NoneTape, E, D>(y, &chain, acts.clone())?;
        if !T::OWNS_TAPE {
            return Ok(y);
        }
        let Some(candidate) = &mut self.candidate else {
            return Ok(y);
        };

        // The candidate: its own tape, a detached input, cascade inputs from the dendrites.
        let pre = candidate
            .dendrite
            .module
            .try_forward_mut(detached.leaky_traced())?;
        let mut pre = pre;
        for (c, a) in candidate.dendrite.cascade.iter().zip(&acts) {
            let term = Tags::broadcast(c.clone().retaped::<OwnedTape<E, D>>(), &shape)?
                .try_mul(a.clone())?;
            pre = pre.try_add(term)?;
        }
        let act = match self.config.activation {
            Activation::Sigmoid => pre.try_sigmoid()?,
            Activation::Tanh => pre.try_tanh()?,
            Activation::Relu => pre.try_relu()?,
        };

        // Once the task loss's backward pass reaches this layer's output, its gradient there
        // (the neuron error) is complete: fold it into the statistics and backpropagate the
        // correlation objective through the candidate.
        let training = candidate.training.clone();
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
    fn forward_gradient<Si, So, T>(
        &mut self,
        x: Tensor<Si, E, D, T>,
    ) -> Result<Tensor<So, E, D, T>, D::Err>
    where
        Si: Shape,
        So: Shape,
        T: Tape<E, D> + 'static,
        M: ModuleMut<Tensor<Si, E, D, T>, Output = Tensor<So, E, D, T>, Error = D::Err>
            + Module<Tensor<Si, E, D, T>, Output = Tensor<So, E, D, T>, Error = D::Err>,
        Tags: NeuronAxis<So, Neurons = M::Neurons>,
    {
        let neuron_phase = self.candidate.is_none();
        let (input, tape) = x.split_tape();
        let y = if neuron_phase {
            self.neurons.try_forward_mut(input.clone().put_tape(tape))?
        } else {
            self.neurons.try_forward(input.clone().put_tape(tape))?
        };
        let shape = *y.shape();
        let mut acts: Vec<Tensor<So, E, D, T>> = Vec::with_capacity(self.dendrites.len() + 1);
        // accepted dendrites train in the neuron phase; the candidate in the dendrite phase.
        let n = self.dendrites.len();
        for i in 0..=n {
            let (d, trains) = if i < n {
                (&mut self.dendrites[i], neuron_phase)
            } else if let Some(c) = &mut self.candidate {
                (&mut c.dendrite, true)
            } else {
                break;
            };
            let x = input.clone().retaped::<T>();
            let pre = if trains {
                d.module.try_forward_mut(x)?
            } else {
                d.module.try_forward(x)?
            };
            let d: &Dendrite<M> = if i < n {
                &self.dendrites[i]
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
        add_outputs::<M, Tags, So, T, T, E, D>(y, &chain, acts)
    }
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
