//! Correlation learning: the statistics a candidate dendrite is trained and judged by.
//!
//! Cascade-correlation style: for each neuron `c` of a layer, the candidate's activation `v`
//! should co-vary with the neuron's remaining error `e` (the loss gradient at the layer output,
//! captured during the ordinary backward pass). Per neuron this module keeps running means
//! `v̄`, `ē` and running second moments
//!
//! ```text
//! cov_c = E[(v - v̄)(e - ē)]     var_v,c = E[(v - v̄)²]     var_e,c = E[(e - ē)²]
//! ```
//!
//! averaged over the batch and every non-neuron axis, then across batches: a cumulative average
//! for the first `warmup_batches` batches, an exponential moving average (`ema`) after that.
//!
//! * The candidate climbs `|cov_c|`: the gradient handed to its activation is
//!   `sign(cov_c) · (e - ē) / n` (with a minus sign, since optimizers descend).
//! * The score of neuron `c` is the magnitude of its correlation,
//!   `|cov_c| / sqrt(var_v,c · var_e,c)`, in `[0, 1]`; the layer score is their mean.
//! * After warm-up, whenever the layer score beats the best so far by both a relative and an
//!   absolute margin, the candidate is snapshotted; accepting a dendrite takes that snapshot.

use dfdx::shapes::HasShape;
use dfdx::shapes::Shape;
use dfdx::tensor::Tensor;
use dfdx::tensor_ops::{Device, TryAdd, TryDiv, TryMul};

use crate::axis::{elements_per_neuron, Layout, NeuronAxis};
use crate::collective;
use crate::error::{Error, Result};
use crate::float::Float;
use crate::host::{host, on_host};
use crate::params::{join, Param, ParamVisitor, Role};

/// How candidates are judged and when they are snapshotted.
#[derive(Debug, Clone, PartialEq)]
pub struct CorrelationConfig {
    /// Batches averaged cumulatively before the moving average takes over. Default 100.
    pub warmup_batches: usize,
    /// Decay of the exponential moving average after warm-up. Default 0.99.
    pub ema: f64,
    /// A new best score must exceed the old by this fraction of it. Default 0.1 (10%).
    pub relative_margin: f64,
    /// ... and by this much. Default 1e-5.
    pub absolute_margin: f64,
}

impl Default for CorrelationConfig {
    fn default() -> Self {
        Self {
            warmup_batches: 100,
            ema: 0.99,
            relative_margin: 0.1,
            absolute_margin: 1e-5,
        }
    }
}

impl CorrelationConfig {
    /// Checks every value is in range.
    ///
    /// # Errors
    /// [`Error::Config`] naming the field.
    pub fn validate(&self) -> Result<()> {
        if !(self.ema > 0.0 && self.ema < 1.0) {
            return Err(Error::Config(format!(
                "`ema` must be in (0, 1), got {}",
                self.ema
            )));
        }
        if !(self.relative_margin >= 0.0 && self.absolute_margin >= 0.0) {
            return Err(Error::Config(format!(
                "`relative_margin` and `absolute_margin` must be >= 0, got {} and {}",
                self.relative_margin, self.absolute_margin
            )));
        }
        Ok(())
    }

    /// True when `score` is a new best over `best` by both margins.
    pub fn beats(&self, score: f64, best: f64) -> bool {
        score > best * (1.0 + self.relative_margin) && score > best + self.absolute_margin
    }
}

/// The correlation scores of one layer's candidate, read back to the host.
#[derive(Debug, Clone, PartialEq)]
pub struct CorrelationReport {
    /// Mean over neurons of the per-neuron score.
    pub score: f64,
    /// `|corr(v, e)|` per neuron.
    pub per_neuron: Vec<f64>,
    /// Running mean of the neuron error per neuron (the loss gradient at the layer output,
    /// averaged over the batch and every non-neuron axis).
    pub mean_error: Vec<f64>,
    /// The layer score of the snapshot that would be accepted now (0 if none yet).
    pub best_score: f64,
    /// Batches seen by the statistics.
    pub batches: usize,
}

