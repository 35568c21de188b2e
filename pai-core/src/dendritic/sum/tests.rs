//! The host kernel held to the dfdx-ops reference, in value and in every gradient.

use dfdx::shapes::{Rank1, Rank2, Rank4};
use dfdx::tensor::{Cpu, NoneTape, OwnedTape, SampleTensor, Tensor, TensorFrom};
use dfdx::tensor_ops::{Backward, ReshapeTo, SumTo};

use super::{host, ops, Pre, Term};
use crate::axis::{Any, Batch, Neurons};
use crate::dendritic::config::Activation;
use crate::host::Scratch;
use crate::testing::assert_close;
use dfdx::tensor::{Merge, PutTape, Tape};
use std::sync::Arc;

type Tags = (Batch, Neurons, Any, Any);
type Out = Rank4<2, 3, 2, 2>;
type Vec3 = Tensor<Rank1<3>, f64, Cpu>;

#[test]
fn fused_sum_matches_dfdx_ops_in_value_and_every_gradient() {
    for activation in [Activation::Sigmoid, Activation::Tanh, Activation::Relu] {
        let dev = Cpu::seed_from_u64(3);
        let y: Tensor<Out, f64, Cpu> = dev.sample_normal();
        let pres: Vec<Tensor<Out, f64, Cpu>> = (0..3).map(|_| dev.sample_normal()).collect();
        let outputs: Vec<Vec3> = (0..3).map(|_| dev.sample_normal()).collect();
        let biases: Vec<Vec3> = (0..3).map(|_| dev.sample_normal()).collect();
        let cascades: Vec<Vec<Vec3>> = (0..3)
            .map(|j| (0..j).map(|_| dev.sample_normal()).collect())
            .collect();
        let target: Tensor<Out, f64, Cpu> = dev.sample_normal();
        let scratch = Arc::default();
        // one tape for the whole step, as in the gradient mode
        let run = |fused: bool| {
            let taped_y = y.clone().put_tape(OwnedTape::<f64, Cpu>::default());
            let taped_pres: Vec<_> = pres
                .iter()
                .map(|p| p.clone().put_tape(OwnedTape::default()))
                .collect();
            let terms = taped_pres
                .into_iter()
                .enumerate()
                .map(|(j, pre)| Term {
                    pre: Pre::Module(pre),
                    bias: Some(&biases[j]),
                    cascade: &cascades[j],
                    output: &outputs[j],
                })
                .collect();
            let out = if fused {
                host::dendrite_sum::<Tags, _, _, _, _, _>(
                    taped_y, terms, None, activation, false, &scratch,
                )
            } else {
                ops::dendrite_sum::<Tags, _, _, _, _, _>(taped_y, terms, None, activation, false)
            }
            .unwrap()
            .0;
            let value = out.retaped::<NoneTape>().as_vec();
            let loss = (out - target.clone()).square().sum::<(), _>();
            let grads = loss.backward();
            let mut all = vec![grads.get(&y).as_vec()];

            all.extend(pres.iter().map(|p| grads.get(p).as_vec()));
            all.extend(outputs.iter().map(|w| grads.get(w).as_vec()));
            all.extend(cascades.iter().flatten().map(|c| grads.get(c).as_vec()));
            all.extend(biases.iter().map(|b| grads.get(b).as_vec()));
            (value, all)
        };
        let (value, grads) = run(true);
        let (want_value, want_grads) = run(false);
        let close = |a: &[f64], b: &[f64]| {
            a.iter()
                .zip(b)
                .all(|(a, b)| (a - b).abs() <= 1e-12 * (1.0 + b.abs()))
        };
        assert!(close(&value, &want_value), "{activation:?}: forward values");
        assert_eq!(grads.len(), 1 + 3 + 3 + 3 + 3);
        for (k, (g, want)) in grads.iter().zip(&want_grads).enumerate() {
            assert!(
                close(g, want),
                "{activation:?}: gradient {k}: {g:?} vs {want:?}"
            );
        }
    }
}

/// One taped step of the fused sum on `scratch`: the output and the gradients of `y`
/// and of every pre-activation.
fn step(
    scratch: &Arc<Scratch<f64>>,
    y: &Tensor<Out, f64, Cpu>,
    pres: &[Tensor<Out, f64, Cpu>],
) -> Vec<Vec<f64>> {
    let dev = y.device().clone();
    let outputs: Vec<Vec3> = (1..=pres.len())
        .map(|j| dev.tensor([0.5 * j as f64, -1.0, 2.0]))
        .collect();
    let cascades: Vec<Vec<Vec3>> = (0..pres.len())
        .map(|j| vec![dev.tensor([0.3, 0.2, -0.1]); j])
        .collect();
    let terms = pres
        .iter()
        .enumerate()
        .map(|(j, p)| Term {
            pre: Pre::Module(p.clone().put_tape(OwnedTape::<f64, Cpu>::default())),
            bias: None,
            cascade: &cascades[j],
            output: &outputs[j],
        })
        .collect();
    let taped_y = y.clone().put_tape(OwnedTape::<f64, Cpu>::default());
    let (out, _) = host::dendrite_sum::<Tags, _, _, _, _, _>(
        taped_y,
        terms,
        None,
        Activation::Sigmoid,
        false,
        scratch,
    )
    .unwrap();
    let value = out.retaped::<NoneTape>().as_vec();
    let grads = out.square().sum::<(), _>().backward();
    let mut all = vec![value, grads.get(y).as_vec()];
    all.extend(pres.iter().map(|p| grads.get(p).as_vec()));
    all
}

