//! The bottom layer: host memory and gradient buffers.
//!
//! Fast CPU paths (the fused dendrite sum, the candidate statistics) read tensors as host
//! slices and write gradients straight into dfdx's gradient buffers; the optimizer moves its
//! moments between backend buffers and host vectors for checkpoints. Every such access lives
//! here, so the modules above never downcast a buffer or lend one out themselves.
//!
//! Nothing here knows about dendrites: this module imports only [`crate::float`] and
//! [`crate::error`].

mod gemm;
mod heap;
pub(crate) mod memo;
mod pool;

pub(crate) use gemm::{gemm_runs, matmul, matmul_serial, Dst, Operand};
pub(crate) use heap::retain_freed_memory;
pub(crate) use pool::{shared, Scratch};

use std::any::{Any, TypeId};
use std::sync::{Mutex, MutexGuard, PoisonError};

use dfdx::shapes::{HasShape, Shape};
use dfdx::tensor::{Cpu, Gradients, PutTape, Storage, Tape, Tensor, Trace};
use dfdx::tensor_ops::{Device, ReshapeTo, TryMul};

use crate::error::{Error, Result};
use crate::float::Float;

/// Whether `D` is the CPU, where tensors can be read and written as host slices.
pub(crate) fn on_host<E: Float, D: Device<E>>() -> bool {
    TypeId::of::<D>() == TypeId::of::<Cpu>()
}

/// Locks `m`, taking the value of a poisoned lock as it is: a panic inside a backward hook
/// cannot leave shared training state half-written in a way that matters more than losing
/// the run.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Contiguous host copy of `t`, and `t` itself (made contiguous).
pub(crate) fn host<S: Shape, E: Float, D: Device<E>, T: Tape<E, D>>(
    t: Tensor<S, E, D, T>,
) -> Result<(Tensor<S, E, D, T>, Vec<E>), D::Err> {
    host_into(t, Vec::new())
}

/// [`host`] into `v` (resized to fit; its old contents are overwritten).
pub(crate) fn host_into<S: Shape, E: Float, D: Device<E>, T: Tape<E, D>>(
    t: Tensor<S, E, D, T>,
    mut v: Vec<E>,
) -> Result<(Tensor<S, E, D, T>, Vec<E>), D::Err> {
    let shape = *t.shape();
    let t = t.try_reshape_like(&shape)?;
    // `copy_into` writes every element: a pooled vector of the right length is not cleared
    // first (only new elements are written twice)
    v.resize(shape.num_elements(), E::zero());
    t.copy_into(&mut v);
    Ok((t, v))
}

/// The gradient buffer of `t` (allocated if absent) as the CPU's vector type.
fn grad_buffer<'g, S: Shape, E: Float, D: Device<E>>(
    grads: &'g mut Gradients<E, D>,
    t: &Tensor<S, E, D>,
) -> Result<&'g mut <Cpu as Storage<E>>::Vec, D::Err> {
    Ok(host_buffer::<E, D>(grads.get_or_alloc_mut(t)?))
}

/// A backend buffer as the CPU's vector type.
fn host_buffer<E: Float, D: Device<E>>(
    buf: &mut <D as Storage<E>>::Vec,
) -> &mut <Cpu as Storage<E>>::Vec {
    (buf as &mut dyn Any)
        .downcast_mut::<<Cpu as Storage<E>>::Vec>()
        .expect("host gradient buffers exist on the CPU only (checked by on_host)")
}

/// `y` on `tape` with one more backward op, `f(grads, dy)`: `y`'s gradient `dy` is lent out of
/// `grads` for the call (so that other entries can be written while it is read, without
/// copying it) and put back after.
///
/// The op keeps `y`'s ghost (`Tensor::ghost`: its id and shape without its data) to find that
/// gradient, not a clone of `y`: a clone shares `y`'s buffer, and the next in-place write to
/// `y` (the dendrite sum's) would have to copy all of it first.
pub(crate) fn put_backward<S, E, D, T>(
    y: Tensor<S, E, D>,
    mut tape: T,
    f: impl FnOnce(&mut Gradients<E, D>, &[E]) -> Result<(), D::Err> + 'static,
) -> Tensor<S, E, D, T>
where
    S: Shape,
    E: Float,
    D: Device<E>,
    T: Tape<E, D>,
{
    let ghost = y.ghost();
    let dev = y.device().clone();
    tape.add_backward_op(move |grads| {
        lend_grad(
            grads,
            |g| g.get_or_alloc_mut(&ghost),
            &dev,
            |grads, dy| f(grads, dy),
        )
    });
    y.put_tape(tape)
}

