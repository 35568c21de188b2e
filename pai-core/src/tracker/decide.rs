//! The tracker's decisions: when a phase ends, whether new dendrites are kept, when the run is
//! complete, and where the learning rate restarts.

use super::config::{LrRestart, SwitchMode};
use super::points::LoadTracker;
use super::state::{ArchitectureRecord, BestScore, EpochRecord, SwitchRecord, Trial};
use super::{Step, Tracker};
use crate::correlation::CorrelationReport;
use crate::dendritic::DendriteLearning;
use crate::error::{Error, Result};
use crate::model::DendriticModel;
use crate::optim::lr::PlateauState;
use crate::optim::OptimizerFor;
use crate::phase::Phase;

impl Tracker {
    pub(super) fn better(&self, a: f64, b: f64) -> bool {
        if self.config.maximize {
            a > b
        } else {
            a < b
        }
    }

    /// `score` is a new best over `best` by both thresholds at `dendrites`.
    pub(super) fn improves(&self, score: f64, best: f64, dendrites: usize) -> bool {
        let margin = (self.config.relative_threshold.at(dendrites) * best.abs())
            .max(self.config.absolute_threshold.at(dendrites));
        let shifted = if self.config.maximize {
            best + margin
        } else {
            best - margin
        };
        self.better(score, shifted) && self.better(score, best)
    }

    pub(super) fn neuron_epoch<M: DendriticModel>(
        &mut self,
        running: f64,
        model: &mut M,
        opt: &mut OptimizerFor<M>,
    ) -> Result<Step> {
        let epoch = self.state.epoch;
        let record = self.state.history.last().expect("pushed").clone();
        let dendrites = record.dendrites;
        let improved = match &self.state.best {
            None => true,
            Some(b) => self.improves(running, b.score, dendrites),
        };
        self.record_architecture(&record, running);
        // a gain on this phase's own best resets the patience (the set is still learning)
        if self
            .state
            .set_best
            .is_none_or(|b| self.improves(running, b, dendrites))
        {
            self.state.set_best = Some(running);
            self.state.last_improvement = epoch;
        }
        if improved {
            self.state.best = Some(BestScore {
                score: running,
                epoch,
                dendrites,
            });
            self.state.set_improved = true;
            self.state.retries = 0;
            self.state.last_improvement = epoch;
        }
        // the plateau schedule rests while a learning-rate trial decides the rate
        if self.state.trial.is_none() {
            if let (Some(config), Some(lr)) = (&self.config.lr, &mut self.state.lr) {
                lr.step(config, self.config.maximize, running);
                opt.set_lr(lr.lr)?;
            }
        }
        // saved before a trial may load another checkpoint
        if improved {
            self.save_point(model, opt, "best")?;
        }
        if let Some(trial) = self.state.trial.clone() {
            return self.trial_epoch(trial, running, improved, model, opt);
        }

        let in_phase = epoch + 1 - self.state.phase_start;
        if let Some(cap) = self.config.capacity_test {
            if dendrites >= cap {
                return self.complete(model, opt, "capacity test done", false);
            }
            return self.start_dendrites(model, opt, "capacity test");
        }
        if in_phase <= self.config.grace_epochs {
            return Ok(Step::Continue { improved });
        }
        let due = self.neuron_phase_over(epoch, in_phase);
        if !due {
            return Ok(Step::Continue { improved });
        }
        let best_dendrites = self.state.best.as_ref().map_or(0, |b| b.dendrites);
        if dendrites > best_dendrites && !self.state.set_improved && !self.config.keep_all_dendrites
        {
            self.state.retries += 1;
            if self.state.retries > self.config.max_retries {
                return self.complete(model, opt, "dendrites stopped helping", true);
            }
            self.rollback(model, opt)?;
            return self.start_dendrites(model, opt, "retry: the last dendrites did not help");
        }
        if dendrites >= self.config.max_dendrites {
            let load_best = !self.config.keep_all_dendrites;
            return self.complete(model, opt, "maximum dendrites reached", load_best);
        }
        if !self.config.keep_all_dendrites {
            self.rollback(model, opt)?;
        }
        self.start_dendrites(model, opt, "neuron phase plateaued")
    }