#[test]
fn scratch_vectors_are_reused_and_leave_no_trace() {
    let dev = Cpu::seed_from_u64(5);
    let scratch = Arc::default();
    let draw = || -> (Tensor<Out, f64, Cpu>, Vec<Tensor<Out, f64, Cpu>>) {
        (
            dev.sample_normal(),
            (0..3).map(|_| dev.sample_normal()).collect(),
        )
    };
    let (y1, pres1) = draw();
    step(&scratch, &y1, &pres1);
    // the backward pass gave back one vector per dendrite
    assert_eq!(scratch.kept(), 3);
    let (y2, pres2) = draw();
    let reused = step(&scratch, &y2, &pres2);
    assert_eq!(scratch.kept(), 3, "the pool does not grow");
    // a second step on reused vectors equals one on fresh vectors, bit for bit
    assert_eq!(reused, step(&Arc::default(), &y2, &pres2));
}

/// A `(Batch, Neurons)` layer of 3 neurons on 4 inputs, 5 rows, with three affine dendrites.
struct AffineLayer {
    x: Tensor<Rank2<5, 4>, f64, Cpu>,
    y: Tensor<Rank2<5, 3>, f64, Cpu>,
    weights: Vec<Tensor<Rank2<3, 4>, f64, Cpu>>,
    biases: Vec<Vec3>,
    outputs: Vec<Vec3>,
    cascades: Vec<Vec<Vec3>>,
    target: Tensor<Rank2<5, 3>, f64, Cpu>,
}

impl AffineLayer {
    fn new() -> Self {
        let dev = Cpu::seed_from_u64(8);
        let three = |dev: &Cpu| -> Vec<Vec3> { (0..3).map(|_| dev.sample_normal()).collect() };
        Self {
            x: dev.sample_normal(),
            y: dev.sample_normal(),
            weights: (0..3).map(|_| dev.sample_normal()).collect(),
            biases: three(&dev),
            outputs: three(&dev),
            cascades: (0..3)
                .map(|j| (0..j).map(|_| dev.sample_normal()).collect())
                .collect(),
            target: dev.sample_normal(),
        }
    }

    /// The sum of the affine terms on `input` (tape `P`), by the host kernel or the reference.
    fn sum<P: Tape<f64, Cpu>>(
        &self,
        host: bool,
        input: Tensor<(usize, usize), f64, Cpu, P>,
        scratch: &Arc<Scratch<f64>>,
    ) -> Tensor<Rank2<5, 3>, f64, Cpu, OwnedTape<f64, Cpu>>
    where
        OwnedTape<f64, Cpu>: Merge<P>,
    {
        let y = self.y.clone().put_tape(OwnedTape::default());
        let terms = (0..3)
            .map(|j| Term {
                pre: Pre::Affine(self.weights[j].clone().reshape_like(&(3usize, 4usize))),
                bias: Some(&self.biases[j]),
                cascade: &self.cascades[j],
                output: &self.outputs[j],
            })
            .collect();
        let activation = Activation::Sigmoid;
        let input = Some(input);
        let sum = if host {
            host::dendrite_sum::<(Batch, Neurons), _, _, _, _, _>(
                y, terms, input, activation, false, scratch,
            )
        } else {
            ops::dendrite_sum::<(Batch, Neurons), _, _, _, _, _>(y, terms, input, activation, false)
        };
        sum.unwrap().0
    }

    /// The output and the gradients of a squared error: of `y` and the output weights, and
    /// when the terms train of `x` and every term's weight, bias and cascade weights.
    fn run(&self, host: bool, trains: bool, scratch: &Arc<Scratch<f64>>) -> Vec<Vec<f64>> {
        let matrix = (5usize, 4usize);
        let out = if trains {
            let x = self.x.clone().put_tape(OwnedTape::<f64, Cpu>::default());
            self.sum(host, x.reshape_like(&matrix), scratch)
        } else {
            self.sum(host, self.x.clone().reshape_like(&matrix), scratch)
        };
        let value = out.retaped::<NoneTape>().as_vec();
        let grads = (out - self.target.clone())
            .square()
            .sum::<(), _>()
            .backward();
        let mut all = vec![value, grads.get(&self.y).as_vec()];
        if trains {
            all.push(grads.get(&self.x).as_vec());
            all.extend(self.weights.iter().map(|w| grads.get(w).as_vec()));
            all.extend(self.biases.iter().map(|b| grads.get(b).as_vec()));
            let cascades = self.cascades.iter().flatten();
            all.extend(cascades.map(|c| grads.get(c).as_vec()));
        }
        all.extend(self.outputs.iter().map(|w| grads.get(w).as_vec()));
        all
    }
}

#[test]
fn affine_terms_match_the_reference_in_value_and_every_gradient() {
    // terms that train (tapes on both sides) and frozen ones (no tape on the terms); the
    // reference takes each product with dfdx's matmul, the host kernel from the input copy.
    let layer = AffineLayer::new();
    let scratch = Arc::default();
    for trains in [true, false] {
        let got = layer.run(true, trains, &scratch);
        let want = layer.run(false, trains, &scratch);
        assert_close(&got, &want, 1e-12, &format!("trains {trains}"));
    }
}
