//! Finite-difference checks of the dendritic layer's gradients and of the captured neuron error.

mod common;

use common::TestDevice;

use perforated::params::{Param, ParamVisitor};
use perforated::prelude::*;

type Lin = perforated::dfdx::nn::modules::Linear<3, 2, f64, TestDevice>;

fn layer(learning: DendriteLearning, dendrites: usize) -> Dendritic<Lin> {
    let dev = TestDevice::seed_from_u64(11);
    let config = DendriteConfig {
        learning,
        init_std: 0.7,
        activation: Activation::Tanh,
        correlation: CorrelationConfig {
            warmup_batches: 10,
            ..Default::default()
        },
    };
    let mut layer: Dendritic<Lin> = Dendritic::new(&dev, BuildModule::build(&dev), config).unwrap();
    layer.grow_dendrites(dendrites).unwrap();
    // give the dendrites non-zero output weights so every path matters.
    struct Outputs(f64);
    impl ParamVisitor<f64, TestDevice> for Outputs {
        fn visit<S: Shape>(
            &mut self,
            p: Param<'_, f64, TestDevice>,
            t: &mut Tensor<S, f64, TestDevice>,
        ) -> perforated::Result<()> {
            if p.role == Role::DendriteOutput {
                let n = t.as_vec().len();
                self.0 += 0.3;
                t.copy_from(&(0..n).map(|i| self.0 - 0.2 * i as f64).collect::<Vec<_>>());
            }
            Ok(())
        }
    }
    layer.visit_params("", &mut Outputs(0.2)).unwrap();
    layer
}

fn inputs() -> (
    Tensor<Rank2<4, 3>, f64, TestDevice>,
    Tensor<Rank2<4, 2>, f64, TestDevice>,
) {
    let dev = TestDevice::seed_from_u64(12);
    (dev.sample_normal(), dev.sample_normal())
}

fn loss_value(
    layer: &Dendritic<Lin>,
    x: &Tensor<Rank2<4, 3>, f64, TestDevice>,
    t: &Tensor<Rank2<4, 2>, f64, TestDevice>,
) -> f64 {
    // a non-linear loss, so the error depends on the output
    let y = layer.forward(x.clone());
    ((y - t.clone()).square().sum::<Rank0, _>() * 0.5).array()
}

/// Every tensor's values, and a way to write one element back.
struct Read(Vec<(String, Role, bool, Vec<f64>)>);
impl ParamVisitor<f64, TestDevice> for Read {
    fn visit<S: Shape>(
        &mut self,
        p: Param<'_, f64, TestDevice>,
        t: &mut Tensor<S, f64, TestDevice>,
    ) -> perforated::Result<()> {
        self.0
            .push((p.path.to_string(), p.role, p.needs_task_grad(), t.as_vec()));
        Ok(())
    }
}
struct Write<'a>(&'a str, usize, f64);
impl ParamVisitor<f64, TestDevice> for Write<'_> {
    fn visit<S: Shape>(
        &mut self,
        p: Param<'_, f64, TestDevice>,
        t: &mut Tensor<S, f64, TestDevice>,
    ) -> perforated::Result<()> {
        if p.path == self.0 {
            let mut v = t.as_vec();
            v[self.1] = self.2;
            t.copy_from(&v);
        }
        Ok(())
    }
}
struct Grad<'a>(&'a Gradients<f64, TestDevice>, Vec<(String, Vec<f64>)>);
impl ParamVisitor<f64, TestDevice> for Grad<'_> {
    fn visit<S: Shape>(
        &mut self,
        p: Param<'_, f64, TestDevice>,
        t: &mut Tensor<S, f64, TestDevice>,
    ) -> perforated::Result<()> {
        if p.needs_task_grad() {
            self.1.push((p.path.to_string(), self.0.get(t).as_vec()));
        }
        Ok(())
    }
}

