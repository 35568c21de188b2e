//! Sequence layers against their cells, and gradients against finite differences.

use dfdx::nn::Module;
use dfdx::shapes::{Const, HasShape, Rank2};
use dfdx::tensor::{NoneTape, Tensor};

use super::{at_time, Gru, Lstm};
use crate::testing::{check_gradient, check_param};
use dfdx::prelude::{
    AsArray, BuildModule, Cpu, Rank0, SampleTensor, SumTo, TensorFromVec, Trace, ZerosTensor,
};
use dfdx::tensor::OwnedTape;
use dfdx::tensor_ops::Backward;

type Seq = Tensor<(usize, usize, Const<3>), f64, Cpu>;
/// Selects a weight of a model.
type Pick<M, const I: usize> = fn(&mut M) -> &mut Tensor<Rank2<4, I>, f64, Cpu>;

#[test]
fn sequence_layers_equal_stepping_their_cells() {
    let dev: Cpu = Default::default();
    let x: Seq = dev.sample_normal_like(&(2, 4, Const));
    let gru = Gru::<3, 5, f64, Cpu>::build(&dev);
    let (out, last) = gru.forward(x.clone());
    let mut h: Tensor<(usize, Const<5>), f64, Cpu> = dev.zeros_like(&(2, Const));
    let mut steps = Vec::new();
    for t in 0..4 {
        h = gru.cell.forward((at_time(x.clone(), t).unwrap(), h));
        steps.push(h.as_vec());
    }
    let out = out.as_vec();
    for b in 0..2 {
        for t in 0..4 {
            assert_eq!(
                &out[(b * 4 + t) * 5..(b * 4 + t + 1) * 5],
                &steps[t][b * 5..(b + 1) * 5]
            );
        }
    }
    assert_eq!(last.as_vec(), h.as_vec());

    let lstm = Lstm::<3, 5, f64, Cpu>::build(&dev);
    let (out, (h_last, c_last)) = lstm.forward(x.clone());
    let zeros = || -> Tensor<(usize, Const<5>), f64, Cpu> { dev.zeros_like(&(2, Const)) };
    let (mut h, mut c) = (zeros(), zeros());
    for t in 0..4 {
        (h, c) = lstm.cell.forward((at_time(x.clone(), t).unwrap(), (h, c)));
    }
    assert_eq!(h_last.as_vec(), h.as_vec());
    assert_eq!(c_last.as_vec(), c.as_vec());
    assert_eq!(&out.as_vec()[3 * 5..4 * 5], &h.as_vec()[..5]);
}

/// The outputs of a `(2, 3, 4)` sequence layer, on tape `T`.
type Out<T = NoneTape> = Tensor<(usize, usize, Const<4>), f64, Cpu, T>;
type Taped<S> = Tensor<S, f64, Cpu, OwnedTape<f64, Cpu>>;

/// A sequence layer's gradient test: `x`, the loss weights `g`, and the gradients of
/// `sum(layer(x).0 ⊙ g)`, whose input part is checked here against central differences.
struct SequenceCheck {
    x: Seq,
    g: Out,
}

impl SequenceCheck {
    fn new(dev: &Cpu) -> Self {
        Self {
            x: dev.sample_normal_like(&(2, 3, Const)),
            g: dev.sample_normal_like(&(2, 3, Const)),
        }
    }

    fn loss<M: Module<Seq, Output = (Out, St)>, St>(&self, layer: &M, x: Seq) -> f64 {
        (layer.forward(x).0 * self.g.clone())
            .sum::<Rank0, _>()
            .array()
    }

    /// Checks the input gradient; returns every gradient of one backward pass.
    fn input_gradient<M, St>(&self, layer: &M) -> dfdx::tensor::Gradients<f64, Cpu>
    where
        M: Module<Seq, Output = (Out, St)>
            + Module<Taped<(usize, usize, Const<3>)>, Output = (Out<OwnedTape<f64, Cpu>>, St)>,
    {
        let t = self.x.clone().leaky_traced();
        let h = t.retaped::<NoneTape>();
        let grads = (layer.forward(t).0 * self.g.clone())
            .sum::<Rank0, _>()
            .backward();
        let dev = self.x.device().clone();
        let shape = *self.x.shape();
        let at = |v: &[f64]| self.loss(layer, dev.tensor_from_vec(v.to_vec(), shape));
        check_gradient("x", at, &self.x.as_vec(), &grads.get(&h).as_vec(), 1e-6);
        grads
    }
}

impl SequenceCheck {
    /// The input gradient and those of the named input (`I = 3`) and hidden-state (`4`)
    /// weights, each against central differences.
    fn all<M, St>(&self, layer: &M, inputs: &[(&str, Pick<M, 3>)], hidden: &[(&str, Pick<M, 4>)])
    where
        M: Clone
            + Module<Seq, Output = (Out, St)>
            + Module<Taped<(usize, usize, Const<3>)>, Output = (Out<OwnedTape<f64, Cpu>>, St)>,
    {
        let grads = self.input_gradient(layer);
        let loss = |m: &M| self.loss(m, self.x.clone());
        for (name, pick) in inputs {
            check_param(name, layer, *pick, &grads, loss);
        }
        for (name, pick) in hidden {
            check_param(name, layer, *pick, &grads, loss);
        }
    }
}

#[test]
fn gru_and_lstm_gradients_match_finite_differences() {
    let dev: Cpu = Default::default();
    let check = SequenceCheck::new(&dev);
    let gru = Gru::<3, 4, f64, Cpu>::build(&dev);
    let gru_inputs: &[(&str, Pick<Gru<3, 4, f64, Cpu>, 3>)] = &[
        ("x_r.weight", |m| &mut m.cell.x_r.weight),
        ("x_n.weight", |m| &mut m.cell.x_n.weight),
    ];
    let gru_hidden: &[(&str, Pick<Gru<3, 4, f64, Cpu>, 4>)] = &[
        ("h_z.weight", |m| &mut m.cell.h_z.weight),
        ("h_n.weight", |m| &mut m.cell.h_n.weight),
    ];
    check.all(&gru, gru_inputs, gru_hidden);
    let lstm = Lstm::<3, 4, f64, Cpu>::build(&dev);
    let lstm_inputs: &[(&str, Pick<Lstm<3, 4, f64, Cpu>, 3>)] =
        &[("x_i.weight", |m| &mut m.cell.x_i.weight)];
    let lstm_hidden: &[(&str, Pick<Lstm<3, 4, f64, Cpu>, 4>)] = &[
        ("h_f.weight", |m| &mut m.cell.h_f.weight),
        ("h_g.weight", |m| &mut m.cell.h_g.weight),
        ("h_o.weight", |m| &mut m.cell.h_o.weight),
    ];
    check.all(&lstm, lstm_inputs, lstm_hidden);
}
