//! A generator and a discriminator, converted together as one pair, trained as a GAN with
//! dendrites.
//!
//! Data: a ring of eight Gaussians in the plane (radius 2, standard deviation 0.05). Each
//! epoch runs 100 alternating steps (discriminator, then generator, batch 64). The tracker
//! watches a validation distance between 1,000 points generated from fixed noise and 1,000
//! held-out real points (the energy distance, minimised), switches both networks between neuron and dendrite phases
//! together, rolls back to the best pair and writes its files under `runs/gan_pair/`.
//!
//! ```text
//! cargo run --release --example gan_pair -- [--epochs 200] [--seeds 1] [--out runs/gan_pair]
//! ```

mod common;

use common::args::Args;
use perforated::optim::{OptimizerFor, Rule};
use perforated::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const NOISE: usize = 4;
const BATCH: usize = 64;
const STEPS: usize = 100;

#[perforated]
struct Generator {
    fc1: Linear<NOISE, 32>,
    act1: ReLU,
    fc2: Linear<32, 32>,
    act2: ReLU,
    out: Linear<32, 2>,
}

#[perforated]
struct Discriminator {
    fc1: Linear<2, 32>,
    act1: ReLU,
    fc2: Linear<32, 32>,
    act2: ReLU,
    out: Linear<32, 1>,
}

/// The pair: one set of phases, one optimizer, one tracker for both.
#[perforated(custom_forward)]
struct Pair {
    generator: Generator,
    discriminator: Discriminator,
}

