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
