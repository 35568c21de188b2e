//! Convolution on the CPU: im2col and matrix products, as one op with its own backward.
//!
//! For each batch element the input's windows are copied into a column matrix
//! `cols (I·Kⁿ × positions)` (im2col), and the output is one product
//! `y_b (O × positions) = W (O × I·Kⁿ) · cols_b + bias`. The backward pass takes
//! `dW += dy_b · cols_bᵀ`, `dbias += Σ dy_b` and `dcols_b = Wᵀ · dy_b`, which col2im adds back
//! into `dx` (overlapping windows accumulate). The products are dfdx's own CPU kernel (the
//! `gemm` crate, on all threads); the columns are kept from the forward pass for the weight
//! gradient. Batch elements are spread over rayon's thread pool (the one dfdx's products use,
//! sized by `RAYON_NUM_THREADS`); with fewer elements than threads, each product uses them all.
//!
//! The gather version in [`super::unfold`] computes the same from dfdx ops, on any device: it
//! is what runs elsewhere and the reference this kernel is tested against.

use std::mem::MaybeUninit;
use std::sync::Arc;

use dfdx::shapes::{Const, Dim, HasShape};
use dfdx::tensor::{Gradients, PutTape, SplitTape, Tape, Tensor};
use dfdx::tensor_ops::Device;

use crate::float::Float;
use rayon::prelude::*;

use crate::host::{
    grad_mut, host, matmul, matmul_serial, memo, put_backward, shared, Dst, Operand,
};

/// The geometry of one convolution call: `channels` input channels of `numel` elements each,
/// `offsets` kernel offsets and `positions` output positions, and for each offset the input
/// elements its row of columns reads, as runs.
pub(super) struct Geometry {
    pub channels: usize,
    pub numel: usize,
    pub offsets: usize,
    pub positions: usize,
    /// Per kernel offset, its row's runs in position order.
    pub runs: Vec<Vec<Run>>,
}

/// Consecutive output positions `at..at + len` of one kernel offset that read input elements
/// `from, from + step, ...` (`Some((from, step))`), or the padding (`None`). With stride 1 most
/// runs are whole rows of the image with step 1, which im2col copies and col2im adds as slices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Run {
    pub at: usize,
    pub len: usize,
    pub src: Option<(usize, usize)>,
}

impl Geometry {
    /// From the gather index of [`super::unfold::Window::index`] (`offsets × positions`,
    /// `numel` in the padding).
    pub fn new(
        channels: usize,
        numel: usize,
        offsets: usize,
        positions: usize,
        idx: &[usize],
    ) -> Self {
        let runs = (0..offsets)
            .map(|k| runs(&idx[k * positions..(k + 1) * positions], numel))
            .collect();
        Self {
            channels,
            numel,
            offsets,
            positions,
            runs,
        }
    }

    /// Rows of the column matrix: one per input channel and kernel offset.
    fn rows(&self) -> usize {
        self.channels * self.offsets
    }

    /// What the columns of `batch` elements depend on besides the input's values: every
    /// size and every run (the key under which [`memo`] shares them).
    fn key(&self, batch: usize) -> Vec<usize> {
        let mut key = vec![
            batch,
            self.channels,
            self.numel,
            self.offsets,
            self.positions,
        ];
        for row in &self.runs {
            key.push(row.len());
            for run in row {
                let (from, step) = run.src.unwrap_or((usize::MAX, usize::MAX));
                key.extend([run.at, run.len, from, step]);
            }
        }
        key
    }

