//! The training loop the digits examples share: the tracker deciding on validation loss, test
//! accuracy read at the best validation epoch, one table row per model.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use perforated::optim::Rule;
use perforated::prelude::*;
use perforated::tracker::LrRestart;
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::args::Args;
use super::digits::{Dataset, Split, CLASSES, PIXELS};

/// Images as the loader gives them, and the logits the models return.
pub type Images<T = NoneTape, const P: usize = PIXELS> =
    Tensor<(usize, Const<P>), f32, AutoDevice, T>;
pub type Logits<T = NoneTape> = Tensor<(usize, Const<CLASSES>), f32, AutoDevice, T>;

/// One finished run.
pub struct Outcome {
    pub test: f64,
    pub params: usize,
    pub dendrites: usize,
    pub epochs: usize,
    pub seconds: f64,
    /// The tracker ended the run (`Step::Complete`), not the epoch cap.
    pub complete: bool,
}

const BATCH: usize = 32;

/// What one run trains on and how.
pub struct Setup<'a, const P: usize = PIXELS> {
    pub digits: &'a Dataset<P>,
    pub dev: &'a AutoDevice,
    pub seed: u64,
    pub args: &'a Args,
    /// Name of the run's tracker directory (the seed is appended).
    pub name: &'a str,
    /// `None`: the tracker only records (no switching) and the run stops after
    /// `plain_patience` epochs without a better validation loss; `Some(n)`: up to `n`
    /// dendrites per layer.
    pub dendrites: Option<usize>,
    /// Epochs without a better validation loss before a plain run (no dendrites) stops.
    pub plain_patience: usize,
    /// Epochs a dendrite phase waits for a candidate to improve before accepting it.
    pub candidate_patience: usize,
    /// Epochs without a better validation loss before a neuron phase ends.
    pub switch_patience: usize,
    /// Dendrite phases last at most this many epochs.
    pub max_dendrite_epochs: Option<usize>,
    /// Candidates train at the initial learning rate times this.
    pub candidate_lr_factor: f64,
    /// The learning rate a neuron phase starts from after dendrites were added.
    pub lr_restart: LrRestart,
}

impl<'a, const P: usize> Setup<'a, P> {
    /// A run with the tracker's defaults: candidates wait 10 epochs, and the learning rate
    /// restarts from its initial value after each restructure.
    pub fn new(
        digits: &'a Dataset<P>,
        dev: &'a AutoDevice,
        seed: u64,
        args: &'a Args,
        name: &'a str,
        dendrites: Option<usize>,
    ) -> Self {
        Self {
            digits,
            dev,
            seed,
            args,
            name,
            dendrites,
            plain_patience: 40,
            candidate_patience: 10,
            switch_patience: 15,
            max_dendrite_epochs: None,
            candidate_lr_factor: 1.0,
            lr_restart: LrRestart::Initial,
        }
    }

    /// Short dendrite phases: candidates at three times the initial rate, accepted 5 epochs
    /// past their best correlation or after 20 epochs. On `digits_mlp` over 30 seeds the
    /// median phase went from 88 epochs (patience 20) to 20 at an accuracy within the seed
    /// spreads (`docs/dendrite-phases.md`).
    pub fn short_dendrite_phases(self) -> Self {
        Self {
            candidate_patience: 5,
            candidate_lr_factor: 3.0,
            max_dendrite_epochs: Some(20),
            ..self
        }
    }
}

/// The function each model's rows are built with.
pub type RowFn<'a> = &'a (dyn Fn(u64) -> Result<Outcome, perforated::Error> + Sync);

/// The tracker's settings for a run of `setup`.
fn tracker_config<const P: usize>(setup: &Setup<'_, P>) -> TrackerConfig {
    let config = TrackerConfig::new(
        setup
            .args
            .out
            .join(format!("{}-seed{}", setup.name, setup.seed)),
    )
    // the validation loss is smoother than the accuracy of 360 images
    .minimize()
    .switch(match setup.dendrites {
        Some(_) => SwitchMode::Plateau {
            patience: setup.switch_patience,
        },
        None => SwitchMode::Never,
    })
    .dendrite_patience(setup.candidate_patience)
    .candidate_lr_factor(setup.candidate_lr_factor)
    .lr_restart(setup.lr_restart.clone())
    .max_dendrites(setup.dendrites.unwrap_or(0))
    .graph_every(10);
    TrackerConfig {
        max_dendrite_epochs: setup.max_dendrite_epochs,
        ..config
    }
}

