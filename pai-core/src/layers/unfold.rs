//! The shared core of convolution and pooling: unfold (im2col) by `gather`.
//!
//! dfdx 0.13 has no convolution on stable Rust, and its CPU `slice` backward overwrites
//! instead of accumulating, so windows are not cut with `slice`. Instead the input's spatial
//! axes are flattened, one zero slot is appended (padding reads it), and a single `gather`
//! picks, for every kernel offset and output position, the input element it reads. `gather`'s
//! backward accumulates, so overlapping windows get correct gradients on every device.

use dfdx::shapes::{Axes3, Axes4, Axis, Const, Dim, HasShape};
use dfdx::tensor::{Tape, Tensor};
use dfdx::tensor_ops::{Device, GatherTo, PermuteTo, ReshapeTo, TryConcatAlong, TryMul};

use crate::float::Float;

/// Geometry of a sliding window over `dims.len()` spatial axes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Kernel size (the same along every axis).
    pub kernel: usize,
    /// Stride.
    pub stride: usize,
    /// Zero padding on both sides.
    pub padding: usize,
    /// Dilation.
    pub dilation: usize,
}

impl Window {
    /// A window of `kernel` elements along every axis.
    #[must_use]
    pub const fn new(kernel: usize, stride: usize, padding: usize, dilation: usize) -> Self {
        Self {
            kernel,
            stride,
            padding,
            dilation,
        }
    }

    /// Output size along an axis of size `n` (0 when the input is smaller than the window).
    pub fn output_len(&self, n: usize) -> usize {
        let span = self.dilation * (self.kernel - 1) + 1;
        let padded = n + 2 * self.padding;
        if padded < span {
            0
        } else {
            (padded - span) / self.stride.max(1) + 1
        }
    }

    /// Output sizes and the gather index: entry `o * positions + q` is the flat input index
    /// that kernel offset `o` reads at output position `q`, or `numel` (the zero slot) in the
    /// padding.
    pub fn index(&self, dims: &[usize]) -> (Vec<usize>, Vec<usize>) {
        let out: Vec<usize> = dims.iter().map(|n| self.output_len(*n)).collect();
        let positions: usize = out.iter().product();
        let offsets = self.kernel.pow(dims.len() as u32);
        let numel: usize = dims.iter().product();
        let mut idx = Vec::with_capacity(offsets * positions);
        let rank = dims.len();
        let mut k = vec![0usize; rank];
        let mut q = vec![0usize; rank];
        for o in 0..offsets {
            // kernel offset o in row-major order over the spatial axes
            let mut rest = o;
            for a in (0..rank).rev() {
                k[a] = rest % self.kernel;
                rest /= self.kernel;
            }
            for p in 0..positions {
                let mut rest = p;
                for a in (0..rank).rev() {
                    q[a] = rest % out[a];
                    rest /= out[a];
                }
                let mut flat = 0usize;
                let mut inside = true;
                for a in 0..rank {
                    let at = (q[a] * self.stride + k[a] * self.dilation) as isize
                        - self.padding as isize;
                    if at < 0 || at as usize >= dims[a] {
                        inside = false;
                        break;
                    }
                    flat = flat * dims[a] + at as usize;
                }
                idx.push(if inside { flat } else { numel });
            }
        }
        (out, idx)
    }
}

/// Unfolds `x` (batch, channels, flattened spatial) into `(batch, positions, channels, offsets)`
/// columns, using the gather index of [`Window::index`]; padding reads `pad`.
///
/// # Errors
/// Backend errors (out of memory).
pub fn unfold<B: Dim, const C: usize, E: Float, D: Device<E>, T: Tape<E, D>>(
    x: Tensor<(B, Const<C>, usize), E, D, T>,
    idx: Vec<usize>,
    offsets: usize,
    positions: usize,
    pad: E,
) -> Result<Tensor<(B, usize, Const<C>, usize), E, D, T>, D::Err> {
    let (b, _, _) = *x.shape();
    let dev = x.device().clone();
    let pad_slot: Tensor<(B, Const<C>, usize), E, D> =
        dev.try_ones_like(&(b, Const, 1))?.try_mul(pad)?;
    let padded = (x, pad_slot).try_concat_along(Axis::<2>)?;
    let by_position = padded.try_permute::<(usize, B, Const<C>), Axes3<2, 0, 1>>()?;
    let n = idx.len();
    let idx = dev.try_tensor_from_vec(idx, (n,))?;
    let cols = by_position.try_gather::<(usize, B, Const<C>), (usize,)>(idx)?;
    let cols = cols.try_reshape_like(&(offsets, positions, b, Const::<C>))?;
    cols.try_permute::<(B, usize, Const<C>, usize), Axes4<2, 1, 3, 0>>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_reads_the_right_elements_with_padding_stride_and_dilation() {
        let w = Window::new(2, 2, 1, 1);
        // 1-d input of 4: padded [_, 0, 1, 2, 3, _]; windows start at -1, 1, 3
        let (out, idx) = w.index(&[4]);
        assert_eq!(out, [3]);
        assert_eq!(idx, [4, 1, 3, 0, 2, 4]);
        let w = Window::new(2, 1, 0, 2);
        let (out, idx) = w.index(&[5]);
        assert_eq!(out, [3]);
        assert_eq!(idx, [0, 1, 2, 2, 3, 4]);
        // 2-d 3x3, kernel 2: 4 offsets x 4 positions
        let w = Window::new(2, 1, 0, 1);
        let (out, idx) = w.index(&[3, 3]);
        assert_eq!(out, [2, 2]);
        assert_eq!(&idx[..4], [0, 1, 3, 4]);
        assert_eq!(&idx[12..], [4, 5, 7, 8]);
        assert_eq!(Window::new(5, 1, 0, 1).output_len(3), 0);
    }
}
