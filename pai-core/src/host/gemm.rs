//! Matrix products on host slices, by the `gemm` crate, for the convolution and the fused
//! dendrite sum: they compute products and gradients in vectors they own and in gradient
//! buffers, where dfdx's product would allocate a tensor and a gradient each step.
//!
//! With the feature `avx512` (on by default in `perforated`) the kernel is `gemm` 0.19, whose
//! AVX-512 kernels run on stable Rust where the CPU has them (chosen at run time; AVX2
//! elsewhere): a convolution step takes about two thirds of the time it takes with AVX2.
//! Without it, the kernel is dfdx 0.13's own (`gemm` 0.15, AVX2 only on stable), whose results
//! are the same bits on every machine with AVX2; with it, results differ in the last bits
//! between machines with and without AVX-512.

#[cfg(not(feature = "avx512"))]
use gemm as kernel;
#[cfg(feature = "avx512")]
use gemm_avx512 as kernel;

use std::any::TypeId;

use crate::float::Float;

/// Whether [`matmul`] runs in `E`: the `gemm` crate multiplies `f32` and `f64`.
pub(crate) fn gemm_runs<E: Float>() -> bool {
    TypeId::of::<E>() == TypeId::of::<f32>() || TypeId::of::<E>() == TypeId::of::<f64>()
}

/// A row-major `rows × cols` matrix in a slice, read as stored or transposed.
pub(crate) struct Operand<'a, E> {
    data: &'a [E],
    rows: usize,
    cols: usize,
    transposed: bool,
}

impl<'a, E> Operand<'a, E> {
    /// `data` holds `rows × cols` row-major; the operand is its transpose when `transposed`.
    pub(crate) fn new(data: &'a [E], rows: usize, cols: usize, transposed: bool) -> Self {
        assert_eq!(data.len(), rows * cols, "matrix operand of the wrong size");
        Self {
            data,
            rows,
            cols,
            transposed,
        }
    }

    /// `(rows, cols, row stride, column stride)` of the operand as used.
    fn view(&self) -> (usize, usize, isize, isize) {
        let (rows, cols) = (self.rows, self.cols);
        match self.transposed {
            false => (rows, cols, cols as isize, 1),
            true => (cols, rows, 1, cols as isize),
        }
    }
}

/// A row-major `rows × cols` destination, overwritten or added to.
pub(crate) struct Dst<'a, E> {
    data: &'a mut [E],
    rows: usize,
    cols: usize,
    accumulate: bool,
}

impl<'a, E> Dst<'a, E> {
    pub(crate) fn new(data: &'a mut [E], rows: usize, cols: usize, accumulate: bool) -> Self {
        assert_eq!(
            data.len(),
            rows * cols,
            "matrix destination of the wrong size"
        );
        Self {
            data,
            rows,
            cols,
            accumulate,
        }
    }
}

/// `dst (+)= a · b` by the `gemm` crate, on rayon's global pool (as dfdx's products).
pub(crate) fn matmul<E: Float>(dst: Dst<'_, E>, a: Operand<'_, E>, b: Operand<'_, E>) {
    product(dst, a, b, kernel::Parallelism::Rayon(0));
}

/// [`matmul`] on the calling thread only: for callers that already spread their work over the
/// thread pool.
pub(crate) fn matmul_serial<E: Float>(dst: Dst<'_, E>, a: Operand<'_, E>, b: Operand<'_, E>) {
    product(dst, a, b, kernel::Parallelism::None);
}

// operands are small borrowed views, built for the one call
#[allow(clippy::needless_pass_by_value)]
fn product<E: Float>(
    dst: Dst<'_, E>,
    a: Operand<'_, E>,
    b: Operand<'_, E>,
    parallelism: kernel::Parallelism,
) {
    let (m, k, a_rs, a_cs) = a.view();
    let (k2, n, b_rs, b_cs) = b.view();
    assert!(
        k == k2 && dst.rows == m && dst.cols == n,
        "matrix product of mismatched shapes"
    );
    assert!(gemm_runs::<E>(), "gemm multiplies f32 and f64 only");
    // SAFETY: the asserts above (and in `Operand::new`, `Dst::new`) make every index the
    // strides reach lie in its slice: an `r × c` row-major slice is read at
    // `i * c + j` (or `j * c + i` transposed) for `i < r`, `j < c`. `dst` is borrowed mutably
    // and so overlaps neither operand; `E` is f32 or f64, which gemm supports.
    unsafe {
        kernel::gemm(
            m,
            n,
            k,
            dst.data.as_mut_ptr(),
            1,
            n as isize,
            dst.accumulate,
            a.data.as_ptr(),
            a_cs,
            a_rs,
            b.data.as_ptr(),
            b_cs,
            b_rs,
            E::one(),
            E::one(),
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matmul_matches_its_definition_stored_either_way_and_accumulating() {
        // a (3 × 4) · b (4 × 2), each operand stored as is or transposed
        let a: Vec<f64> = (0..12).map(|i| f64::from(i) * 0.5 - 2.0).collect();
        let b: Vec<f64> = (0..8).map(|i| 1.0 / (f64::from(i) + 1.0)).collect();
        let transpose = |m: &[f64], rows: usize, cols: usize| -> Vec<f64> {
            (0..cols)
                .flat_map(|j| (0..rows).map(move |i| m[i * cols + j]))
                .collect()
        };
        let (a_t, b_t) = (transpose(&a, 3, 4), transpose(&b, 4, 2));
        for (a_stored_t, b_stored_t) in [(false, false), (true, false), (false, true), (true, true)]
        {
            for accumulate in [false, true] {
                let lhs = match a_stored_t {
                    false => Operand::new(&a, 3, 4, false),
                    true => Operand::new(&a_t, 4, 3, true),
                };
                let rhs = match b_stored_t {
                    false => Operand::new(&b, 4, 2, false),
                    true => Operand::new(&b_t, 2, 4, true),
                };
                let mut dst = vec![1.5; 6];
                matmul(Dst::new(&mut dst, 3, 2, accumulate), lhs, rhs);
                for i in 0..3 {
                    for j in 0..2 {
                        let start = if accumulate { 1.5 } else { 0.0 };
                        let want = start + (0..4).map(|k| a[i * 4 + k] * b[k * 2 + j]).sum::<f64>();
                        let got = dst[i * 2 + j];
                        assert!(
                            (got - want).abs() <= 1e-12,
                            "({i}, {j}) with a stored transposed {a_stored_t}, b {b_stored_t}, \
                             accumulating {accumulate}: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