/// Trains `model` on the digits with the tracker (see [`Setup`]).
pub fn run<M, const P: usize>(
    setup: &Setup<'_, P>,
    model: &mut M,
    train: impl Fn(&mut M, Images<OwnedTape<f32, AutoDevice>, P>) -> Logits<OwnedTape<f32, AutoDevice>>,
    infer: impl Fn(&M, Images<NoneTape, P>) -> Logits,
) -> Result<Outcome, perforated::Error>
where
    M: DendriticModel<Dtype = f32, Device = AutoDevice>,
{
    let Setup {
        digits,
        dev,
        seed,
        args,
        name,
        dendrites,
        plain_patience,
        ..
    } = *setup;
    let mut rng = StdRng::seed_from_u64(seed);
    let config = tracker_config(setup);
    let mut tracker = Tracker::new(config)?;
    let mut opt = tracker.optimizer(Rule::Adam(AdamConfig {
        lr: 1e-2,
        ..Default::default()
    }));
    let start = Instant::now();
    let mut since_best = 0;
    let evaluate = |model: &M, split: &Split<P>| {
        let (x, y) = split.all::<f32, _>(dev);
        let logits = infer(model, x);
        let loss = f64::from(cross_entropy_with_logits_loss(logits.clone(), y).array());
        (loss, split.accuracy(&logits))
    };
    for _ in 0..args.epochs {
        let mut loss_sum = 0.0;
        let batches = digits.train.batches(BATCH, &mut rng);
        let label = format!("{name} seed {seed} epoch {}", tracker.state().epoch);
        let progress = args.progress(&label, batches.len());
        for rows in &batches {
            let (x, y) = digits.train.tensors::<f32, _>(dev, rows);
            let grads = model.alloc_grads()?;
            let loss = cross_entropy_with_logits_loss(train(model, x.traced(grads)), y);
            loss_sum += f64::from(loss.array());
            opt.step(model, loss.backward())?;
            progress.inc(1);
        }
        progress.finish_and_clear();
        let (val_loss, _) = evaluate(model, &digits.val);
        let (_, test) = evaluate(model, &digits.test);
        tracker.add_test_score(test)?;
        tracker.add_train_loss(loss_sum / batches.len() as f64)?;
        match tracker.add_validation_score(val_loss, model, &mut opt)? {
            Step::Complete => break,
            Step::Continue { improved: true } | Step::Restructured => since_best = 0,
            Step::Continue { improved: false } => since_best += 1,
        }
        if dendrites.is_none() && since_best >= plain_patience {
            break;
        }
    }
    let state = tracker.state();
    let best = state.best.clone().expect("at least one epoch");
    let at_best = &state.history[best.epoch];
    Ok(Outcome {
        test: at_best.test.unwrap_or(f64::NAN),
        params: at_best.params,
        dendrites: at_best.dendrites,
        epochs: state.history.len(),
        seconds: start.elapsed().as_secs_f64(),
        complete: state.complete,
    })
}

/// Prints the table header.
fn header() {
    println!("| model | test accuracy % (mean ± sd) | params | dendrites | epochs | seconds |");
    println!("|---|---:|---:|---:|---:|---:|");
}

/// One printed row: the mean and spread over seeds of its runs.
pub struct Row {
    pub name: String,
    /// Test accuracy, percent: mean and standard deviation over seeds.
    pub mean: f64,
    pub sd: f64,
    pub params: f64,
    /// Runs the tracker ended, of `runs`.
    pub complete: usize,
    pub runs: usize,
}

