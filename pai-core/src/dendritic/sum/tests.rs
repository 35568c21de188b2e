//! The host kernel held to the dfdx-ops reference, in value and in every gradient.

use dfdx::shapes::{Const, Rank1, Rank2, Rank4};
use dfdx::tensor::{Cpu, NoneTape, OwnedTape, SampleTensor, Tensor, TensorFrom};
use dfdx::tensor_ops::{Backward, PermuteTo, ReshapeTo, SumTo, TryMatMul};

use super::{host, ops, Pre, Term};
use crate::axis::{Any, Batch, Neurons};
use crate::dendritic::config::Activation;
use crate::host::Scratch;
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

#[test]
fn affine_terms_match_the_product_taken_by_dfdx() {
    // a (Batch, Neurons) layer of 3 neurons on 4 inputs, 5 rows; terms that train (one
    // tape) and frozen ones (no tape on the terms), each with an affine product computed
    // in the sum or by dfdx before it.
    type Y = Tensor<Rank2<5, 3>, f64, Cpu>;
    let dev = Cpu::seed_from_u64(8);
    let x: Tensor<Rank2<5, 4>, f64, Cpu> = dev.sample_normal();
    let y: Y = dev.sample_normal();
    let weights: Vec<Tensor<Rank2<3, 4>, f64, Cpu>> = (0..3).map(|_| dev.sample_normal()).collect();
    let biases: Vec<Vec3> = (0..3).map(|_| dev.sample_normal()).collect();
    let outputs: Vec<Vec3> = (0..3).map(|_| dev.sample_normal()).collect();
    let cascades: Vec<Vec<Vec3>> = (0..3)
        .map(|j| (0..j).map(|_| dev.sample_normal()).collect())
        .collect();
    let target: Y = dev.sample_normal();
    let scratch = Arc::default();
    // the fused sum with a sigmoid, on `y`'s tape and terms on tape `P`
    fn sum<P: Tape<f64, Cpu>>(
        y: Tensor<Rank2<5, 3>, f64, Cpu, OwnedTape<f64, Cpu>>,
        terms: Vec<Term<'_, Rank2<5, 3>, Const<3>, f64, Cpu, P>>,
        input: Option<Tensor<(usize, usize), f64, Cpu, P>>,
        scratch: &Arc<Scratch<f64>>,
    ) -> Tensor<Rank2<5, 3>, f64, Cpu, OwnedTape<f64, Cpu>>
    where
        OwnedTape<f64, Cpu>: Merge<P>,
    {
        host::dendrite_sum::<(Batch, Neurons), _, _, _, _, _>(
            y,
            terms,
            input,
            Activation::Sigmoid,
            false,
            scratch,
        )
        .unwrap()
        .0
    }
    let run = |in_sum: bool, trains: bool| {
        let tape = OwnedTape::<f64, Cpu>::default;
        let taped_y = y.clone().put_tape(tape());
        let matrix = |t: Tensor<Rank2<5, 4>, f64, Cpu, OwnedTape<f64, Cpu>>| {
            t.reshape_like(&(5usize, 4usize))
        };
        let weight = |w: &Tensor<Rank2<3, 4>, f64, Cpu>| w.clone().reshape_like(&(3usize, 4usize));
        let terms =
            |pre: &mut dyn FnMut(usize) -> Pre<Rank2<5, 3>, f64, Cpu, OwnedTape<f64, Cpu>>| {
                (0..3)
                    .map(|j| Term {
                        pre: pre(j),
                        bias: Some(&biases[j]),
                        cascade: &cascades[j],
                        output: &outputs[j],
                    })
                    .collect::<Vec<_>>()
            };
        let out = if trains {
            let (terms, input) = if in_sum {
                let terms = terms(&mut |j| Pre::Affine(weight(&weights[j])));
                (terms, Some(matrix(x.clone().put_tape(tape()))))
            } else {
                let product = |j: usize| {
                    x.clone()
                        .put_tape(tape())
                        .matmul(weights[j].clone().permute())
                };
                (terms(&mut |j| Pre::Module(product(j))), None)
            };
            sum(taped_y, terms, input, &scratch)
        } else {
            let terms: Vec<Term<'_, _, _, _, _, NoneTape>> = (0..3)
                .map(|j| Term {
                    pre: if in_sum {
                        Pre::Affine(weight(&weights[j]))
                    } else {
                        Pre::Module(x.clone().matmul(weights[j].clone().permute()))
                    },
                    bias: Some(&biases[j]),
                    cascade: &cascades[j],
                    output: &outputs[j],
                })
                .collect();
            let input = in_sum.then(|| x.clone().reshape_like(&(5usize, 4usize)));
            sum(taped_y, terms, input, &scratch)
        };
        let value = out.retaped::<NoneTape>().as_vec();
        let grads = (out - target.clone()).square().sum::<(), _>().backward();
        let mut all = vec![value, grads.get(&y).as_vec()];
        if trains {
            all.push(grads.get(&x).as_vec());
            all.extend(weights.iter().map(|w| grads.get(w).as_vec()));
            all.extend(biases.iter().map(|b| grads.get(b).as_vec()));
            all.extend(cascades.iter().flatten().map(|c| grads.get(c).as_vec()));
        }
        all.extend(outputs.iter().map(|w| grads.get(w).as_vec()));
        all
    };
    for trains in [true, false] {
        let (got, want) = (run(true, trains), run(false, trains));
        assert_eq!(got.len(), want.len());
        for (k, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g.len(), w.len());
            for (a, b) in g.iter().zip(w) {
                assert!(
                    (a - b).abs() <= 1e-12 * (1.0 + b.abs()),
                    "trains {trains}, entry {k}: {g:?} vs {w:?}"
                );
            }
        }
    }
}