/// Running per-neuron statistics of one candidate (`C` neurons, on the device).
#[derive(Debug, Clone)]
pub(crate) struct Correlation<C: dfdx::shapes::ConstDim, E: Float, D: Device<E>> {
    batches: usize,
    mean_activation: Tensor<(C,), E, D>,
    mean_error: Tensor<(C,), E, D>,
    covariance: Tensor<(C,), E, D>,
    activation_var: Tensor<(C,), E, D>,
    error_var: Tensor<(C,), E, D>,
    /// Host copy of the per-neuron scores after the last update.
    per_neuron: Vec<f64>,
    best_score: f64,
}

/// What one statistics update produced.
pub(crate) struct Update<S: Shape, E: Float, D: Device<E>> {
    /// d(candidate loss)/d(activation): minimising `sum(activation * this)` climbs `|cov|`.
    pub activation_grad: Tensor<S, E, D>,
    /// The layer score beat the best by the margins: snapshot the candidate.
    pub improved: bool,
}

impl<C: dfdx::shapes::ConstDim, E: Float, D: Device<E>> Correlation<C, E, D> {
    pub fn new(dev: &D) -> Result<Self> {
        let zeros = || dev.try_zeros_like(&(C::default(),)).map_err(Error::device);
        Ok(Self {
            batches: 0,
            mean_activation: zeros()?,
            mean_error: zeros()?,
            covariance: zeros()?,
            activation_var: zeros()?,
            error_var: zeros()?,
            per_neuron: vec![0.0; C::SIZE],
            best_score: 0.0,
        })
    }

    /// Batches folded in and the best layer score so far (the scalars of the state).
    pub fn scalars(&self) -> (usize, f64) {
        (self.batches, self.best_score)
    }

    /// Restores the scalars after the tensors were loaded (checkpoint resume).
    pub fn restore_scalars(&mut self, batches: usize, best_score: f64) {
        self.batches = batches;
        self.best_score = best_score;
        let _ = self.refresh_scores();
    }

    /// Visits the running statistics (saved, never trained).
    pub fn visit_params<V: ParamVisitor<E, D>>(
        &mut self,
        path: &str,
        visitor: &mut V,
    ) -> Result<()> {
        for (name, t) in [
            ("mean_activation", &mut self.mean_activation),
            ("mean_error", &mut self.mean_error),
            ("covariance", &mut self.covariance),
            ("activation_var", &mut self.activation_var),
            ("error_var", &mut self.error_var),
        ] {
            let p = join(path, name);
            let param = Param {
                path: &p,
                role: Role::Buffer,
                trainable: false,
                own_grads: None,
            };
            visitor.visit(param, t)?;
        }
        Ok(())
    }

    /// Recomputes the host copy of the per-neuron scores from the running moments; returns
    /// the host copy of the covariance it read.
    fn refresh_scores(&mut self) -> Vec<E> {
        let cov = self.covariance.as_vec();
        let var_v = self.activation_var.as_vec();
        let var_e = self.error_var.as_vec();
        self.per_neuron = (0..C::SIZE)
            .map(|c| {
                let denom = (var_v[c].as_f64() * var_e[c].as_f64()).sqrt();
                if denom > 0.0 {
                    (cov[c].as_f64().abs() / denom).min(1.0)
                } else {
                    0.0
                }
            })
            .collect();
        cov
    }

    pub fn report(&self) -> CorrelationReport {
        CorrelationReport {
            score: mean(&self.per_neuron),
            per_neuron: self.per_neuron.clone(),
            mean_error: self
                .mean_error
                .as_vec()
                .into_iter()
                .map(E::as_f64)
                .collect(),
            best_score: self.best_score,
            batches: self.batches,
        }
    }

