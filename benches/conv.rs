//! Conv2d forward + backward on a (32, 16, 28, 28) input with 32 3x3 filters (padding 1):
//! the same convolution written by hand with dfdx ops (zero padding by concatenation, nine
//! `slice`s, `stack`, matmul), pai-core's `Conv2d` (unfold by `gather`, matmul), and a
//! dendritic `Conv2d` with one dendrite (neuron-phase step of the correlation mode).
//!
//! ```text
//! cargo bench --bench conv
//! ```

use std::time::{Duration, Instant};

use perforated::layers::Conv2d;
use perforated::prelude::*;

type Img<const C: usize, T = NoneTape> = Tensor<(usize, Const<C>, usize, usize), f32, Cpu, T>;
type Conv = Conv2d<16, 32, 3, f32, Cpu, 1, 1>;

/// The convolution by hand. Its backward goes through dfdx's CPU `slice`, whose gradient is
/// wrong for overlapping slices (it overwrites instead of accumulating): timing only.
fn by_hand<T: Tape<f32, Cpu>>(conv: &Conv, x: Img<16, T>) -> Img<32, T> {
    let (b, _, h, w) = *x.shape();
    let dev = Cpu::default();
    let zr: Img<16> = dev.zeros_like(&(b, Const, 1, w));
    let x = (zr.retaped::<T>(), x).concat_along(Axis::<2>);
    let x = (x, zr).concat_along(Axis::<2>);
    let zc: Img<16> = dev.zeros_like(&(b, Const, h + 2, 1));
    let x = (zc.retaped::<T>(), x).concat_along(Axis::<3>);
    let x = (x, zc).concat_along(Axis::<3>);
    let mut windows = Vec::new();
    for i in 0..3 {
        for j in 0..3 {
            // each window from its own copy: the `slice` backward bug needs separate sources
            windows.push(x.retaped::<T>().slice((.., .., i..i + h, j..j + w)));
        }
    }
    let _ = x;
    let cols = windows.stack(); // (9, B, C, H, W)
    let cols = cols
        .permute::<_, Axes5<1, 3, 4, 2, 0>>()
        .reshape_like(&(b * h * w, 16 * 9));
    let weight = conv
        .weight
        .retaped::<T>()
        .reshape_like(&(Const::<32>, 16 * 9));
    let y = cols.matmul(weight.permute::<_, Axes2<1, 0>>());
    let y = y + conv
        .bias
        .retaped::<T>()
        .broadcast_like(&(b * h * w, Const::<32>));
    y.reshape_like(&(b, h, w, Const::<32>))
        .permute::<_, Axes4<0, 3, 1, 2>>()
}

fn best(mut f: impl FnMut(), reps: usize) -> Duration {
    f();
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let (batch, reps) = if quick { (2, 1) } else { (32, 5) };
    let dev = Cpu::seed_from_u64(0);
    let x: Img<16> = dev.sample_normal_like(&(batch, Const, 28, 28));
    let conv = Conv::build(&dev);
    let ours = conv.forward(x.clone()).as_vec();
    let theirs = by_hand(&conv, x.clone()).as_vec();
    let diff = ours
        .iter()
        .zip(&theirs)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(diff < 1e-4, "by-hand and layer outputs differ by {diff}");

    let hand = best(
        || {
            let y = by_hand(&conv, x.leaky_trace());
            let _ = y.sum::<Rank0, _>().backward();
        },
        reps,
    );
    let layer = best(
        || {
            let y = conv.forward(x.leaky_trace());
            let _ = y.sum::<Rank0, _>().backward();
        },
        reps,
    );
    let mut dendritic: Dendritic<Conv> =
        Dendritic::new(&dev, Conv::build(&dev), DendriteConfig::default()).unwrap();
    dendritic.grow_dendrites(1).unwrap();
    let mut opt = DendriticOptimizer::adam(AdamConfig::default());
    let with_dendrite = best(
        || {
            let grads = dendritic.alloc_grads().unwrap();
            let y = dendritic.forward_mut(x.trace(grads));
            let g = y.sum::<Rank0, _>().backward();
            opt.step(&mut dendritic, g).unwrap();
        },
        reps,
    );
    println!("conv2d forward + backward, input ({batch}, 16, 28, 28), 32 filters 3x3, padding 1 (best of {reps})");
    println!("| row | ms | x by hand |");
    println!("|---|---:|---:|");
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    for (name, d) in [
        ("unfold by slices + matmul, by hand", hand),
        ("pai-core Conv2d (gather unfold + matmul)", layer),
        ("dendritic Conv2d, 1 dendrite, training step", with_dendrite),
    ] {
        println!(
            "| {name} | {:.1} | {:.2} |",
            ms(d),
            d.as_secs_f64() / hand.as_secs_f64()
        );
    }
}
