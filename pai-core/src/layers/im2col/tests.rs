//! The CPU convolution against the gather reference, its gradients, and what it shares.
use dfdx::shapes::{Const, HasShape};
use dfdx::tensor::{Cpu, OwnedTape, SampleTensor, Tensor, Trace};
use dfdx::tensor_ops::{Backward, SumTo};
use rand_distr::{Distribution, StandardNormal};

use std::sync::Arc;

use super::Geometry;
use crate::float::Float;
use crate::host::memo;
use crate::layers::conv::convolve_by_gather;
use crate::layers::unfold::Window;
use crate::testing::assert_close;

const I: usize = 3;
const O: usize = 4;

/// The value and the gradients (x, weight, bias) of `sum(conv(x) ⊙ g)`, by the kernel or
/// the gather reference.
fn run<E: Float>(fast: bool, batch: usize, dims: &[usize], window: Window, seed: u64) -> Vec<Vec<E>>
where
    StandardNormal: Distribution<E>,
    Cpu: dfdx::tensor_ops::Device<E>,
{
    let dev = Cpu::seed_from_u64(seed);
    let numel: usize = dims.iter().product();
    let (out, idx) = window.index(dims);
    let positions: usize = out.iter().product();
    let offsets = window.kernel.pow(dims.len() as u32);
    let x: Tensor<(usize, Const<I>, usize), E, Cpu> =
        dev.sample_normal_like(&(batch, Const, numel));
    let w: Tensor<(Const<O>, usize), E, Cpu> = dev.sample_normal_like(&(Const, I * offsets));
    let b: Tensor<(Const<O>,), E, Cpu> = dev.sample_normal();
    let g: Tensor<(usize, Const<O>, usize), E, Cpu> =
        dev.sample_normal_like(&(batch, Const, positions));
    let tx = x.leaky_trace();
    let tw = w.retaped::<OwnedTape<E, Cpu>>();
    let tb = b.retaped::<OwnedTape<E, Cpu>>();
    let y = if fast {
        let geometry = Geometry::new(I, numel, offsets, positions, &idx);
        super::convolve(tx, tw, tb, geometry)
    } else {
        convolve_by_gather(tx, tw, tb, idx, offsets, positions)
    }
    .unwrap();
    let value = y.retaped::<dfdx::tensor::NoneTape>().as_vec();
    let grads = (y * g).sum::<(), _>().backward();
    vec![
        value,
        grads.get(&x).as_vec(),
        grads.get(&w).as_vec(),
        grads.get(&b).as_vec(),
    ]
}

fn agree<E: Float>(tol: f64)
where
    StandardNormal: Distribution<E>,
    Cpu: dfdx::tensor_ops::Device<E>,
{
    let cases: [(usize, &[usize], Window); 8] = [
        (2, &[5, 7], Window::new(3, 1, 1, 1)),
        (1, &[4, 4], Window::new(1, 1, 0, 1)),
        (2, &[7, 6], Window::new(3, 2, 1, 1)),
        (1, &[9, 8], Window::new(3, 1, 2, 2)),
        (3, &[11], Window::new(3, 2, 1, 2)),
        (1, &[3, 4, 5], Window::new(2, 1, 1, 1)),
        (2, &[5, 5], Window::new(5, 1, 0, 1)),
        (1, &[7, 7], Window::new(3, 3, 0, 1)),
    ];
    for (seed, (batch, dims, w)) in cases.into_iter().enumerate() {
        let fast = run::<E>(true, batch, dims, w, seed as u64);
        let slow = run::<E>(false, batch, dims, w, seed as u64);
        let wide = |v: Vec<Vec<E>>| -> Vec<Vec<f64>> {
            v.into_iter()
                .map(|l| l.into_iter().map(Float::as_f64).collect())
                .collect()
        };
        let what = format!("case {seed} ({dims:?}, {w:?})");
        assert_close(&wide(fast), &wide(slow), tol, &what);
    }
}

#[test]
fn kernel_matches_the_gather_reference_in_f64() {
    agree::<f64>(1e-12);
}

#[test]
fn kernel_matches_the_gather_reference_in_f32() {
    agree::<f32>(1e-5);
}