    /// For each `(W, bias)` of `params` (`W` is `O × rows`, `bias` has `O` values), the output
    /// `(B, O, positions)` of `W · cols_b + bias` for every batch element of `x`
    /// (`(B, channels, numel)`), from `columns` (every element's, `rows × positions` each)
    /// made here or found. Every product of an element follows its columns at once, while
    /// they are in cache.
    fn forward<E: Float>(
        &self,
        x: &[E],
        params: &[(&[E], &[E])],
        columns: Columns<'_, E>,
    ) -> Vec<Vec<E>> {
        let (rows, p) = (self.rows(), self.positions);
        let per_input = self.channels * self.numel;
        let batch = x.len() / per_input.max(1);
        let lens: Vec<usize> = params.iter().map(|(_, b)| batch * b.len() * p).collect();
        let mut outs: Vec<Vec<E>> = lens.iter().map(|&n| Vec::with_capacity(n)).collect();
        if p == 0 {
            return outs;
        }
        // every `W` stacked (`stacked_rows × rows`), for more than one
        let stacked: Vec<E> = match params {
            [_] => Vec::new(),
            _ => params.iter().flat_map(|(w, _)| w.iter().copied()).collect(),
        };
        let weights = match params {
            [(w, _)] => *w,
            _ => &stacked[..],
        };
        let stacked_rows: usize = params.iter().map(|(_, bias)| bias.len()).sum();
        // one batch element: its columns when they are made, one product of every `W` into a
        // buffer that stays in cache, then each output's rows written once with their bias
        let element =
            |bi: usize, outs: Vec<&mut [MaybeUninit<E>]>, cols: Columns<'_, E>, threaded: bool| {
                let cols: &[E] = match cols {
                    Columns::Make(cols) => {
                        self.im2col(&x[bi * per_input..][..per_input], cols);
                        cols
                    }
                    Columns::Found(all) => &all[bi * rows * p..][..rows * p],
                };
                // a pooled buffer: a fresh one would be mapped and faulted in anew
                let mut all = shared::<E>().reused(stacked_rows * p);
                let (dst, w, cols) = (
                    Dst::new(&mut all, stacked_rows, p, false),
                    Operand::new(weights, stacked_rows, rows, false),
                    Operand::new(cols, rows, p, false),
                );
                if threaded {
                    matmul(dst, w, cols);
                } else {
                    matmul_serial(dst, w, cols);
                }
                let mut rest = &all[..];
                for (out, (_, bias)) in outs.into_iter().zip(params) {
                    let (part, tail) = rest.split_at(out.len());
                    for ((out, row), b) in out.chunks_mut(p).zip(part.chunks(p)).zip(*bias) {
                        for (o, v) in out.iter_mut().zip(row) {
                            o.write(*v + *b);
                        }
                    }
                    rest = tail;
                }
                shared::<E>().give([all]);
            };
        let spare = (outs.iter_mut().zip(&lens))
            .map(|(out, &n)| &mut out.spare_capacity_mut()[..n])
            .collect();
        let per_element = by_element(spare, batch);
        // batch elements over the threads; with fewer elements than threads, each product
        // uses them all instead
        let threaded = batch < rayon::current_num_threads();
        let c = rows * p;
        match (columns, threaded) {
            (Columns::Make(made), false) => {
                (per_element.into_par_iter().zip(made.par_chunks_mut(c)))
                    .enumerate()
                    .for_each(|(bi, (outs, cols))| element(bi, outs, Columns::Make(cols), false));
            }
            (Columns::Make(made), true) => (per_element.into_iter().zip(made.chunks_mut(c)))
                .enumerate()
                .for_each(|(bi, (outs, cols))| element(bi, outs, Columns::Make(cols), true)),
            (Columns::Found(all), false) => (per_element.into_par_iter().enumerate())
                .for_each(|(bi, outs)| element(bi, outs, Columns::Found(all), false)),
            (Columns::Found(all), true) => (per_element.into_iter().enumerate())
                .for_each(|(bi, outs)| element(bi, outs, Columns::Found(all), true)),
        }
        for (out, n) in outs.iter_mut().zip(lens) {
            // SAFETY: `by_element` cut each output's first `n` values into one slice per batch
            // element, every element's call above wrote every value of its slices, and all
            // calls returned (a panic in one would have unwound past this line)
            unsafe { out.set_len(n) };
        }
        outs
    }

    /// The columns of one batch element `x` (`channels × numel`) into `cols`
    /// (`rows × positions`, row-major); padding reads zero.
    fn im2col<E: Float>(&self, x: &[E], cols: &mut [E]) {
        let rows = cols.chunks_exact_mut(self.positions.max(1));
        for (r, row) in rows.enumerate() {
            let (c, k) = (r / self.offsets, r % self.offsets);
            let channel = &x[c * self.numel..(c + 1) * self.numel];
            for run in &self.runs[k] {
                let dst = &mut row[run.at..run.at + run.len];
                match run.src {
                    None => dst.fill(E::zero()),
                    Some((from, 1)) => dst.copy_from_slice(&channel[from..from + run.len]),
                    Some((from, step)) => {
                        for (i, d) in dst.iter_mut().enumerate() {
                            *d = channel[from + i * step];
                        }
                    }
                }
            }
        }
    }

    /// Adds the column gradients `dcols` (`rows × positions`) of one batch element into its
    /// input gradient `dx` (`channels × numel`); padding takes nothing.
    fn col2im<E: Float>(&self, dcols: &[E], dx: &mut [E]) {
        let rows = dcols.chunks_exact(self.positions.max(1));
        for (r, row) in rows.enumerate() {
            let (c, k) = (r / self.offsets, r % self.offsets);
            let channel = &mut dx[c * self.numel..(c + 1) * self.numel];
            for run in &self.runs[k] {
                let g = &row[run.at..run.at + run.len];
                match run.src {
                    None => {}
                    Some((from, 1)) => {
                        for (d, g) in channel[from..from + run.len].iter_mut().zip(g) {
                            *d += *g;
                        }
                    }
                    Some((from, step)) => {
                        for (i, g) in g.iter().enumerate() {
                            channel[from + i * step] += *g;
                        }
                    }
                }
            }
        }
    }
}