    /// Folds one batch of candidate activations and neuron errors into the statistics. With
    /// data-parallel replicas ([`crate::collective::active`]) the batch is the union of
    /// every replica's shard: counts, sums and centred sums are summed over the replicas, so
    /// the statistics are those of the whole batch and the same on every replica.
    ///
    /// Returns `Ok(None)` and leaves the statistics untouched when the error holds a NaN or an
    /// infinity (on any replica).
    ///
    /// # Errors
    /// Backend errors; [`Error::Collective`] when the replicas cannot sum.
    pub fn update<S: Shape, Tags: NeuronAxis<S, Neurons = C>>(
        &mut self,
        activation: &Tensor<S, E, D>,
        error: &Tensor<S, E, D>,
        config: &CorrelationConfig,
    ) -> Result<Option<Update<S, E, D>>> {
        let replicas = collective::active();
        if !on_host::<E, D>() && replicas.is_none() {
            return self
                .update_by_ops::<S, Tags>(activation, error, config)
                .map_err(Error::device);
        }
        // on the host (any device: the copies come back to it), also for replicas
        let shape = *activation.shape();
        let layout = Layout::of::<S, Tags>(&shape);
        let n = E::of_f64(elements_per_neuron::<S, Tags>(&shape) as f64);
        let a = host(activation.clone()).map_err(Error::device)?.1;
        let e = host(error.clone()).map_err(Error::device)?.1;
        let sum = |v: &mut Vec<E>| match &replicas {
            Some(c) => collective::all_reduce(&**c, v),
            None => Ok(()),
        };
        let Some((grad, improved)) = self.update_on_host(layout, n, a, e, config, sum)? else {
            return Ok(None);
        };
        Ok(Some(Update {
            activation_grad: activation
                .device()
                .try_tensor_from_vec(grad, shape)
                .map_err(Error::device)?,
            improved,
        }))
    }

    /// [`Self::update`] for a data-parallel replica with an empty shard: joins the other
    /// replicas' sums with nothing of its own and folds the result in as they do. Returns
    /// whether the score improved; `None` for a non-finite error (on another replica).
    ///
    /// # Errors
    /// [`Error::Collective`] when the replicas cannot sum.
    pub fn join_empty(&mut self, config: &CorrelationConfig) -> Result<Option<bool>> {
        let Some(c) = collective::active() else {
            return Ok(Some(false));
        };
        let sum = |v: &mut Vec<E>| collective::all_reduce(&*c, v);
        let done = self.update_on_host(
            Layout::empty(C::SIZE),
            E::zero(),
            Vec::new(),
            Vec::new(),
            config,
            sum,
        )?;
        Ok(done.map(|(_, improved)| improved))
    }

    /// Weight of the new batch in the running averages: the first batch always starts them,
    /// whatever the warm-up length.
    fn alpha(&self, config: &CorrelationConfig) -> E {
        E::of_f64(if self.batches < config.warmup_batches.max(1) {
            1.0 / (self.batches as f64 + 1.0)
        } else {
            1.0 - config.ema
        })
    }

