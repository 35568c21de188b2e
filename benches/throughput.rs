//! Training-step throughput: plain dfdx against the dendritic model.
//!
//! A 64-128-10 MLP (both layers converted), cross-entropy, Adam, batch 32 and 256. Rows: plain
//! dfdx (its own Adam, gradients reused with `zero_grads`); the dendritic model with 0, 1 and 3
//! dendrites per layer in both learning modes (neuron-phase step), its gradients reused alike
//! (`DendriticModel::zero_grads`, `DendriticOptimizer::update`); the same with fresh gradients
//! every step (`alloc_grads`, `step`); the dendrite-phase step. Each row runs 15 rounds of a
//! 100 ms window of plain dfdx and one of the row, back to back; it prints the median
//! microseconds per step of each and the median of the rounds' ratios, beside its target.
//!
//! ```text
//! cargo bench --bench throughput
//! ```

#[path = "../tests/common/mlp.rs"]
#[allow(dead_code)]
mod mlp;

use std::time::{Duration, Instant};

use mlp::Mlp;
use perforated::prelude::*;

type Plain = (Linear<64, 128>, ReLU, Linear<128, 10>);

/// Time per step of `plain` and of `variant` in rounds of one window each, back to back (which
/// goes first alternates), and the ratio `variant / plain` within each round: the medians of
/// the three over the rounds. Adjacent windows see the same machine load, so the ratio of a
/// round cancels drift that the times alone carry; the median drops rounds that one
/// interruption spoiled.
fn paired_rounds(
    plain: &mut dyn FnMut(),
    variant: &mut dyn FnMut(),
    rounds: usize,
    min: Duration,
) -> (f64, f64, f64) {
    let time = |step: &mut dyn FnMut()| {
        let start = Instant::now();
        let mut n = 0u32;
        while start.elapsed() < min {
            step();
            n += 1;
        }
        start.elapsed().as_secs_f64() / f64::from(n)
    };
    for _ in 0..5 {
        plain();
        variant();
    }
    let (mut plains, mut variants, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let (p, v) = if round % 2 == 0 {
            let p = time(plain);
            (p, time(variant))
        } else {
            let v = time(variant);
            (time(plain), v)
        };
        plains.push(p);
        variants.push(v);
        ratios.push(v / p);
    }
    (median(plains), median(variants), median(ratios))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() % 2 {
        1 => v[v.len() / 2],
        _ => f64::midpoint(v[v.len() / 2 - 1], v[v.len() / 2]),
    }
}

type Data<const B: usize> = (
    Tensor<Rank2<B, 64>, f32, Cpu>,
    Tensor<Rank2<B, 10>, f32, Cpu>,
);

fn data<const B: usize>(dev: &Cpu) -> Data<B> {
    let x = dev.sample_normal();
    let labels: Vec<f32> = (0..B * 10)
        .map(|i| if i % 10 == (i / 10) % 10 { 1.0 } else { 0.0 })
        .collect();
    (x, dev.tensor_from_vec(labels, (Const, Const)))
}

/// One training step of plain dfdx (its Adam, gradients reused with `zero_grads`).
fn plain<const B: usize>() -> impl FnMut() {
    let dev = Cpu::seed_from_u64(0);
    let (x, y) = data::<B>(&dev);
    let mut model = dev.build_module::<Plain, f32>();
    let mut opt = perforated::dfdx::optim::Adam::new(
        &model,
        AdamConfig {
            lr: 1e-3,
            ..Default::default()
        },
    );
    let mut grads = Some(model.alloc_grads());
    move || {
        let logits = model.forward_mut(x.trace(grads.take().expect("returned below")));
        let mut g = cross_entropy_with_logits_loss(logits, y.clone()).backward();
        opt.update(&mut model, &g).expect("all parameters used");
        model.zero_grads(&mut g);
        grads = Some(g);
    }
}