/// One kernel offset's row of the gather index as runs: padding, or elements a constant step
/// apart.
fn runs(row: &[usize], numel: usize) -> Vec<Run> {
    let mut runs = Vec::new();
    let mut q = 0;
    while q < row.len() {
        let first = row[q];
        let mut end = q + 1;
        if first >= numel {
            while end < row.len() && row[end] >= numel {
                end += 1;
            }
            runs.push(Run {
                at: q,
                len: end - q,
                src: None,
            });
        } else {
            let step = match row.get(end) {
                Some(&next) if next < numel && next > first => next - first,
                _ => 1,
            };
            while end < row.len() && row[end] < numel && row[end] == row[end - 1] + step {
                end += 1;
            }
            runs.push(Run {
                at: q,
                len: end - q,
                src: Some((first, step)),
            });
        }
        q = end;
    }
    runs
}

/// `y[b, o, q] = bias[o] + Σ_r weight[o, r] · cols_b[r, q]`: the convolution of `x`
/// (`(B, I, numel)`) with `weight` (`(O, I·Kⁿ)`) and `bias`, all on tape `T`, as one op on the
/// CPU. Call only on the CPU with `f32` or `f64`.
///
/// # Errors
/// Backend errors.
pub(super) fn convolve<B: Dim, const I: usize, const O: usize, E, D, T>(
    x: Tensor<(B, Const<I>, usize), E, D, T>,
    weight: Tensor<(Const<O>, usize), E, D, T>,
    bias: Tensor<(Const<O>,), E, D, T>,
    geometry: Geometry,
) -> Result<Tensor<(B, Const<O>, usize), E, D, T>, D::Err>
where
    E: Float,
    D: Device<E>,
    T: Tape<E, D>,
{
    let (b, _, _) = *x.shape();
    let (x, x_tape) = x.split_tape();
    let (weight, w_tape) = weight.split_tape();
    let (bias, b_tape) = bias.split_tape();
    let tape = x_tape.merge(w_tape).merge(b_tape);
    let (x, x_host) = shared::<E>().host(x)?;
    let (weight, w_host) = host(weight)?;
    let b_host = bias.as_vec();
    let batch = b.size();
    let (rows, p) = (geometry.rows(), geometry.positions);
    // the columns of an equal input under the same geometry, made earlier in this dendritic
    // layer's forward pass (the neurons' or another dendrite's); else made here, into a
    // buffer kept from call to call (freed each step, glibc would hand it back to the system
    // and page-fault it in again)
    // the key (every run of the geometry) only where something can be kept
    let key = memo::open().then(|| geometry.key(batch));
    let hit = key
        .as_ref()
        .and_then(|k| memo::find::<E>(k, &x_host, Some((&w_host, &b_host))));
    let (found, made_for_me) = hit.map_or((None, None), |(cols, out)| (Some(cols), out));
    let mut made = match found {
        Some(_) => Vec::new(),
        None => shared::<E>().reused(batch * rows * p),
    };
    // frozen copies of this layer that asked for their products (`memo::want`): taken with
    // ours, each batch element's together while its columns are in cache
    let wanted = match (&key, &found) {
        (Some(_), None) => memo::wanted::<E>(w_host.len(), b_host.len()),
        _ => Vec::new(),
    };
    let columns = match &found {
        Some(all) => Columns::Found(all),
        None => Columns::Make(&mut made),
    };
    let (out, for_copies) = match made_for_me {
        Some(out) => (out, Vec::new()),
        None => forward_with_copies(&geometry, &x_host, (&w_host, &b_host), columns, wanted),
    };
    let cols = found.unwrap_or_else(|| {
        let made = Arc::new(made);
        match key {
            Some(key) => memo::keep(key, x_host, &made, for_copies),
            None => shared::<E>().give([x_host]),
        }
        made
    });
    let dev = x.device().clone();
    let y = dev.try_tensor_from_vec(out, (b, Const::<O>, p))?;
    if !T::OWNS_TAPE {
        memo::release(cols);
        return Ok(y.put_tape(tape));
    }
    let saved = Saved {
        x,
        weight,
        bias,
        w_host,
        cols,
        geometry,
        batch,
        out: O,
    };
    Ok(put_backward(y, tape, move |grads, dy| {
        saved.backward(grads, dy)
    }))
}