/// Compares the task-loss gradient of every tensor the task loss trains with central
/// differences of the loss.
fn check_parameter_gradients(mut layer: Dendritic<Lin>) -> usize {
    let (x, t) = inputs();
    let grads = layer.alloc_grads().unwrap();
    let y = layer.forward_mut(x.trace(grads));
    let loss = (y - t.clone()).square().sum::<Rank0, _>() * 0.5;
    let grads = loss.backward();
    let mut analytic = Grad(&grads, Vec::new());
    layer.visit_params("", &mut analytic).unwrap();
    let mut values = Read(Vec::new());
    layer.visit_params("", &mut values).unwrap();
    let eps = 1e-6;
    let mut checked = 0;
    for (path, g) in &analytic.1 {
        let v = &values.0.iter().find(|(p, ..)| p == path).unwrap().3;
        for i in 0..v.len() {
            layer
                .visit_params("", &mut Write(path, i, v[i] + eps))
                .unwrap();
            let up = loss_value(&layer, &x, &t);
            layer
                .visit_params("", &mut Write(path, i, v[i] - eps))
                .unwrap();
            let down = loss_value(&layer, &x, &t);
            layer.visit_params("", &mut Write(path, i, v[i])).unwrap();
            let numeric = (up - down) / (2.0 * eps);
            assert!(
                (numeric - g[i]).abs() < 1e-6 * (1.0 + numeric.abs()),
                "{path}[{i}]: autograd {} vs finite difference {numeric}",
                g[i]
            );
            checked += 1;
        }
    }
    checked
}

#[test]
fn gradient_mode_gradients_match_finite_differences() {
    // neurons, two dendrites (modules, cascade weights, output weights)
    let checked = check_parameter_gradients(layer(DendriteLearning::Gradient, 2));
    assert_eq!(
        checked,
        (3 * 2 + 2) * 3 + 2 + 2 * 2,
        "every tensor was checked"
    );
}

#[test]
fn correlation_mode_gradients_of_neurons_and_output_weights_match_finite_differences() {
    let checked = check_parameter_gradients(layer(DendriteLearning::Correlation, 2));
    assert_eq!(
        checked,
        (3 * 2 + 2) + 2 * 2,
        "neurons and output weights only"
    );
}

#[test]
fn gradient_mode_input_gradient_matches_finite_differences() {
    let mut layer = layer(DendriteLearning::Gradient, 2);
    let (x, t) = inputs();
    // contiguous, and transposed (non-contiguous: the dendrites' input matrix is a copy whose
    // gradient must flow back)
    let dev = TestDevice::seed_from_u64(13);
    let transposed = dev
        .sample_normal::<Rank2<3, 4>>()
        .permute::<Rank2<4, 3>, _>();
    for x in [x, transposed] {
        let traced = x.clone().leaky_traced();
        let handle = traced.retaped::<NoneTape>();
        let y = layer.forward_mut(traced);
        let grads = ((y - t.clone()).square().sum::<Rank0, _>() * 0.5).backward();
        let analytic = grads.get(&handle).as_vec();
        let base = x.as_vec();
        for i in 0..base.len() {
            let mut v = base.clone();
            v[i] += 1e-6;
            let up = loss_value(&layer, &dev.tensor_from_vec(v.clone(), *x.shape()), &t);
            v[i] -= 2e-6;
            let down = loss_value(&layer, &dev.tensor_from_vec(v, *x.shape()), &t);
            let numeric = (up - down) / 2e-6;
            assert!(
                (numeric - analytic[i]).abs() < 1e-6 * (1.0 + numeric.abs()),
                "x[{i}]: {} vs {numeric}",
                analytic[i]
            );
        }
    }
}

#[test]
fn captured_neuron_error_matches_finite_differences() {
    // The bias of neuron c adds to every output of that neuron, so dL/d(bias_c) is the sum of
    // the neuron error over the batch: the captured batch-mean error times the batch size.
    let mut layer = layer(DendriteLearning::Correlation, 1);
    let (x, t) = inputs();
    layer.start_dendrite_phase().unwrap();
    let grads = layer.alloc_grads().unwrap();
    let y = layer.forward_mut(x.trace(grads));
    let _ = ((y - t.clone()).square().sum::<Rank0, _>() * 0.5).backward();
    let report = layer.correlation().unwrap();
    assert_eq!(report.batches, 1);
    let bias = layer.neurons().bias.as_vec();
    for c in 0..2 {
        let mut b = bias.clone();
        b[c] += 1e-6;
        layer.neurons_mut().bias.copy_from(&b);
        let up = loss_value(&layer, &x, &t);
        b[c] -= 2e-6;
        layer.neurons_mut().bias.copy_from(&b);
        let down = loss_value(&layer, &x, &t);
        layer.neurons_mut().bias.copy_from(&bias);
        let numeric = (up - down) / 2e-6 / 4.0;
        assert!(
            (numeric - report.mean_error[c]).abs() < 1e-7,
            "neuron {c}: captured {} vs finite difference {numeric}",
            report.mean_error[c]
        );
    }
}