/// One training step of the dendritic model with `dendrites` per layer, its gradient buffer
/// reused (`reuse`) or allocated afresh.
fn dendritic<const B: usize>(
    learning: DendriteLearning,
    dendrites: usize,
    phase: Phase,
    reuse: bool,
) -> impl FnMut() {
    let dev = Cpu::seed_from_u64(0);
    let (x, y) = data::<B>(&dev);
    let config = DendriteConfig {
        learning,
        ..Default::default()
    };
    let mut model = Mlp::<64, 128, 10, f32, Cpu>::new(&dev, config);
    model.fc1.grow_dendrites(dendrites).unwrap();
    model.fc2.grow_dendrites(dendrites).unwrap();
    if phase == Phase::Dendrite {
        model.start_dendrite_phase().unwrap();
    }
    let mut opt = DendriticOptimizer::adam(AdamConfig {
        lr: 1e-3,
        ..Default::default()
    });
    let mut grads = model.alloc_grads().unwrap();
    move || {
        if reuse {
            model.zero_grads(&mut grads).unwrap();
            let logits =
                model.forward_mut(x.trace(std::mem::replace(&mut grads, Gradients::leaky())));
            grads = cross_entropy_with_logits_loss(logits, y.clone()).backward();
            opt.update(&mut model, &mut grads).unwrap();
        } else {
            let grads = model.alloc_grads().unwrap();
            let logits = model.forward_mut(x.trace(grads));
            let g = cross_entropy_with_logits_loss(logits, y.clone()).backward();
            opt.step(&mut model, g).unwrap();
        }
    }
}

/// A row: its name, a constructor of its training step, its target ratio to plain dfdx.
///
/// Each row's model is built just before it is measured and dropped after, so that the heap
/// holds what a training process holds (the plain model and one dendritic model), not every
/// row's model at once.
type Row = (String, Box<dyn Fn() -> Box<dyn FnMut()>>, Option<f64>);

/// The rows at batch `B`; `judge` says whether the timing is long enough to judge targets.
fn rows<const B: usize>(rounds: usize, min: Duration, judge: bool) {
    let us = |seconds: f64| seconds * 1e6;
    let mut rows: Vec<Row> = Vec::new();
    for k in [0usize, 1, 3] {
        let target = if k == 0 { 1.05 } else { 1.0 + 0.45 * k as f64 };
        rows.push((
            format!("correlation, {k} dendrites"),
            Box::new(move || {
                Box::new(dendritic::<B>(
                    DendriteLearning::Correlation,
                    k,
                    Phase::Neuron,
                    true,
                ))
            }),
            Some(target),
        ));
    }
    for k in [0usize, 1, 3] {
        rows.push((
            format!("gradient, {k} dendrites"),
            Box::new(move || {
                Box::new(dendritic::<B>(
                    DendriteLearning::Gradient,
                    k,
                    Phase::Neuron,
                    true,
                ))
            }),
            Some(1.05 * (k as f64 + 1.0)),
        ));
    }
    for (learning, k) in [
        (DendriteLearning::Correlation, 0usize),
        (DendriteLearning::Correlation, 3),
        (DendriteLearning::Gradient, 3),
    ] {
        rows.push((
            format!("{learning:?}, {k} dendrites, fresh gradients").to_lowercase(),
            Box::new(move || Box::new(dendritic::<B>(learning, k, Phase::Neuron, false))),
            None,
        ));
    }
    for k in [0usize, 3] {
        rows.push((
            format!("dendrite phase, {k} dendrites"),
            Box::new(move || {
                Box::new(dendritic::<B>(
                    DendriteLearning::Correlation,
                    k,
                    Phase::Dendrite,
                    true,
                ))
            }),
            None,
        ));
    }
    let mut base = plain::<B>();
    for (name, build, target) in rows {
        let mut step = build();
        let (p, d, ratio) = paired_rounds(&mut base, &mut step, rounds, min);
        drop(step);
        let target = match target {
            Some(t) if !judge => format!("<= {t:.2} (quick run: not judged)"),
            Some(t) if ratio <= t => format!("<= {t:.2} met"),
            Some(t) => format!("<= {t:.2} MISSED"),
            None => "-".to_string(),
        };
        println!(
            "| {B} | {name} | {:.1} | {:.1} | {ratio:.2} | {target} |",
            us(p),
            us(d)
        );
    }
}

fn main() {
    // `cargo test --benches` runs this without `--bench`: keep that quick.
    let quick = !std::env::args().any(|a| a == "--bench");
    let (rounds, min) = if quick {
        (1, Duration::from_millis(2))
    } else {
        // at batch 256 single 100 ms windows of the same step differ by up to 20% on a
        // shared 2-core machine: fifteen rounds give a stable median
        (15, Duration::from_millis(100))
    };
    println!("| batch | row | plain dfdx us/step | row us/step | ratio | target |");
    println!("|---:|---|---:|---:|---:|---|");
    rows::<32>(rounds, min, !quick);
    rows::<256>(rounds, min, !quick);
}
