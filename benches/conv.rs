//! Conv2d on a (32, 16, 28, 28) input with 32 3x3 filters, padding 1 (f32), on one thread and
//! on all threads:
//!
//! - forward + backward with the input gradient: the CPU kernel (im2col and matrix products)
//!   and the reference it is tested against (the `gather` unfold that other devices run);
//! - a training step (forward, backward, Adam): the bare layer with dfdx's own Adam, and the
//!   layer with 0, 1 and 3 dendrites (neuron phase, correlation mode) with pai-core's optimizer.
//! - a training step of `fashion_cnn`'s 8-16 CNN (batch 32, 28x28, cross-entropy, Adam), with
//!   no dendrites and with one per layer.
//!
//! Every row is timed in 25 rounds after one untimed call, each round one call of the row
//! and, right after it, one training step of the bare layer. The ms column is the median of
//! the row's calls; the ratio column is the median of the rounds' ratios to the bare step
//! beside them, so that a machine whose speed drifts (a shared one does, by tens of percent)
//! moves both sides of each ratio alike.
//!
//! The library pins glibc's heap thresholds at the first dendritic forward pass of a process
//! (`pai-core/src/host/heap.rs`); one is run before any row, so that every row, plain dfdx's
//! included, runs under the allocator settings a training process has.
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

/// A row: its name, the median of its calls and the median ratio to the bare step beside them.
type Row = (String, Duration, f64);

/// Times rows against a base call (the bare layer's training step), round by round.
struct Timer<'a> {
    base: Box<dyn FnMut() + 'a>,
    reps: usize,
    rows: Vec<Row>,
}

impl Timer<'_> {
    /// Times `f` in rounds with the base call and adds its row.
    fn row(&mut self, name: impl Into<String>, mut f: impl FnMut()) {
        let time = |f: &mut dyn FnMut()| {
            let t = Instant::now();
            f();
            t.elapsed()
        };
        f();
        (self.base)();
        let (mut times, mut ratios): (Vec<Duration>, Vec<f64>) = (0..self.reps)
            .map(|_| {
                let t = time(&mut f);
                let b = time(&mut *self.base);
                (t, t.as_secs_f64() / b.as_secs_f64())
            })
            .unzip();
        times.sort_unstable();
        ratios.sort_by(f64::total_cmp);
        let mid = self.reps / 2;
        self.rows.push((name.into(), times[mid], ratios[mid]));
    }
}

/// One training step of the CNN with `dendrites` per layer.
fn cnn_step(dev: &Cpu, batch: usize, dendrites: usize) -> impl FnMut() {
    let mut model = Cnn::<8, 16, 784, f32, Cpu>::build(dev).expect("valid config");
    model
        .visit_layers_mut("", &mut |_, layer| layer.grow_dendrites(dendrites))
        .expect("neuron phase");
    let mut opt = DendriticOptimizer::adam(AdamConfig::default());
    let x: Img<1> = dev.sample_normal_like(&(batch, Const, 28, 28));
    let y: Tensor<(usize, Const<10>), f32, Cpu> =
        dev.sample_normal_like(&(batch, Const)).softmax::<Axis<1>>();
    move || {
        let grads = model.alloc_grads().expect("gradients");
        let logits = model.forward_mut(x.trace(grads));
        let loss = cross_entropy_with_logits_loss(logits, y.clone());
        opt.step(&mut model, loss.backward()).expect("finite");
    }
}

/// One training step of the layer with `dendrites` accepted dendrites, pai-core's optimizer.
fn dendritic_step(dev: &Cpu, x: &Img<16>, dendrites: usize) -> impl FnMut() {
    let mut layer: Dendritic<Conv> =
        Dendritic::new(dev, Conv::build(dev), DendriteConfig::default()).expect("valid config");
    layer.grow_dendrites(dendrites).expect("neuron phase");
    let mut opt = DendriticOptimizer::adam(AdamConfig::default());
    let x = x.clone();
    move || {
        let grads = layer.alloc_grads().expect("gradients");
        let y = layer.forward_mut(x.trace(grads));
        opt.step(&mut layer, y.sum::<Rank0, _>().backward())
            .expect("finite");
    }
}

/// One training step of the bare layer with dfdx's Adam.
fn bare_step(dev: &Cpu, x: &Img<16>) -> impl FnMut() {
    let mut plain = Conv::build(dev);
    let mut adam = perforated::dfdx::optim::Adam::new(&plain, AdamConfig::default());
    let mut grads = plain.alloc_grads();
    let x = x.clone();
    move || {
        plain.zero_grads(&mut grads);
        let y = plain.forward(x.trace(grads.clone()));
        let g = y.sum::<Rank0, _>().backward();
        adam.update(&mut plain, &g).expect("unused tensors");
    }
}

/// The rows, timed on the calling thread's pool.
fn rows(batch: usize, reps: usize) -> Vec<Row> {
    let dev = Cpu::seed_from_u64(0);
    let x: Img<16> = dev.sample_normal_like(&(batch, Const, 28, 28));
    let conv = Conv::build(&dev);
    let mut timer = Timer {
        base: Box::new(bare_step(&dev, &x)),
        reps,
        rows: Vec::new(),
    };
    timer.row("reference (gather unfold), forward + backward", || {
        let y = conv.try_forward_by_gather(x.leaky_trace()).expect("cpu");
        let _ = y.sum::<Rank0, _>().backward();
    });
    timer.row("kernel (im2col + gemm), forward + backward", || {
        let _ = conv.forward(x.leaky_trace()).sum::<Rank0, _>().backward();
    });
    timer.row("training step, bare layer, dfdx Adam", bare_step(&dev, &x));
    for k in [0, 1, 3] {
        timer.row(
            format!("training step, {k} dendrites"),
            dendritic_step(&dev, &x, k),
        );
    }
    for k in [0, 1] {
        timer.row(
            format!("fashion_cnn 8-16 training step, {k} dendrites a layer"),
            cnn_step(&dev, batch, k),
        );
    }
    timer.rows
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let (batch, reps) = if quick { (2, 1) } else { (32, 25) };
    // the heap thresholds, pinned as in a training process (see the top of this file)
    dendritic_step(
        &Cpu::seed_from_u64(0),
        &Cpu::seed_from_u64(1).zeros_like(&(1, Const, 4, 4)),
        1,
    )();
    let all = rayon::current_num_threads();
    println!(
        "conv2d, input ({batch}, 16, 28, 28), 32 filters 3x3, padding 1, f32 (median of {reps} \
         rounds; ratio: median ratio to the bare layer's step timed beside it)"
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
    for ((name, a, ra), (_, b, rb)) in one.iter().zip(&many) {
        println!(
            "| {name} | {:.1} | {ra:.2} | {:.1} | {rb:.2} |",
            ms(*a),
            ms(*b)
        );
    }
}