    /// Whether the switch mode ends the neuron phase at `epoch`, its `in_phase`-th call.
    fn neuron_phase_over(&self, epoch: usize, in_phase: usize) -> bool {
        match self.config.switch {
            SwitchMode::Plateau { patience } => {
                let since = self
                    .state
                    .last_improvement
                    .max(self.state.phase_start + self.config.grace_epochs);
                epoch + 1 - since > patience
            }
            SwitchMode::EveryN { first, then } => {
                let length = if self.state.first_neuron_phase.is_none() {
                    first
                } else {
                    then
                };
                in_phase >= length
            }
            SwitchMode::EveryEpoch => true,
            SwitchMode::Never => false,
        }
    }

    pub(super) fn trial_epoch<M: DendriticModel>(
        &mut self,
        mut trial: Trial,
        running: f64,
        improved: bool,
        model: &mut M,
        opt: &mut OptimizerFor<M>,
    ) -> Result<Step> {
        let LrRestart::Trial { epochs, decays } = self.config.lr_restart else {
            self.state.trial = None;
            return Ok(Step::Continue { improved });
        };
        let epoch = self.state.epoch;
        if trial.best.is_none_or(|b| self.better(running, b)) {
            trial.best = Some(running);
        }
        if epoch + 1 - trial.start < epochs {
            self.state.trial = Some(trial);
            return Ok(Step::Continue { improved });
        }
        if trial.stage == 0 {
            // first rate tried: keep its end, go back to the start, try the decayed rate.
            self.state.trial = Some(trial.clone());
            self.save_point(model, opt, "trial_first")?;
            self.load_point(model, opt, "trial_start", LoadTracker::Nothing)?;
            let lr = self.restart_lr(decays);
            opt.set_lr(lr)?;
            self.state.trial = Some(Trial {
                stage: 1,
                start: epoch + 1,
                first_best: trial.best,
                best: None,
            });
            self.state.recent.clear();
            return Ok(Step::Restructured);
        }
        self.state.trial = None;
        let first_wins = match (trial.first_best, trial.best) {
            (Some(a), Some(b)) => !self.better(b, a),
            _ => false,
        };
        if first_wins {
            self.load_point(model, opt, "trial_first", LoadTracker::LearningRate)?;
            if let Some(lr) = &self.state.lr {
                opt.set_lr(lr.lr)?;
            }
            self.state.recent.clear();
            return Ok(Step::Restructured);
        }
        Ok(Step::Continue { improved })
    }

    pub(super) fn dendrite_epoch<M: DendriticModel>(
        &mut self,
        model: &mut M,
        opt: &mut OptimizerFor<M>,
    ) -> Result<Step> {
        let epoch = self.state.epoch;
        let reports = model.correlation_scores();
        let correlation = if reports.is_empty() {
            0.0
        } else {
            reports.iter().map(|(_, r)| r.best_score).sum::<f64>() / reports.len() as f64
        };
        if correlation > self.state.correlation_best {
            self.state.correlation_best = correlation;
            self.state.correlation_last_improvement = epoch;
        }
        let in_phase = epoch + 1 - self.state.phase_start;
        let stopped = match self.config.switch {
            SwitchMode::EveryN { then, .. } => in_phase >= then,
            SwitchMode::EveryEpoch => true,
            _ => epoch - self.state.correlation_last_improvement >= self.config.dendrite_patience,
        } || self.config.capacity_test.is_some();
        let capped = self.phase_cap().filter(|cap| in_phase >= *cap);
        let due = stopped || capped.is_some();
        // layers without a snapshot, and whether each is past its warm-up
        let mut waiting = Vec::new();
        model.visit_layers("", &mut |path, l| {
            if !l.has_snapshot() {
                let batches = l.correlation().map_or(0, |r| r.batches);
                waiting.push((
                    path.to_string(),
                    batches > l.config().correlation.warmup_batches,
                ));
            }
        });
        if !due {
            return Ok(Step::Continue { improved: false });
        }
        if !waiting.is_empty() {
            return self.wait_for_snapshot(model, opt, &waiting, &reports);
        }
        let ended = match capped {
            Some(cap) if !stopped => format!("the dendrite phase reached its cap of {cap} epochs"),
            _ => "candidates stopped improving".into(),
        };
        let reason = accept_reason(&ended, &reports);
        model.accept_dendrites()?;
        self.new_set(model, opt, &reason)
    }

