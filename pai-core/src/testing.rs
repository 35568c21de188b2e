//! Helpers for the unit tests of numerical layers.

/// Central differences of `f` at `x`, compared with `analytic` (relative tolerance `tol`).
pub(crate) fn check_gradient(
    name: &str,
    f: impl Fn(&[f64]) -> f64,
    x: &[f64],
    analytic: &[f64],
    tol: f64,
) {
    assert_eq!(x.len(), analytic.len(), "{name}: gradient length");
    let eps = 1e-6;
    for i in 0..x.len() {
        let mut v = x.to_vec();
        v[i] = x[i] + eps;
        let up = f(&v);
        v[i] = x[i] - eps;
        let down = f(&v);
        let numeric = (up - down) / (2.0 * eps);
        assert!(
            (numeric - analytic[i]).abs() <= tol * (1.0 + numeric.abs()),
            "{name}[{i}]: autograd {} vs finite difference {numeric}",
            analytic[i]
        );
    }
}

/// [`check_gradient`] for the tensor `pick` selects in `model`: its gradient in `grads`
/// against central differences of `loss` with that tensor moved.
pub(crate) fn check_param<M: Clone, S: dfdx::shapes::Shape>(
    name: &str,
    model: &M,
    pick: fn(&mut M) -> &mut dfdx::tensor::Tensor<S, f64, dfdx::tensor::Cpu>,
    grads: &dfdx::tensor::Gradients<f64, dfdx::tensor::Cpu>,
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

/// Every pair of `got` and `want` (lists of values, compared list by list) within `tol`
/// relative to `1 + |want|`; `what` names the comparison in the failure.
pub(crate) fn assert_close<A: AsRef<[f64]>>(got: &[A], want: &[A], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: number of lists");
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        let (g, w) = (g.as_ref(), w.as_ref());
        assert_eq!(g.len(), w.len(), "{what}, list {k}: lengths");
        for (a, b) in g.iter().zip(w) {
            assert!(
                (a - b).abs() <= tol * (1.0 + b.abs()),
                "{what}, list {k}: {a} vs {b}"
            );
        }
    }
}