/// Runs `f` with a gradient buffer lent out of `grads` (so that other entries can be written
/// while it is read or written) and puts it back. `slot` finds the buffer, allocating it if
/// absent: `|g| g.get_or_alloc_mut(&t)` for a tensor or its ghost.
pub(crate) fn lend_grad<E, D, R>(
    grads: &mut Gradients<E, D>,
    slot: impl for<'g> Fn(&'g mut Gradients<E, D>) -> Result<&'g mut <D as Storage<E>>::Vec, D::Err>,
    dev: &D,
    f: impl FnOnce(&mut Gradients<E, D>, &mut [E]) -> Result<R, D::Err>,
) -> Result<R, D::Err>
where
    E: Float,
    D: Device<E>,
{
    let mut lent = std::mem::replace(host_buffer::<E, D>(slot(grads)?), empty(dev)?);
    let out = f(grads, &mut lent);
    *host_buffer::<E, D>(slot(grads)?) = lent;
    out
}

/// The gradient buffer of `t` as a host slice (allocated if absent).
pub(crate) fn grad_mut<'g, S: Shape, E: Float, D: Device<E>>(
    grads: &'g mut Gradients<E, D>,
    t: &Tensor<S, E, D>,
) -> Result<&'g mut [E], D::Err> {
    Ok(&mut grad_buffer(grads, t)?[..])
}

/// `dst[i] += src[i]` (a gradient accumulated from host values).
pub(crate) fn add_into<E: Float>(dst: &mut [E], src: &[E]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d += *s;
    }
}

/// An empty CPU vector (no allocation), to stand in for a lent gradient buffer.
fn empty<E: Float, D: Device<E>>(dev: &D) -> Result<<Cpu as Storage<E>>::Vec, D::Err> {
    let mut v = Some(<D as Storage<E>>::try_alloc_len(dev, 0)?);
    Ok((&mut v as &mut dyn Any)
        .downcast_mut::<Option<<Cpu as Storage<E>>::Vec>>()
        .and_then(Option::take)
        .expect("host gradient buffers exist on the CPU only (checked by on_host)"))
}

/// Copies a backend buffer to the host (by lending it to a `Gradients` entry, the one public
/// way to read a `D::Vec`).
pub(crate) fn buffer_to_host<E: Float, D: Device<E>>(
    dev: &D,
    v: &<D as Storage<E>>::Vec,
) -> Result<Vec<E>> {
    let len = <D as Storage<E>>::len(dev, v);
    let key: Tensor<(usize,), E, D> = dev.try_zeros_like(&(len,)).map_err(Error::device)?;
    let mut grads = Gradients::leaky();
    *grads.get_or_alloc_mut(&key).map_err(Error::device)? = v.clone();
    Ok(grads.get(&key).as_vec())
}

/// Makes a backend buffer holding `values`: the gradient of `sum(k ⊙ values)` with respect to
/// `k` is exactly `values`.
pub(crate) fn buffer_from_host<E: Float, D: Device<E>>(
    dev: &D,
    values: &[E],
) -> Result<<D as Storage<E>>::Vec> {
    let len = values.len();
    let key: Tensor<(usize,), E, D> = dev.try_zeros_like(&(len,)).map_err(Error::device)?;
    let values = dev.tensor_from_vec(values.to_vec(), (len,));
    let mut grads = key
        .leaky_trace()
        .try_mul(values)
        .and_then(dfdx::tensor_ops::SumTo::try_sum)
        .and_then(dfdx::tensor_ops::Backward::try_backward)
        .map_err(Error::device)?;
    let mut out = <D as Storage<E>>::try_alloc_len(dev, len).map_err(Error::device)?;
    std::mem::swap(
        grads.get_or_alloc_mut(&key).map_err(Error::device)?,
        &mut out,
    );
    Ok(out)
}