/// Each of `batch` elements' slice of every output in `outs`.
fn by_element<T>(outs: Vec<&mut [T]>, batch: usize) -> Vec<Vec<&mut [T]>> {
    let mut per_element: Vec<Vec<&mut [T]>> = (0..batch).map(|_| Vec::new()).collect();
    for out in outs {
        let len = out.len() / batch.max(1);
        for (slot, chunk) in per_element.iter_mut().zip(out.chunks_mut(len.max(1))) {
            slot.push(chunk);
        }
    }
    per_element
}

/// [`Geometry::forward`] of `(w, bias)` and, when frozen copies asked for theirs (`wanted`),
/// of their parameters too, each batch element's products together.
fn forward_with_copies<E: Float>(
    geometry: &Geometry,
    x: &[E],
    (w, bias): (&[E], &[E]),
    columns: Columns<'_, E>,
    wanted: Vec<memo::Wanted<E>>,
) -> (Vec<E>, Vec<memo::Made<E>>) {
    let params: Vec<(&[E], &[E])> = std::iter::once((w, bias))
        .chain(wanted.iter().map(|c| (&c.weight[..], &c.bias[..])))
        .collect();
    let mut outs = geometry.forward(x, &params, columns).into_iter();
    let ours = outs.next().unwrap_or_default();
    let made = wanted
        .into_iter()
        .zip(outs)
        .map(|(wanted, out)| memo::Made { wanted, out })
        .collect();
    (ours, made)
}

