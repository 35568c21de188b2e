//! Sequence layers against their cells, and gradients against finite differences.

use dfdx::nn::Module;
use dfdx::shapes::Const;
use dfdx::tensor::{NoneTape, Tensor};

use super::{at_time, Gru, Lstm};
use crate::testing::check_gradient;
use dfdx::prelude::{
    AsArray, BuildModule, Cpu, Rank0, SampleTensor, SumTo, TensorFromVec, Trace, ZerosTensor,
};
use dfdx::tensor::OwnedTape;
use dfdx::tensor_ops::Backward;

type Seq = Tensor<(usize, usize, Const<3>), f64, Cpu>;

/// Checks the gradient of the weight `pick` selects against central differences of `loss`.
fn check_weight<M: Clone, S: dfdx::shapes::Shape>(
    name: &str,
    model: &M,
    pick: fn(&mut M) -> &mut Tensor<S, f64, Cpu>,
    grads: &dfdx::tensor::Gradients<f64, Cpu>,
    loss: impl Fn(&M) -> f64,
) {
    let mut copy = model.clone();
    let analytic = grads.get(pick(&mut copy)).as_vec();
    let w0 = pick(&mut copy).as_vec();
    let at = |v: &[f64]| {
        let mut m = model.clone();
        pick(&mut m).copy_from(v);
        loss(&m)
    };
    check_gradient(name, at, &w0, &analytic, 1e-6);
}

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

#[test]
fn gru_gradients_match_finite_differences() {
    let dev: Cpu = Default::default();
    let shape = (2usize, 3usize, Const::<3>);
    let x: Seq = dev.sample_normal_like(&shape);
    let g: Tensor<(usize, usize, Const<4>), f64, Cpu> = dev.sample_normal_like(&(2, 3, Const));
    let gru = Gru::<3, 4, f64, Cpu>::build(&dev);
    let loss = |gru: &Gru<3, 4, f64, Cpu>, x: Seq| {
        (gru.forward(x).0 * g.clone()).sum::<Rank0, _>().array()
    };
    let t = x.clone().leaky_traced();
    let h = t.retaped::<NoneTape>();
    let grads = (gru.forward(t).0 * g.clone()).sum::<Rank0, _>().backward();
    check_gradient(
        "x",
        |v| loss(&gru, dev.tensor_from_vec(v.to_vec(), shape)),
        &x.as_vec(),
        &grads.get(&h).as_vec(),
        1e-6,
    );
    let loss_of = |m: &Gru<3, 4, f64, Cpu>| loss(m, x.clone());
    check_weight(
        "x_r.weight",
        &gru,
        |m| &mut m.cell.x_r.weight,
        &grads,
        loss_of,
    );
    check_weight(
        "x_n.weight",
        &gru,
        |m| &mut m.cell.x_n.weight,
        &grads,
        loss_of,
    );
    check_weight(
        "h_z.weight",
        &gru,
        |m| &mut m.cell.h_z.weight,
        &grads,
        loss_of,
    );
    check_weight(
        "h_n.weight",
        &gru,
        |m| &mut m.cell.h_n.weight,
        &grads,
        loss_of,
    );
}

#[test]
fn lstm_gradients_match_finite_differences() {
    let dev: Cpu = Default::default();
    let shape = (2usize, 3usize, Const::<3>);
    let x: Seq = dev.sample_normal_like(&shape);
    let g: Tensor<(usize, usize, Const<4>), f64, Cpu> = dev.sample_normal_like(&(2, 3, Const));
    let lstm = Lstm::<3, 4, f64, Cpu>::build(&dev);
    let loss =
        |m: &Lstm<3, 4, f64, Cpu>, x: Seq| (m.forward(x).0 * g.clone()).sum::<Rank0, _>().array();
    let t: Tensor<_, f64, Cpu, OwnedTape<f64, Cpu>> = x.clone().leaky_traced();
    let h = t.retaped::<NoneTape>();
    let grads = (lstm.forward(t).0 * g.clone()).sum::<Rank0, _>().backward();
    check_gradient(
        "x",
        |v| loss(&lstm, dev.tensor_from_vec(v.to_vec(), shape)),
        &x.as_vec(),
        &grads.get(&h).as_vec(),
        1e-6,
    );
    let loss_of = |m: &Lstm<3, 4, f64, Cpu>| loss(m, x.clone());
    check_weight(
        "h_f.weight",
        &lstm,
        |m| &mut m.cell.h_f.weight,
        &grads,
        loss_of,
    );
    check_weight(
        "h_g.weight",
        &lstm,
        |m| &mut m.cell.h_g.weight,
        &grads,
        loss_of,
    );
    check_weight(
        "h_o.weight",
        &lstm,
        |m| &mut m.cell.h_o.weight,
        &grads,
        loss_of,
    );
}