    /// [`Self::update`] on the host: one pass per statistic over host copies of the
    /// activation `a` and the error `e` (laid out by `layout`, `n` elements per neuron),
    /// instead of some twenty dfdx ops with broadcasts; `sum` sums a vector over the
    /// replicas (nothing without them). Returns the activation's gradient and whether the
    /// score improved; `None` for a non-finite error.
    fn update_on_host(
        &mut self,
        layout: Layout,
        n: E,
        mut a: Vec<E>,
        mut e: Vec<E>,
        config: &CorrelationConfig,
        sum: impl Fn(&mut Vec<E>) -> Result<()>,
    ) -> Result<Option<(Vec<E>, bool)>> {
        let alpha = self.alpha(config);
        // per neuron: the activations' sums, the errors' sums, and the count
        let mut sums = layout.sum(&a);
        sums.extend(layout.sum(&e));
        sums.push(n);
        sum(&mut sums)?;
        let n = sums[2 * C::SIZE];
        if n == E::zero() {
            // every replica's shard is empty: nothing to learn from or to count
            return Ok(Some((vec![E::zero(); layout.len], false)));
        }
        let batch_mean_activation: Vec<E> = sums[..C::SIZE].iter().map(|s| *s / n).collect();
        let batch_mean_error: Vec<E> = sums[C::SIZE..2 * C::SIZE].iter().map(|s| *s / n).collect();
        if !batch_mean_error.iter().all(|v| v.is_finite()) {
            return Ok(None);
        }
        let fold = |running: &mut Tensor<(C,), E, D>, batch: &[E]| {
            let mut r = vec![E::default(); C::SIZE];
            running.copy_into(&mut r);
            for (r, b) in r.iter_mut().zip(batch) {
                *r = (*b - *r) * alpha + *r;
            }
            running.copy_from(&r);
            r
        };
        let mean_activation = fold(&mut self.mean_activation, &batch_mean_activation);
        let mean_error = fold(&mut self.mean_error, &batch_mean_error);
        // centred in place: x + (-m) is x - m exactly
        let negated = |m: Vec<E>| m.into_iter().map(|v| -v).collect::<Vec<E>>();
        layout.add(&mut a, &negated(mean_activation));
        layout.add(&mut e, &negated(mean_error));
        // the centred sums, over the replicas, then the moments
        let mut centred = layout.dot(&a, &e);
        centred.extend(layout.dot(&a, &a));
        centred.extend(layout.dot(&e, &e));
        sum(&mut centred)?;
        let moment = |k: usize| -> Vec<E> {
            centred[k * C::SIZE..(k + 1) * C::SIZE]
                .iter()
                .map(|s| *s / n)
                .collect()
        };
        fold(&mut self.covariance, &moment(0));
        fold(&mut self.activation_var, &moment(1));
        fold(&mut self.error_var, &moment(2));
        let (improved, sign) = self.finish_update(config);
        let mut grad = vec![E::default(); layout.len];
        layout.axpy(&mut grad, &sign, &e);
        for g in &mut grad {
            *g /= n;
        }
        Ok(Some((grad, improved)))
    }

    /// After the moments moved: counts the batch, refreshes the scores, takes a snapshot
    /// decision, and gives the sign the candidate's activation gradient carries per neuron
    /// (minus that of the covariance: the optimiser descends, the candidate must climb
    /// `|cov|`).
    fn finish_update(&mut self, config: &CorrelationConfig) -> (bool, Vec<E>) {
        self.batches += 1;
        let cov = self.refresh_scores();
        let score = mean(&self.per_neuron);
        let improved = self.batches > config.warmup_batches && config.beats(score, self.best_score);
        if improved {
            self.best_score = score;
        }
        let sign = cov
            .iter()
            .map(|v| E::of_f64(if v.as_f64() >= 0.0 { -1.0 } else { 1.0 }))
            .collect();
        (improved, sign)
    }

    /// [`Self::update`] from dfdx ops, on any device.
    fn update_by_ops<S: Shape, Tags: NeuronAxis<S, Neurons = C>>(
        &mut self,
        activation: &Tensor<S, E, D>,
        error: &Tensor<S, E, D>,
        config: &CorrelationConfig,
    ) -> Result<Option<Update<S, E, D>>, D::Err> {
        let shape = *activation.shape();
        let n = E::of_f64(elements_per_neuron::<S, Tags>(&shape) as f64);
        let alpha = self.alpha(config);
        let batch_mean_error = Tags::sum_others(error.clone())?.try_div(n)?;
        if !batch_mean_error.as_vec().iter().all(|v| v.is_finite()) {
            return Ok(None);
        }
        let batch_mean_activation = Tags::sum_others(activation.clone())?.try_div(n)?;
        let fold = |running: &Tensor<(C,), E, D>, batch: Tensor<(C,), E, D>| {
            (batch - running.clone())
                .try_mul(alpha)?
                .try_add(running.clone())
        };
        self.mean_activation = fold(&self.mean_activation, batch_mean_activation)?;
        self.mean_error = fold(&self.mean_error, batch_mean_error)?;
        let centred_activation =
            activation.clone() - Tags::broadcast(self.mean_activation.clone(), &shape)?;
        let centred_error = error.clone() - Tags::broadcast(self.mean_error.clone(), &shape)?;
        let moment = |a: &Tensor<S, E, D>, b: &Tensor<S, E, D>| {
            Tags::sum_others(a.clone().try_mul(b.clone())?)?.try_div(n)
        };
        self.covariance = fold(
            &self.covariance,
            moment(&centred_activation, &centred_error)?,
        )?;
        self.activation_var = fold(
            &self.activation_var,
            moment(&centred_activation, &centred_activation)?,
        )?;
        self.error_var = fold(&self.error_var, moment(&centred_error, &centred_error)?)?;
        let (improved, sign) = self.finish_update(config);
        let sign = activation
            .device()
            .try_tensor_from_vec(sign, (C::default(),))?;
        let activation_grad = Tags::broadcast(sign, &shape)?
            .try_mul(centred_error)?
            .try_div(n)?;
        Ok(Some(Update {
            activation_grad,
            improved,
        }))
    }
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::axis::{Any, Batch, Neurons};
    use dfdx::prelude::*;

