//! Conv2d on a (32, 16, 28, 28) input with 32 3x3 filters, padding 1 (f32), on one thread and
//! on all threads:
//!
//! - forward + backward with the input gradient: the CPU kernel (im2col and matrix products)
//!   and the reference it is tested against (the `gather` unfold that other devices run);
//! - a training step (forward, backward, Adam): the bare layer with dfdx's own Adam, and the
//!   layer with 0, 1 and 3 dendrites (neuron phase, correlation mode) with pai-core's optimizer.
//!
//! - a training step of `fashion_cnn`'s 8-16 CNN (batch 32, 28x28, cross-entropy, Adam), with
//!   no dendrites and with one per layer.
//!
//! Each row is the median of 25 timed repetitions (after one untimed call): on a shared
//! machine single calls vary by tens of percent, and the median of many is what two versions
//! can be compared by. The ratio column divides by the bare layer's training step on the same
//! thread count.
//!
//! ```text
//! cargo bench --bench conv
//! ```

#[path = "../examples/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::cnn::Cnn;

use perforated::layers::Conv2d;
use perforated::prelude::*;

type Img<const C: usize, T = NoneTape> = Tensor<(usize, Const<C>, usize, usize), f32, Cpu, T>;
type Conv = Conv2d<16, 32, 3, f32, Cpu, 1, 1>;

/// The median of `reps` timed calls of `f` (after one untimed call).
fn median(mut f: impl FnMut(), reps: usize) -> Duration {
    f();
    let mut times: Vec<Duration> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort_unstable();
    times.get(reps / 2).copied().unwrap_or_default()
}

/// One training step of the CNN with `dendrites` per layer, timed.
fn cnn_step(dev: &Cpu, batch: usize, dendrites: usize, reps: usize) -> Duration {
    let mut model = Cnn::<8, 16, 784, f32, Cpu>::build(dev).expect("valid config");
    model
        .visit_layers_mut("", &mut |_, layer| layer.grow_dendrites(dendrites))
        .expect("neuron phase");
    let mut opt = DendriticOptimizer::adam(AdamConfig::default());
    let x: Img<1> = dev.sample_normal_like(&(batch, Const, 28, 28));
    let y: Tensor<(usize, Const<10>), f32, Cpu> =
        dev.sample_normal_like(&(batch, Const)).softmax::<Axis<1>>();
    median(
        || {
            let grads = model.alloc_grads().expect("gradients");
            let logits = model.forward_mut(x.trace(grads));
            let loss = cross_entropy_with_logits_loss(logits, y.clone());
            opt.step(&mut model, loss.backward()).expect("finite");
        },
        reps,
    )
}

/// The dendritic layer with `dendrites` accepted dendrites, and its optimizer.
fn dendritic(dev: &Cpu, dendrites: usize) -> (Dendritic<Conv>, DendriticOptimizer<f32, Cpu>) {
    let mut layer: Dendritic<Conv> =
        Dendritic::new(dev, Conv::build(dev), DendriteConfig::default()).expect("valid config");
    layer.grow_dendrites(dendrites).expect("neuron phase");
    (layer, DendriticOptimizer::adam(AdamConfig::default()))
}

/// The rows, timed on the calling thread's pool.
fn rows(batch: usize, reps: usize) -> Vec<(String, Duration)> {
    let dev = Cpu::seed_from_u64(0);
    let x: Img<16> = dev.sample_normal_like(&(batch, Const, 28, 28));
    let conv = Conv::build(&dev);
    let mut rows = vec![
        (
            "reference (gather unfold), forward + backward".to_string(),
            median(
                || {
                    let y = conv.try_forward_by_gather(x.leaky_trace()).expect("cpu");
                    let _ = y.sum::<Rank0, _>().backward();
                },
                reps,
            ),
        ),
        (
            "kernel (im2col + gemm), forward + backward".to_string(),
            median(
                || {
                    let _ = conv.forward(x.leaky_trace()).sum::<Rank0, _>().backward();
                },
                reps,
            ),
        ),
    ];
    let mut plain = Conv::build(&dev);
    let mut adam = perforated::dfdx::optim::Adam::new(&plain, AdamConfig::default());
    let mut grads = plain.alloc_grads();
    rows.push((
        "training step, bare layer, dfdx Adam".to_string(),
        median(
            || {
                plain.zero_grads(&mut grads);
                let y = plain.forward(x.trace(grads.clone()));
                let g = y.sum::<Rank0, _>().backward();
                adam.update(&mut plain, &g).expect("unused tensors");
            },
            reps,
        ),
    ));
    for k in [0, 1, 3] {
        let (mut layer, mut opt) = dendritic(&dev, k);
        let time = median(
            || {
                let grads = layer.alloc_grads().expect("gradients");
                let y = layer.forward_mut(x.trace(grads));
                opt.step(&mut layer, y.sum::<Rank0, _>().backward())
                    .expect("finite");
            },
            reps,
        );
        rows.push((format!("training step, {k} dendrites"), time));
    }
    for k in [0, 1] {
        let time = cnn_step(&dev, batch, k, reps);
        rows.push((
            format!("fashion_cnn 8-16 training step, {k} dendrites a layer"),
            time,
        ));
    }
    rows
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let (batch, reps) = if quick { (2, 1) } else { (32, 25) };
    let all = rayon::current_num_threads();
    println!(
        "conv2d, input ({batch}, 16, 28, 28), 32 filters 3x3, padding 1, f32 (median of {reps})"
    );
    println!("| row | ms, 1 thread | ratio | ms, {all} threads | ratio |");
    println!("|---|---:|---:|---:|---:|");
    let on = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("a thread pool");
        pool.install(|| rows(batch, reps))
    };
    let (one, many) = (on(1), on(all));
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let step = |r: &[(String, Duration)]| r[2].1.as_secs_f64();
    for ((name, a), (_, b)) in one.iter().zip(&many) {
        println!(
            "| {name} | {:.1} | {:.2} | {:.1} | {:.2} |",
            ms(*a),
            a.as_secs_f64() / step(&one),
            ms(*b),
            b.as_secs_f64() / step(&many)
        );
    }
}