/// `n` points from the ring of eight Gaussians.
fn real_points(n: usize, rng: &mut StdRng) -> Vec<[f32; 2]> {
    (0..n)
        .map(|_| {
            let k = rng.gen_range(0..8) as f32;
            let angle = k * std::f32::consts::TAU / 8.0;
            let noise = |rng: &mut StdRng| {
                let (u, v): (f32, f32) = (rng.gen::<f32>().max(1e-7), rng.gen());
                0.05 * (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
            };
            [
                2.0 * angle.cos() + noise(rng),
                2.0 * angle.sin() + noise(rng),
            ]
        })
        .collect()
}

fn tensor(dev: &AutoDevice, points: &[[f32; 2]]) -> Tensor<(usize, Const<2>), f32, AutoDevice> {
    dev.tensor_from_vec(
        points.iter().flatten().copied().collect(),
        (points.len(), Const),
    )
}

/// Energy distance between two point sets: 2·E|x−y| − E|x−x'| − E|y−y'| (0 for equal
/// distributions).
fn energy_distance(a: &[[f32; 2]], b: &[[f32; 2]]) -> f64 {
    let mean = |p: &[[f32; 2]], q: &[[f32; 2]]| {
        let mut s = 0.0f64;
        for x in p {
            for y in q {
                s += f64::from((x[0] - y[0]).powi(2) + (x[1] - y[1]).powi(2)).sqrt();
            }
        }
        s / (p.len() * q.len()) as f64
    };
    2.0 * mean(a, b) - mean(a, a) - mean(b, b)
}

/// One epoch of `STEPS` alternating steps; returns the discriminator's summed loss.
fn gan_epoch(
    pair: &mut Pair<f32, AutoDevice>,
    opt: &mut OptimizerFor<Pair<f32, AutoDevice>>,
    dev: &AutoDevice,
    rng: &mut StdRng,
    labels: &Tensor<(usize, Const<1>), f32, AutoDevice>,
    ones: &Tensor<(usize, Const<1>), f32, AutoDevice>,
) -> Result<f32, Box<dyn std::error::Error>> {
    let mut d_loss = 0.0;
    for _ in 0..STEPS {
        // discriminator: real points are 1, generated ones 0; the generator runs frozen
        let z: Tensor<(usize, Const<NOISE>), f32, AutoDevice> =
            dev.sample_normal_like(&(BATCH, Const));
        let fake = pair.generator.forward(z);
        let real = tensor(dev, &real_points(BATCH, rng));
        // one batch, one forward pass: real and generated points together
        let grads = pair.discriminator.alloc_grads()?;
        let both = (real.traced(grads), fake).concat_along(Axis::<0>);
        let logits = pair.discriminator.forward_mut(both);
        let loss = binary_cross_entropy_with_logits_loss(logits, labels.clone());
        d_loss += loss.array();
        opt.step_at(&mut pair.discriminator, "discriminator", loss.backward())?;

        // generator: make the (frozen) discriminator say 1
        let z: Tensor<(usize, Const<NOISE>), f32, AutoDevice> =
            dev.sample_normal_like(&(BATCH, Const));
        let grads = pair.generator.alloc_grads()?;
        let fake = pair.generator.forward_mut(z.traced(grads));
        let loss =
            binary_cross_entropy_with_logits_loss(pair.discriminator.forward(fake), ones.clone());
        opt.step_at(&mut pair.generator, "generator", loss.backward())?;
    }
    Ok(d_loss)
}

fn run(seed: u64, args: &Args) -> Result<(f64, usize, usize, f64), Box<dyn std::error::Error>> {
    let dev = AutoDevice::seed_from_u64(seed);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut pair = Pair::<f32, AutoDevice>::build(&dev)?;
    let validation = real_points(1000, &mut StdRng::seed_from_u64(1_000 + seed));
    // the same noise every epoch: in a dendrite phase the score must not move at all
    let z_validation: Tensor<(usize, Const<NOISE>), f32, AutoDevice> =
        dev.sample_normal_like(&(1000, Const));
    let config = TrackerConfig::new(args.out.join(format!("seed{seed}")))
        .minimize()
        .switch(SwitchMode::Plateau { patience: 8 })
        .dendrite_patience(5)
        .max_dendrites(2)
        // a GAN's score is noisy: a second fresh set before giving up
        .max_retries(2)
        .graph_every(5);
    let mut tracker = Tracker::new(config)?;
    let mut opt = tracker.optimizer(Rule::Adam(AdamConfig {
        lr: 1e-3,
        betas: [0.5, 0.999],
        ..Default::default()
    }));
    let ones: Tensor<(usize, Const<1>), f32, AutoDevice> = dev.ones_like(&(BATCH, Const));
    let zeros: Tensor<(usize, Const<1>), f32, AutoDevice> = dev.zeros_like(&(BATCH, Const));
    let labels = (ones.clone(), zeros).concat_along(Axis::<0>);
    let start = std::time::Instant::now();
    println!("| epoch | phase | dendrites | energy distance | best | what the tracker did |");
    println!("|---:|---|---:|---:|---:|---|");
    for epoch in 0..args.epochs {
        let d_loss = gan_epoch(&mut pair, &mut opt, &dev, &mut rng, &labels, &ones)?;
        let generated: Vec<[f32; 2]> = pair
            .generator
            .forward(z_validation.clone())
            .as_vec()
            .chunks(2)
            .map(|p| [p[0], p[1]])
            .collect();
        let distance = energy_distance(&generated, &validation);
        tracker.add_train_loss(f64::from(d_loss) / STEPS as f64)?;
        let phase = pair.phase();
        let step = tracker.add_validation_score(distance, &mut pair, &mut opt)?;
        if epoch % 10 == 0 || step != (Step::Continue { improved: false }) {
            let best = tracker.state().best.as_ref().map_or(f64::NAN, |b| b.score);
            // what the tracker did, and why (a switch's reason is in switches.csv too)
            let what = match step {
                Step::Restructured => tracker.state().switches.last().map_or_else(
                    || "rolled back".to_string(),
                    |s| format!("to the {} phase: {}", s.to, s.reason),
                ),
                Step::Complete => "complete".to_string(),
                Step::Continue { improved: true } => "new best".to_string(),
                Step::Continue { improved: false } => String::new(),
            };
            println!(
                "| {epoch} | {phase} | {} | {distance:.4} | {best:.4} | {what} |",
                pair.dendrite_count() / pair.layers().len().max(1),
            );
        }
        if step == Step::Complete {
            break;
        }
    }
    let best = tracker.state().best.clone().expect("at least one epoch");
    Ok((
        best.score,
        best.dendrites,
        tracker.state().history.len(),
        start.elapsed().as_secs_f64(),
    ))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse("gan_pair", 1, 200);
    println!("GAN on a ring of 8 Gaussians; generator and discriminator converted together");
    for seed in 0..args.seeds as u64 {
        let (distance, dendrites, epochs, seconds) = run(seed, &args)?;
        println!(
            "seed {seed}: best energy distance {distance:.4} with {dendrites} dendrite(s) per layer after {epochs} epochs, {seconds:.1} s; tracker files in {}",
            args.out.join(format!("seed{seed}")).display()
        );
    }
    Ok(())
}
