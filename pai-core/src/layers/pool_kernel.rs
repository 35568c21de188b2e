//! Max and average pooling on the CPU: one pass over each window, as one op with its own
//! backward, instead of the `gather` unfold and a reduction (which other devices run, and which
//! this kernel is tested against).
//!
//! Windows are read by the runs of [`super::im2col::Geometry`]; padding never wins a max (it is
//! `-inf`) and adds zero to a mean that still divides by the whole window (`PyTorch`'s
//! defaults, as the reference). The max's gradient goes to every element of the window equal to
//! the max, as dfdx's `max` does.

use dfdx::shapes::{Const, Dim, HasShape};
use dfdx::tensor::{PutTape, SplitTape, Tape, Tensor};
use dfdx::tensor_ops::Device;

use super::im2col::Geometry;
use crate::float::Float;
use crate::host::{grad_mut, host, put_backward};

/// The reduction over each window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reduce {
    Max,
    Mean,
}

impl Geometry {
    /// Adds the pooled output's gradient `dy` (`positions` a channel) into the input's `dx`
    /// (`numel` a channel): to every element a window reads, times `scale` (a mean), or, for a
    /// max (`max_of`: the input and the output on the host), to each element equal to its
    /// window's max.
    ///
    /// Where no two windows share an element (pooling with stride at least the window, the
    /// usual case), each element gets its one window's share in a pass over the input in
    /// order; otherwise the windows are walked run by run. Each element receives the same
    /// terms in the same order either way.
    fn add_input_grad<E: Float>(
        &self,
        dx: &mut [E],
        dy: &[E],
        numel: usize,
        max_of: Option<&(Vec<E>, Vec<E>)>,
        scale: E,
    ) {
        let p = self.positions;
        let owners = self.owners(numel);
        // times 1 or 0, not a branch: which elements hold their window's max is data, and a
        // branch on it was mispredicted often enough to take most of the pool's time
        let hit = |x: E, o: E| E::of_f64(f64::from(u8::from(x == o)));
        let per_channel = dx.chunks_mut(numel.max(1)).zip(dy.chunks(p.max(1)));
        for (c, (dx_c, dy_c)) in per_channel.enumerate() {
            let max_c = max_of.map(|(xh, out)| (&xh[c * numel..][..numel], &out[c * p..][..p]));
            match (max_c, &owners) {
                (Some((x_c, out_c)), Some(owners)) => {
                    for ((dx, x), &q) in dx_c.iter_mut().zip(x_c).zip(owners) {
                        // an element no window reads has no owner (`u32::MAX`: no position)
                        if let (Some(o), Some(g)) = (out_c.get(q as usize), dy_c.get(q as usize)) {
                            *dx += *g * hit(*x, *o);
                        }
                    }
                }
                (Some((x_c, out_c)), None) => self.each_run(|at, len, from, step| {
                    let reads = dx_c[from..].iter_mut().zip(&x_c[from..]).step_by(step);
                    let outs = out_c[at..at + len].iter().zip(&dy_c[at..at + len]);
                    for ((dx, x), (o, g)) in reads.zip(outs) {
                        *dx += *g * hit(*x, *o);
                    }
                }),
                (None, Some(owners)) => {
                    for (dx, &q) in dx_c.iter_mut().zip(owners) {
                        if let Some(g) = dy_c.get(q as usize) {
                            *dx += *g * scale;
                        }
                    }
                }
                (None, None) => self.each_run(|at, len, from, step| {
                    let reads = dx_c[from..].iter_mut().step_by(step);
                    for (dx, g) in reads.zip(&dy_c[at..at + len]) {
                        *dx += *g * scale;
                    }
                }),
            }
        }
    }

    /// For each of a channel's `numel` input elements, the output position whose window reads
    /// it (`u32::MAX` where none does); `None` when some element is read by two windows.
    fn owners(&self, numel: usize) -> Option<Vec<u32>> {
        let mut owners = vec![u32::MAX; numel];
        let mut shared = u32::try_from(self.positions).is_err();
        self.each_run(|at, len, from, step| {
            for (i, owner) in owners[from..]
                .iter_mut()
                .step_by(step)
                .take(len)
                .enumerate()
            {
                shared |= *owner != u32::MAX;
                *owner = u32::try_from(at + i).unwrap_or(u32::MAX);
            }
        });
        (!shared).then_some(owners)
    }

    /// `f(at, len, from, step)` for every run of every kernel offset that reads the input
    /// (padding left out): output positions `at..at + len` read input elements `from`,
    /// `from + step`, ...; in kernel-offset order.
    fn each_run(&self, mut f: impl FnMut(usize, usize, usize, usize)) {
        for runs in &self.runs {
            for run in runs {
                if let Some((from, step)) = run.src {
                    f(run.at, run.len, from, step);
                }
            }
        }
    }
}

/// Pools `x` (`(B, C, numel)`) over the windows of `geometry` (one channel at a time):
/// `(B, C, positions)`. Call only on the CPU.
///
/// # Errors
/// Backend errors.
pub(super) fn pool<B: Dim, const C: usize, E: Float, D: Device<E>, T: Tape<E, D>>(
    x: Tensor<(B, Const<C>, usize), E, D, T>,
    geometry: Geometry,
    reduce: Reduce,
) -> Result<Tensor<(B, Const<C>, usize), E, D, T>, D::Err> {
    let (b, _, numel) = *x.shape();
    let p = geometry.positions;
    let (x, tape) = x.split_tape();
    let (x, xh) = host(x)?;
    let start = match reduce {
        Reduce::Max => E::neg_infinity(),
        Reduce::Mean => E::zero(),
    };
    let mut out = vec![start; b.size() * C * p];
    let scale = E::one() / E::of_f64(geometry.offsets as f64);
    for (x_c, out_c) in xh.chunks(numel.max(1)).zip(out.chunks_mut(p.max(1))) {
        geometry.each_run(|at, len, from, step| {
            let reads = x_c[from..].iter().step_by(step);
            let outs = out_c[at..at + len].iter_mut();
            match reduce {
                Reduce::Max => outs.zip(reads).for_each(|(o, x)| *o = o.max(*x)),
                Reduce::Mean => outs.zip(reads).for_each(|(o, x)| *o += *x),
            }
        });
        if reduce == Reduce::Mean {
            for v in out_c.iter_mut() {
                *v *= scale;
            }
        }
    }
    let dev = x.device().clone();
    // the max's backward compares each element with its window's max: only it keeps the
    // input and the output on the host
    let max_of = (T::OWNS_TAPE && reduce == Reduce::Max).then(|| (xh, out.clone()));
    let y = dev.try_tensor_from_vec(out, (b, Const::<C>, p))?;
    if !T::OWNS_TAPE {
        return Ok(y.put_tape(tape));
    }
    Ok(put_backward(y, tape, move |grads, dy| {
        geometry.add_input_grad(grad_mut(grads, &x)?, dy, numel, max_of.as_ref(), scale);
        Ok(())
    }))
}
