//! Data-parallel throughput: samples per second of a 784-256-256-10 MLP (every layer
//! converted; cross-entropy, Adam, f32) trained by 1 and by 2 thread replicas
//! (`perforated::parallel::threads`), at global batch 256 and 1024, with 0 and 2 dendrites a
//! layer, in the neuron phase and in the dendrite phase. Each replica trains on its shard of
//! the same global batch; the optimizer step sums the gradients over the replicas.
//!
//! ```text
//! cargo bench --bench data_parallel
//! ```
//!
//! Threads: each replica's products run on rayon's global pool (all cores); set
//! `RAYON_NUM_THREADS` to change it.

#[path = "../examples/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::mlp::WideMlp;

use perforated::dfdx::tensor::Cpu;
use perforated::parallel;
use perforated::prelude::*;

/// Samples per second of `steps` training steps on `replicas` replicas (after 2 untimed).
fn samples_per_second(
    replicas: usize,
    batch: usize,
    dendrites: usize,
    dendrite_phase: bool,
    steps: usize,
) -> f64 {
    let times = parallel::threads(replicas, |r| {
        let dev = Cpu::seed_from_u64(0);
        let mut model = WideMlp::<f32, Cpu>::build(&dev)?;
        model.visit_layers_mut("", &mut |_, l| l.grow_dendrites(dendrites))?;
        if dendrite_phase {
            model.start_dendrite_phase()?;
        }
        r.broadcast_model(&mut model)?;
        let mut opt = DendriticOptimizer::adam(AdamConfig::default());
        let rows = r.shard(batch).len();
        let x: Tensor<(usize, Const<784>), f32, Cpu> = dev.sample_normal_like(&(rows, Const));
        let y: Tensor<(usize, Const<10>), f32, Cpu> =
            dev.sample_normal_like(&(rows, Const)).softmax::<Axis<1>>();
        let scale = r.loss_scale(batch) as f32;
        let mut step = || -> perforated::Result<()> {
            let grads = model.alloc_grads()?;
            let logits = model.forward_mut(x.trace(grads));
            let loss = cross_entropy_with_logits_loss(logits, y.clone()) * scale;
            opt.step(&mut model, loss.backward())
        };
        step()?;
        step()?;
        r.collective().barrier()?;
        let start = Instant::now();
        for _ in 0..steps {
            step()?;
        }
        Ok(start.elapsed())
    })
    .expect("replicas train");
    let slowest = times.into_iter().max().unwrap_or(Duration::ZERO);
    (batch * steps) as f64 / slowest.as_secs_f64()
}

/// Timed windows per configuration and replica count; the best counts (a shared machine's
/// slow periods only ever lower a window's rate).
const ROUNDS: usize = 7;

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let steps = |batch: usize| if quick { 1 } else { (16384 / batch).max(4) };
    println!(
        "784-256-256-10 MLP, f32, Adam; samples/s (best of {ROUNDS} windows of 16,384 samples, one and two replicas alternating); {} rayon threads",
        rayon::current_num_threads()
    );
    println!("| global batch | dendrites | phase | 1 replica | 2 replicas | speed-up |");
    println!("|---:|---:|---|---:|---:|---:|");
    for batch in [256, 1024] {
        for dendrites in [0, 2] {
            for dendrite_phase in [false, true] {
                let run = |replicas| {
                    samples_per_second(replicas, batch, dendrites, dendrite_phase, steps(batch))
                };
                // alternating, so that a slow period of the machine hits both sides
                let (mut one, mut two) = (0.0f64, 0.0f64);
                for _ in 0..if quick { 1 } else { ROUNDS } {
                    one = one.max(run(1));
                    two = two.max(run(2));
                }
                println!(
                    "| {batch} | {dendrites} | {} | {one:.0} | {two:.0} | {:.2} |",
                    if dendrite_phase { "dendrite" } else { "neuron" },
                    two / one
                );
            }
        }
    }
}