/// Prints one row: mean and spread over seeds.
fn row(name: &str, outcomes: &[Outcome]) -> Row {
    let n = outcomes.len() as f64;
    let mean = outcomes.iter().map(|o| o.test).sum::<f64>() / n;
    let spread = (outcomes
        .iter()
        .map(|o| (o.test - mean).powi(2))
        .sum::<f64>()
        / n)
        .sqrt();
    let avg = |f: &dyn Fn(&Outcome) -> f64| outcomes.iter().map(f).sum::<f64>() / n;
    println!(
        "| {name} | {:.2} ± {:.2} | {:.0} | {:.1} | {:.0} | {:.1} |",
        100.0 * mean,
        100.0 * spread,
        avg(&|o| o.params as f64),
        avg(&|o| o.dendrites as f64),
        avg(&|o| o.epochs as f64),
        avg(&|o| o.seconds),
    );
    Row {
        name: name.to_string(),
        mean: 100.0 * mean,
        sd: 100.0 * spread,
        params: avg(&|o| o.params as f64),
        complete: outcomes.iter().filter(|o| o.complete).count(),
        runs: outcomes.len(),
    }
}

/// Runs every row over `args.seeds` seeds, `args.jobs` runs at a time, and prints the table;
/// returns the rows.
///
/// # Errors
/// The first run's error, in table order.
pub fn table(args: &Args, rows: &[(&str, RowFn<'_>)]) -> Result<Vec<Row>, perforated::Error> {
    let runs: Vec<(usize, u64)> = (0..rows.len())
        .flat_map(|r| (0..args.seeds as u64).map(move |seed| (r, seed)))
        .collect();
    let next = AtomicUsize::new(0);
    let done: Mutex<Vec<Option<Result<Outcome, perforated::Error>>>> =
        Mutex::new(runs.iter().map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..args.jobs.clamp(1, runs.len().max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&(row, seed)) = runs.get(i) else {
                    break;
                };
                let outcome = (rows[row].1)(seed);
                done.lock().unwrap_or_else(PoisonError::into_inner)[i] = Some(outcome);
            });
        }
    });
    let mut done = done
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner)
        .into_iter();
    header();
    let mut out = Vec::new();
    for (name, _) in rows {
        let outcomes = done
            .by_ref()
            .take(args.seeds)
            .map(|o| o.expect("every run finished"))
            .collect::<Result<Vec<_>, _>>()?;
        out.push(row(name, &outcomes));
    }
    Ok(out)
}

/// What the table showed about dendrites on `plain`: the gain of `dendritic` (the same
/// network with dendrites) against the seed spread, and how the dendritic runs ended.
pub fn verdict(plain: &Row, dendritic: &Row) -> String {
    let gain = dendritic.mean - plain.mean;
    // the two rows' spreads together: a gain smaller than that could be seed luck
    let spread = plain.sd + dendritic.sd;
    let shown = if dendritic.runs < 2 {
        format!(
            "{gain:+.2} points from dendrites over `{}` (one seed: no spread to judge it by)",
            plain.name
        )
    } else if gain > spread {
        format!(
            "dendrites add {gain:.2} points over `{}`, more than the two rows' seed spreads together ({spread:.2})",
            plain.name
        )
    } else if gain > 0.0 {
        format!(
            "dendrites add {gain:.2} points over `{}`, within the two rows' seed spreads together \
             ({spread:.2}): a gain these seeds cannot show",
            plain.name
        )
    } else {
        format!(
            "dendrites did not help `{}` here ({gain:+.2} points)",
            plain.name
        )
    };
    let ended = if dendritic.complete == dendritic.runs {
        "every dendritic run ended at `Complete`".to_string()
    } else {
        format!(
            "{} of {} dendritic runs ended at `Complete`, the others at the epoch cap \
             (`--epochs`), the tracker still trying",
            dendritic.complete, dendritic.runs
        )
    };
    format!("{shown}; {ended}")
}

/// What the table showed about compression: whether `narrow` with dendrites reaches `wide`
/// (plain) within its spread, and with what share of its parameters.
pub fn compression(narrow: &Row, wide: &Row) -> String {
    let share = 100.0 * narrow.params / wide.params;
    let gap = wide.mean - narrow.mean;
    if gap <= wide.sd + narrow.sd {
        format!(
            "`{}` matches `{}` within the seed spreads ({gap:+.2} points behind) with {share:.0}% \
             of its parameters",
            narrow.name, wide.name
        )
    } else {
        format!(
            "`{}` stays {gap:.2} points behind `{}` (more than the seed spreads) with {share:.0}% \
             of its parameters",
            narrow.name, wide.name
        )
    }
}