/// Columns in the forward pass: to be made into this slice, or found (made by an earlier call
/// on an equal input); every batch element's, or one element's.
enum Columns<'a, E> {
    Make(&'a mut [E]),
    Found(&'a [E]),
}

/// What the backward pass needs from the forward pass.
struct Saved<B: Dim, const I: usize, const O: usize, E: Float, D: Device<E>> {
    x: Tensor<(B, Const<I>, usize), E, D>,
    weight: Tensor<(Const<O>, usize), E, D>,
    bias: Tensor<(Const<O>,), E, D>,
    w_host: Vec<E>,
    /// Every batch element's columns, `rows × positions` each (perhaps shared with other
    /// convolutions of the same input).
    cols: Arc<Vec<E>>,
    geometry: Geometry,
    batch: usize,
    out: usize,
}

impl<B: Dim, const I: usize, const O: usize, E: Float, D: Device<E>> Saved<B, I, O, E, D> {
    /// The gradients of the input, weight and bias from the output's, `dy`.
    fn backward(self, grads: &mut Gradients<E, D>, dy: &[E]) -> Result<(), D::Err> {
        let (rows, p, o) = (self.geometry.rows(), self.geometry.positions, self.out);
        let db = grad_mut(grads, &self.bias)?;
        for dy_b in dy.chunks_exact((o * p).max(1)) {
            for (d, run) in db.iter_mut().zip(dy_b.chunks_exact(p.max(1))) {
                *d += run.iter().fold(E::zero(), |s, v| s + *v);
            }
        }
        if p == 0 {
            memo::release(self.cols);
            return Ok(());
        }
        // batch elements in one chunk per thread: each chunk's weight gradient apart, summed
        // after; each element's input gradient through a column buffer of the chunk's own.
        // The weight gradient is taken transposed, `dWᵀ += cols_b · dy_bᵀ` (`rows × O`): so
        // the product's long side (the columns' rows) is the one the kernel vectorises, and it
        // reads the columns as stored instead of first copying them into panels (the
        // transposed form took 4.9 ms of the bench's step with `gemm` 0.15 and 3.4 ms with
        // 0.19's AVX-512 kernels; this one 4.1 and 1.8 ms)
        let per_input = I * self.geometry.numel;
        let chunk = self.batch.div_ceil(rayon::current_num_threads()).max(1);
        let dx = grad_mut(grads, &self.x)?;
        let partials: Vec<Vec<E>> = dx
            .par_chunks_mut((per_input * chunk).max(1))
            .enumerate()
            .map(|(t, dx_chunk)| {
                let mut dw_t = vec![E::zero(); rows * o];
                let mut dcols = shared::<E>().reused(rows * p);
                for (j, dx_b) in dx_chunk.chunks_mut(per_input.max(1)).enumerate() {
                    let bi = t * chunk + j;
                    let dy_b = &dy[bi * o * p..][..o * p];
                    let cols_b = &self.cols[bi * rows * p..][..rows * p];
                    matmul_serial(
                        Dst::new(&mut dw_t, rows, o, true),
                        Operand::new(cols_b, rows, p, false),
                        Operand::new(dy_b, o, p, true),
                    );
                    matmul_serial(
                        Dst::new(&mut dcols, rows, p, false),
                        Operand::new(&self.w_host, o, rows, true),
                        Operand::new(dy_b, o, p, false),
                    );
                    self.geometry.col2im(&dcols, dx_b);
                }
                shared::<E>().give([dcols]);
                dw_t
            })
            .collect();
        let dw = grad_mut(grads, &self.weight)?;
        for part in partials {
            for (d, row) in dw.chunks_exact_mut(rows.max(1)).zip(0..o) {
                for (d, v) in d.iter_mut().zip(part.iter().skip(row).step_by(o)) {
                    *d += *v;
                }
            }
        }
        memo::release(self.cols);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