#[test]
fn convolutions_of_one_input_in_a_scope_share_its_columns_and_agree_with_their_own() {
    // the neurons and two dendrite copies of a layer, in one dendritic forward pass
    let dev = Cpu::seed_from_u64(7);
    let dims = [6, 5];
    let window = Window::new(3, 1, 1, 1);
    let (out, idx) = window.index(&dims);
    let positions: usize = out.iter().product();
    let geometry = || Geometry::new(I, 30, 9, positions, &idx);
    let x: Tensor<(usize, Const<I>, usize), f64, Cpu> = dev.sample_normal_like(&(2, Const, 30));
    let copies: Vec<_> = (0..3)
        .map(|_| {
            let w: Tensor<(Const<O>, usize), f64, Cpu> = dev.sample_normal_like(&(Const, I * 9));
            (w, dev.sample_normal::<(Const<O>,)>())
        })
        .collect();
    // value, weight gradient and input gradient of each copy
    let each = |(w, b): &(
        Tensor<(Const<O>, usize), f64, Cpu>,
        Tensor<(Const<O>,), f64, Cpu>,
    )| {
        let tw = w.clone().retaped::<OwnedTape<f64, Cpu>>();
        let tb = b.clone().retaped::<OwnedTape<f64, Cpu>>();
        let y = super::convolve(x.leaky_trace(), tw, tb, geometry()).unwrap();
        let value = y.retaped::<dfdx::tensor::NoneTape>().as_vec();
        let grads = y.sum::<(), _>().backward();
        vec![value, grads.get(w).as_vec(), grads.get(&x).as_vec()]
    };
    let alone: Vec<_> = copies.iter().map(each).collect();
    let key = geometry().key(2);
    let shared = memo::scope(|| {
        assert!(memo::find::<f64>(&key, &x.as_vec(), None).is_none());
        let first = each(&copies[0]);
        // the first call left its columns for the others
        let (cols, _) = memo::find::<f64>(&key, &x.as_vec(), None).expect("columns kept");
        let rest: Vec<_> = copies[1..].iter().map(each).collect();
        let (found, _) = memo::find::<f64>(&key, &x.as_vec(), None).expect("still kept");
        assert!(Arc::ptr_eq(&cols, &found));
        assert_eq!(memo::kept(), 1, "no later call made its own");
        std::iter::once(first).chain(rest).collect::<Vec<_>>()
    });
    for (a, b) in alone.iter().zip(&shared) {
        assert_close(a, b, 0.0, "shared columns");
    }
    // copies 1 and 2 ask first (frozen dendrites): the first call takes their products
    // beside its own, in one stacked product, and each finds its own, equal to the bit
    let host = |(w, b): &(_, _)| (Tensor::as_vec(w), Tensor::as_vec(b));
    let stacked = memo::scope(|| {
        for copy in &copies[1..] {
            let (w, b) = host(copy);
            memo::want(w, b);
        }
        let first = each(&copies[0]);
        let (w2, b2) = host(&copies[2]);
        let (_, made) = memo::find::<f64>(&key, &x.as_vec(), Some((&w2, &b2))).unwrap();
        let made = made.expect("made beside");
        assert_close(&[made], &alone[2][..1], 0.0, "made product");
        let second = each(&copies[1]);
        let (w1, b1) = host(&copies[1]);
        let (_, left) = memo::find::<f64>(&key, &x.as_vec(), Some((&w1, &b1))).unwrap();
        assert!(left.is_none(), "a made product is handed out once");
        [first, second]
    });
    for (a, b) in alone.iter().zip(&stacked) {
        assert_close(a, b, 0.0, "stacked products");
    }
}

#[test]
fn a_window_larger_than_the_input_gives_an_empty_output() {
    // the gather reference cannot take this case (dfdx reads an empty tensor's first
    // element); the kernel returns `(B, O, 0)`
    let dev = Cpu::default();
    let x: Tensor<(usize, Const<I>, usize), f64, Cpu> = dev.sample_normal_like(&(2, Const, 4));
    let w: Tensor<(Const<O>, usize), f64, Cpu> = dev.sample_normal_like(&(Const, I * 25));
    let b: Tensor<(Const<O>,), f64, Cpu> = dev.sample_normal();
    let (out, idx) = Window::new(5, 1, 0, 1).index(&[2, 2]);
    assert_eq!(out, [0, 0]);
    let geometry = Geometry::new(I, 4, 25, 0, &idx);
    let y = super::convolve(x, w, b, geometry).unwrap();
    assert_eq!(*y.shape(), (2, Const::<O>, 0));
}