    fn cfg(warmup: usize) -> CorrelationConfig {
        CorrelationConfig {
            warmup_batches: warmup,
            ..Default::default()
        }
    }

    #[test]
    fn perfectly_correlated_neuron_scores_one_and_uncorrelated_scores_low() {
        let dev: Cpu = Default::default();
        let mut stats = Correlation::<Const<2>, f32, Cpu>::new(&dev).unwrap();
        // neuron 0: e = 3v (corr 1); neuron 1: e independent of v.
        let v = dev.tensor([[0.1f32, 0.2], [0.9, 0.4], [0.5, 0.8], [0.3, 0.6]]);
        let e = dev.tensor([[0.3f32, 1.0], [2.7, -1.0], [1.5, 1.0], [0.9, -1.0]]);
        let up = stats
            .update::<_, (Batch, Neurons)>(&v, &e, &cfg(0))
            .unwrap()
            .unwrap();
        let r = stats.report();
        assert!((r.per_neuron[0] - 1.0).abs() < 1e-5, "{:?}", r.per_neuron);
        assert!(r.per_neuron[1] < 1e-6, "{:?}", r.per_neuron);
        assert!(up.improved);
        // activation gradient = -sign(cov) * (e - mean e) / n; cov of neuron 0 is positive.
        let g = up.activation_grad.array();
        assert!((g[0][0] - (-(0.3 - 1.35) / 4.0)).abs() < 1e-6);
    }