    /// The most epochs a dendrite phase may take: `max_dendrite_epochs`, and the length of the
    /// first neuron phase with `cap_dendrite_phase`; the smaller of the two.
    fn phase_cap(&self) -> Option<usize> {
        let first = self
            .state
            .first_neuron_phase
            .filter(|_| self.config.cap_dendrite_phase);
        match (self.config.max_dendrite_epochs, first) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// A dendrite phase due to end whose candidates in `waiting` (with whether each is past
    /// its warm-up) have no snapshot yet: the phase goes on, with a warning that names them.
    /// Once every one of them is past its warm-up, it waits at most `dendrite_patience` more
    /// epochs; then the candidates are dropped and the run completes with the best model (a
    /// candidate whose correlation never beat zero by the margins will not help).
    fn wait_for_snapshot<M: DendriticModel>(
        &mut self,
        model: &mut M,
        opt: &mut OptimizerFor<M>,
        waiting: &[(String, bool)],
        reports: &[(String, CorrelationReport)],
    ) -> Result<Step> {
        let warm = waiting.iter().all(|(_, warm)| *warm);
        if warm {
            self.state.waiting_for_snapshot += 1;
        }
        let detail: Vec<String> = waiting
            .iter()
            .map(|(path, _)| {
                let report = reports.iter().find(|(p, _)| p == path).map(|(_, r)| r);
                report.map_or_else(
                    || format!("`{path}`"),
                    |r| {
                        format!(
                            "`{path}` ({} batches, correlation {:.4})",
                            r.batches, r.score
                        )
                    },
                )
            })
            .collect();
        let detail = detail.join(", ");
        if !warm {
            tracing::info!(
                target: "perforated",
                "dendrite phase due to end; candidates still in warm-up \
                 (`CorrelationConfig::warmup_batches`) in {detail}: no snapshot to accept yet"
            );
            return Ok(Step::Continue { improved: false });
        }
        if self.state.waiting_for_snapshot <= self.config.dendrite_patience {
            tracing::warn!(
                target: "perforated",
                "dendrite phase due to end, but no candidate snapshot to accept in {detail}: \
                 their correlation has not beaten zero by the margins \
                 (`CorrelationConfig::absolute_margin`); waiting {} more epoch(s)",
                self.config.dendrite_patience + 1 - self.state.waiting_for_snapshot
            );
            return Ok(Step::Continue { improved: false });
        }
        model.discard_candidates()?;
        let reason = format!(
            "no candidate snapshot in {detail} after {} epochs past warm-up: the candidates \
             learned nothing to accept",
            self.config.dendrite_patience
        );
        tracing::warn!(target: "perforated", "{reason}");
        self.switch_to(Phase::Neuron, max_dendrites(model), &reason);
        self.complete(model, opt, &reason, true)
    }

    /// After a new set of dendrites joined the network (accepted candidates, or gradient
    /// dendrites just added): the rate restarts by [`LrRestart`], a neuron phase begins, and
    /// the set has not helped yet.
    fn new_set<M: DendriticModel>(
        &mut self,
        model: &mut M,
        opt: &mut OptimizerFor<M>,
        reason: &str,
    ) -> Result<Step> {
        let epoch = self.state.epoch;
        let lr = match self.config.lr_restart {
            LrRestart::Initial => self.restart_lr(0),
            LrRestart::Decayed { decays } => self.restart_lr(decays),
            LrRestart::Trial { .. } => {
                self.state.trial = Some(Trial {
                    stage: 0,
                    start: epoch + 1,
                    first_best: None,
                    best: None,
                });
                self.restart_lr(0)
            }
        };
        opt.set_lr(lr)?;
        self.state.set_improved = false;
        self.switch_to(Phase::Neuron, max_dendrites(model), reason);
        self.state.last_improvement = epoch + 1;
        self.save_point(
            model,
            opt,
            &format!("switch_{:03}", self.state.switches.len()),
        )?;
        if self.state.trial.is_some() {
            self.save_point(model, opt, "trial_start")?;
        }
        Ok(Step::Restructured)
    }

    /// The initial rate decayed `decays` times; resets the plateau scheduler there.
    pub(super) fn restart_lr(&mut self, decays: u32) -> f64 {
        let initial = self.state.initial_lr.unwrap_or(1e-3);
        let factor = self.config.lr.as_ref().map_or(1.0, |c| c.factor);
        let min = self.config.lr.as_ref().map_or(0.0, |c| c.min_lr);
        // powf: every u32 is exact as an f64 (`as i32` would turn u32::MAX into -1)
        let lr = (initial * factor.powf(f64::from(decays))).max(min.min(initial));
        if self.config.lr.is_some() {
            self.state.lr = Some(PlateauState::new(lr));
        }
        lr
    }

    pub(super) fn record_architecture(&mut self, record: &EpochRecord, running: f64) {
        let better = |a: f64, b: f64| if self.config.maximize { a > b } else { a < b };
        let entry = ArchitectureRecord {
            dendrites: record.dendrites,
            params: record.params,
            val: running,
            test: record.test,
            epoch: record.epoch,
        };
        match self
            .state
            .architectures
            .iter_mut()
            .find(|a| a.dendrites == record.dendrites)
        {
            Some(a) if better(running, a.val) => *a = entry,
            Some(_) => {}
            None => self.state.architectures.push(entry),
        }
    }

    pub(super) fn switch_to(&mut self, to: Phase, dendrites: usize, reason: &str) {
        // the first switch ends the first neuron phase (into a dendrite phase, or, with
        // gradient dendrites, into the next neuron phase)
        if self.state.first_neuron_phase.is_none() {
            self.state.first_neuron_phase = Some(self.state.epoch + 1 - self.state.phase_start);
        }
        if to == Phase::Neuron {
            self.state.set_best = None;
        }
        self.state.switches.push(SwitchRecord {
            epoch: self.state.epoch,
            to,
            dendrites,
            reason: reason.to_string(),
        });
        self.state.phase = to;
        self.state.phase_start = self.state.epoch + 1;
        self.state.recent.clear();
    }

    /// A new set of dendrites: with correlation learning, candidates and a dendrite phase;
    /// with gradient learning, a dendrite added to every layer (its output weights zero, so the
    /// output does not move) that trains with the network from the next epoch, with no
    /// dendrite phase (as the Python library's gradient dendrites).
    pub(super) fn start_dendrites<M: DendriticModel>(
        &mut self,
        model: &mut M,
        opt: &mut OptimizerFor<M>,
        reason: &str,
    ) -> Result<Step> {
        if gradient_learning(model)? {
            let next = max_dendrites(model) + 1;
            model.visit_layers_mut("", &mut |path, l| {
                l.grow_dendrites(next).map_err(|e| e.in_layer(path))
            })?;
            let reason = format!("{reason}; dendrites added, they train with the network");
            return self.new_set(model, opt, &reason);
        }
        model.start_dendrite_phase()?;
        // candidates train at the initial rate times `candidate_lr_factor`
        let initial = self.state.initial_lr.unwrap_or(opt.lr());
        opt.set_lr(initial * self.config.candidate_lr_factor)?;
        self.state.correlation_best = 0.0;
        self.state.correlation_last_improvement = self.state.epoch + 1;
        self.state.waiting_for_snapshot = 0;
        self.switch_to(Phase::Dendrite, max_dendrites(model), reason);
        self.save_point(
            model,
            opt,
            &format!("switch_{:03}", self.state.switches.len()),
        )?;
        Ok(Step::Restructured)
    }

    pub(super) fn complete<M: DendriticModel>(
        &mut self,
        model: &mut M,
        opt: &mut OptimizerFor<M>,
        reason: &str,
        load_best: bool,
    ) -> Result<Step> {
        if load_best && self.state.best.is_some() {
            self.rollback(model, opt)?;
        }
        self.state.complete = true;
        tracing::info!(target: "perforated", "training complete: {reason}");
        Ok(Step::Complete)
    }

    /// Loads the best checkpoint: weights, structure, optimizer state and learning-rate
    /// schedule (history is kept).
    pub(super) fn rollback<M: DendriticModel>(
        &mut self,
        model: &mut M,
        opt: &mut OptimizerFor<M>,
    ) -> Result<()> {
        if self.state.best.is_none() {
            return Ok(());
        }
        self.load_point(model, opt, "best", LoadTracker::LearningRate)?;
        if let Some(lr) = &self.state.lr {
            opt.set_lr(lr.lr)?;
        }
        Ok(())
    }
}

/// Below this best correlation a candidate can barely help its neurons: something is
/// probably wrong (the Python library's health check uses the same bound).
pub(super) const LOW_CORRELATION: f64 = 0.005;

/// The layers whose candidate ends its phase below [`LOW_CORRELATION`], with their scores.
fn low_correlations(reports: &[(String, CorrelationReport)]) -> Vec<(&str, f64)> {
    reports
        .iter()
        .filter(|(_, r)| r.best_score < LOW_CORRELATION)
        .map(|(p, r)| (p.as_str(), r.best_score))
        .collect()
}

/// The reason a dendrite phase ends (`ended`: why it ended), with the health check: a warning
/// event for every layer whose candidate stayed below [`LOW_CORRELATION`], named in the reason
/// too (so `switches.csv` and the per-epoch line carry it).
fn accept_reason(ended: &str, reports: &[(String, CorrelationReport)]) -> String {
    let low = low_correlations(reports);
    for (path, score) in &low {
        tracing::warn!(
            target: "perforated",
            "layer `{path}`: its candidate's best correlation is {score:.4}, below \
             {LOW_CORRELATION}: the new dendrite can barely help. Something is probably wrong: \
             check the layer's neuron axis (`dims`) and its processor, or convert it together \
             with the layers around it"
        );
    }
    if low.is_empty() {
        return ended.into();
    }
    let named: Vec<String> = low.iter().map(|(p, s)| format!("`{p}` {s:.4}")).collect();
    format!(
        "{ended}; correlation below {LOW_CORRELATION} in {} (see the warning)",
        named.join(", ")
    )
}

/// Whether the model's dendrites learn by gradient (every layer); correlation learning
/// otherwise.
///
/// # Errors
/// [`Error::Config`] when layers mix the two modes: the tracker runs one schedule.
fn gradient_learning<M: DendriticModel + ?Sized>(model: &M) -> Result<bool> {
    let (mut gradient, mut correlation) = (0, 0);
    model.visit_layers("", &mut |_, l| match l.config().learning {
        DendriteLearning::Gradient => gradient += 1,
        DendriteLearning::Correlation => correlation += 1,
    });
    if gradient > 0 && correlation > 0 {
        return Err(Error::Config(format!(
            "{gradient} layer(s) learn dendrites by gradient and {correlation} by correlation: \
             the tracker runs one schedule, so give every layer the same `DendriteLearning`"
        )));
    }
    Ok(gradient > 0)
}

/// Dendrites per layer (the most of any layer).
pub(super) fn max_dendrites<M: DendriticModel + ?Sized>(model: &M) -> usize {
    model
        .layers()
        .iter()
        .map(|l| l.dendrites)
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(best_score: f64) -> CorrelationReport {
        CorrelationReport {
            score: best_score,
            per_neuron: vec![best_score],
            mean_error: vec![0.0],
            best_score,
            batches: 10,
        }
    }

    #[test]
    fn the_health_check_names_layers_below_the_bound_only() {
        let reports = vec![
            ("fc1".to_string(), report(0.0049)),
            ("fc2".to_string(), report(0.0051)),
            ("out".to_string(), report(0.0)),
        ];
        assert_eq!(
            low_correlations(&reports),
            vec![("fc1", 0.0049), ("out", 0.0)]
        );
        let reason = accept_reason("candidates stopped improving", &reports);
        assert!(
            reason.starts_with("candidates stopped improving; correlation below 0.005 in")
                && reason.contains("`fc1` 0.0049")
                && reason.contains("`out` 0.0000"),
            "{reason}"
        );
        assert!(!reason.contains("fc2"), "{reason}");
        assert_eq!(
            accept_reason(
                "the dendrite phase reached its cap of 3 epochs",
                &reports[1..2]
            ),
            "the dendrite phase reached its cap of 3 epochs"
        );
    }
}