/// `y = Wx + b + Σⱼ wⱼ ⊙ tanh(Wⱼx + bⱼ + Σₖ<ⱼ cⱼₖ ⊙ aₖ)` computed by hand from the layer's
/// tensors, per row of `x` (every axis but the last flattened).
fn by_definition(layer: &mut Dendritic<Lin>, x: &[f64], dendrites: usize) -> Vec<f64> {
    let mut read = Read(Vec::new());
    layer.visit_params("", &mut read).unwrap();
    let get = |path: &str| {
        read.0
            .iter()
            .find(|(p, ..)| p == path)
            .unwrap_or_else(|| panic!("no tensor at {path}"))
            .3
            .clone()
    };
    // (weight (2, 3), bias (2)) of a Linear<3, 2>
    let affine = |w: &[f64], b: &[f64], row: &[f64]| -> Vec<f64> {
        (0..2)
            .map(|n| b[n] + (0..3).map(|i| w[n * 3 + i] * row[i]).sum::<f64>())
            .collect()
    };
    let mut out = Vec::new();
    for row in x.chunks(3) {
        let mut y = affine(&get("neurons.weight"), &get("neurons.bias"), row);
        let mut acts: Vec<Vec<f64>> = Vec::new();
        for j in 0..dendrites {
            let d = format!("dendrites.{j}");
            let mut z = affine(
                &get(&format!("{d}.module.weight")),
                &get(&format!("{d}.module.bias")),
                row,
            );
            for (k, a) in acts.iter().enumerate() {
                let c = get(&format!("{d}.cascade.{k}"));
                (0..2).for_each(|n| z[n] += c[n] * a[n]);
            }
            let a: Vec<f64> = z.iter().map(|z| z.tanh()).collect();
            let w = get(&format!("{d}.output"));
            (0..2).for_each(|n| y[n] += w[n] * a[n]);
            acts.push(a);
        }
        out.extend(y);
    }
    out
}

#[test]
fn forward_matches_its_definition_for_inputs_of_rank_1_to_3() {
    // frozen Linear dendrites take a fused path on the CPU (one matrix product, the bias added
    // in the dendrite sum); inference and training must both equal the definition
    let dev = TestDevice::seed_from_u64(13);
    let close = |a: &[f64], b: &[f64]| {
        a.len() == b.len() && a.iter().zip(b).all(|(a, b)| (a - b).abs() < 1e-12)
    };
    for dendrites in [1, 3] {
        let mut layer = layer(DendriteLearning::Correlation, dendrites);
        let x1: Tensor<Rank1<3>, f64, TestDevice> = dev.sample_normal();
        let x2: Tensor<Rank2<4, 3>, f64, TestDevice> = dev.sample_normal();
        let x3: Tensor<(usize, Const<5>, Const<3>), f64, TestDevice> =
            dev.sample_normal_like(&(2, Const, Const));
        let want1 = by_definition(&mut layer, &x1.as_vec(), dendrites);
        let want2 = by_definition(&mut layer, &x2.as_vec(), dendrites);
        let want3 = by_definition(&mut layer, &x3.as_vec(), dendrites);
        assert!(close(&layer.forward(x1.clone()).as_vec(), &want1));
        assert!(close(&layer.forward(x2.clone()).as_vec(), &want2));
        assert!(close(&layer.forward(x3.clone()).as_vec(), &want3));
        let trained = layer.forward_mut(x2.clone().leaky_traced());
        assert!(close(&trained.retaped::<NoneTape>().as_vec(), &want2));
        // a transposed (non-contiguous) input
        let xt: Tensor<Rank2<3, 4>, f64, TestDevice> = dev.sample_normal();
        let xt = xt.permute::<Rank2<4, 3>, _>();
        let want = by_definition(&mut layer, &xt.as_vec(), dendrites);
        assert!(close(&layer.forward(xt).as_vec(), &want));
    }
}