    /// The CPU's loops and the dfdx ops (what other devices run) agree on every statistic,
    /// decision and gradient, through the warm-up, the switch to the moving average, and a
    /// batch with a NaN error.
    #[test]
    fn host_update_matches_the_dfdx_ops() {
        fn check<S: Shape, Tags: NeuronAxis<S, Neurons = Const<3>>>(shape: S) {
            let dev: Cpu = Cpu::seed_from_u64(5);
            let config = CorrelationConfig {
                warmup_batches: 4,
                ema: 0.9,
                ..Default::default()
            };
            let mut host = Correlation::<Const<3>, f64, Cpu>::new(&dev).unwrap();
            let mut ops = Correlation::<Const<3>, f64, Cpu>::new(&dev).unwrap();
            let close = |a: &[f64], b: &[f64]| {
                assert_eq!(a.len(), b.len());
                for (x, y) in a.iter().zip(b) {
                    assert!((x - y).abs() <= 1e-12 * (1.0 + y.abs()), "{a:?} vs {b:?}");
                }
            };
            for batch in 0..10 {
                let v: Tensor<S, f64, Cpu> = dev.sample_uniform_like(&shape);
                let mut e: Tensor<S, f64, Cpu> = dev.sample_normal_like(&shape);
                // a learnable link between activation and error, so scores and signs move
                e = e + v.clone() * (f64::from(batch) - 4.0);
                if batch == 6 {
                    let mut values = e.as_vec();
                    values[1] = f64::NAN;
                    e = dev.tensor_from_vec(values, shape);
                }
                let a = host.update::<S, Tags>(&v, &e, &config).unwrap();
                let b = ops.update_by_ops::<S, Tags>(&v, &e, &config).unwrap();
                match (a, b) {
                    (None, None) => assert_eq!(batch, 6),
                    (Some(a), Some(b)) => {
                        assert_eq!(a.improved, b.improved, "batch {batch}");
                        close(&a.activation_grad.as_vec(), &b.activation_grad.as_vec());
                    }
                    _ => panic!("batch {batch}: one refused the error, the other did not"),
                }
                let (ra, rb) = (host.report(), ops.report());
                assert_eq!((ra.batches, ra.best_score), (rb.batches, rb.best_score));
                close(&ra.per_neuron, &rb.per_neuron);
                close(&ra.mean_error, &rb.mean_error);
                for (x, y) in [
                    (&host.mean_activation, &ops.mean_activation),
                    (&host.covariance, &ops.covariance),
                    (&host.activation_var, &ops.activation_var),
                    (&host.error_var, &ops.error_var),
                ] {
                    close(&x.as_vec(), &y.as_vec());
                }
            }
            assert!(host.report().best_score > 0.0, "some snapshot was taken");
        }
        check::<_, (Batch, Neurons)>((Const::<5>, Const::<3>));
        check::<_, (Batch, Neurons, Any, Any)>((Const::<2>, Const::<3>, Const::<2>, Const::<3>));
    }

    #[test]
    fn non_finite_error_leaves_statistics_untouched() {
        let dev: Cpu = Default::default();
        let mut stats = Correlation::<Const<1>, f32, Cpu>::new(&dev).unwrap();
        let v = dev.tensor([[0.5f32], [0.1]]);
        let e = dev.tensor([[f32::NAN], [1.0]]);
        assert!(stats
            .update::<_, (Batch, Neurons)>(&v, &e, &cfg(0))
            .unwrap()
            .is_none());
        assert_eq!(stats.report().batches, 0);
    }

    #[test]
    fn snapshots_wait_for_warmup_and_need_both_margins() {
        let c = CorrelationConfig::default();
        assert!(c.beats(0.2, 0.1));
        assert!(!c.beats(0.105, 0.1), "5% is below the 10% margin");
        assert!(!c.beats(5e-6, 0.0), "below the absolute margin");
        let dev: Cpu = Default::default();
        let mut stats = Correlation::<Const<1>, f32, Cpu>::new(&dev).unwrap();
        let v = dev.tensor([[0.1f32], [0.9]]);
        let e = dev.tensor([[0.1f32], [0.9]]);
        for _ in 0..3 {
            let up = stats
                .update::<_, (Batch, Neurons)>(&v, &e, &cfg(3))
                .unwrap()
                .unwrap();
            assert!(!up.improved, "no snapshot during warm-up");
        }
        let up = stats
            .update::<_, (Batch, Neurons)>(&v, &e, &cfg(3))
            .unwrap()
            .unwrap();
        assert!(up.improved);
        assert!(stats.report().best_score > 0.99);
    }

    #[test]
    fn cumulative_average_during_warmup_then_ema() {
        let dev: Cpu = Default::default();
        let mut stats = Correlation::<Const<1>, f32, Cpu>::new(&dev).unwrap();
        let e = dev.tensor([[0.0f32], [0.0]]);
        let config = CorrelationConfig {
            warmup_batches: 2,
            ema: 0.5,
            ..Default::default()
        };
        for m in [2.0f32, 4.0, 10.0] {
            let v = dev.tensor([[m], [m]]);
            stats
                .update::<_, (Batch, Neurons)>(&v, &e, &config)
                .unwrap()
                .unwrap();
        }
        // cumulative: (2 + 4) / 2 = 3; then ema 0.5: 3 + 0.5 * (10 - 3) = 6.5
        assert_eq!(stats.mean_activation.array(), [6.5]);
    }
}
