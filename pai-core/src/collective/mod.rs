//! Collective communication between the replicas of a data-parallel run.
//!
//! A [`Collective`] connects `world` replicas, numbered `0..world` (their rank): sum
//! all-reduce and broadcast from rank 0 of host buffers, and a barrier. Every replica must
//! make the same calls in the same order with buffers of the same length; a replica that
//! stops (an error, a panic, the end of its work) makes the others' next call fail with
//! [`Error::Collective`](crate::Error::Collective) instead of waiting forever.
//!
//! Backends: [`threads`] (replicas as threads of one process, always built) and `mpi` (one
//! process per replica under `mpiexec`, feature `mpi`). A backend of your own implements
//! [`Collective`] and runs each process's work with its replica installed.
//!
//! The replica running on a thread is installed there ([`install`]) for the length of its
//! work; the optimizer step and the candidates' statistics find it with [`current`] and
//! reduce through it, so the user's training loop is the same with or without replicas (see
//! [`crate::parallel`]).

#[cfg(feature = "mpi")]
pub mod mpi;
#[cfg(feature = "nccl")]
pub mod nccl;
pub mod threads;

use std::cell::RefCell;
use std::rc::Rc;

use crate::error::Result;
use crate::float::{Float, Floats};

/// A group of replicas: ranks, sums and broadcasts of host buffers.
pub trait Collective {
    /// This replica's number, `0..world`.
    fn rank(&self) -> usize;
    /// The number of replicas.
    fn world(&self) -> usize;
    /// Replaces `values` on every replica by the element-wise sum over all replicas. The sum
    /// is the same, bit for bit, on every replica.
    ///
    /// # Errors
    /// [`Error::Collective`](crate::Error::Collective) when a replica stopped or the lengths differ.
    fn all_reduce_f64(&self, values: &mut [f64]) -> Result<()>;
    /// [`Self::all_reduce_f64`] for `f32`.
    ///
    /// # Errors
    /// As [`Self::all_reduce_f64`].
    fn all_reduce_f32(&self, values: &mut [f32]) -> Result<()>;
    /// Replaces `values` on every replica by rank 0's.
    ///
    /// # Errors
    /// As [`Self::all_reduce_f64`].
    fn broadcast_f64(&self, values: &mut [f64]) -> Result<()>;
    /// [`Self::broadcast_f64`] for `f32`.
    ///
    /// # Errors
    /// As [`Self::all_reduce_f64`].
    fn broadcast_f32(&self, values: &mut [f32]) -> Result<()>;
    /// Returns once every replica has called it.
    ///
    /// # Errors
    /// [`Error::Collective`](crate::Error::Collective) when a replica stopped.
    fn barrier(&self) -> Result<()>;
}

thread_local! {
    static CURRENT: RefCell<Option<Rc<dyn Collective>>> = const { RefCell::new(None) };
}

/// The replica installed on this thread, if any.
pub fn current() -> Option<Rc<dyn Collective>> {
    CURRENT.with(|c| c.borrow().clone())
}

/// The installed replica when there is more than one (a group of one reduces nothing).
pub(crate) fn active() -> Option<Rc<dyn Collective>> {
    current().filter(|c| c.world() > 1)
}

/// Installs `collective` on this thread until the guard is dropped (the one installed before
/// comes back then).
#[must_use = "the replica is uninstalled when the guard is dropped"]
pub fn install(collective: Rc<dyn Collective>) -> Installed {
    let before = CURRENT.with(|c| c.borrow_mut().replace(collective));
    Installed { before }
}

/// Keeps a replica installed on this thread (see [`install`]).
pub struct Installed {
    before: Option<Rc<dyn Collective>>,
}

impl Drop for Installed {
    fn drop(&mut self) {
        let before = self.before.take();
        CURRENT.with(|c| *c.borrow_mut() = before);
    }
}

impl std::fmt::Debug for Installed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Installed").finish_non_exhaustive()
    }
}

/// [`Collective::all_reduce_f64`] or `_f32`, by `E`.
///
/// # Errors
/// As the backend's.
pub fn all_reduce<E: Float>(c: &dyn Collective, values: &mut [E]) -> Result<()> {
    match E::concrete(values) {
        Floats::F32(v) => c.all_reduce_f32(v),
        Floats::F64(v) => c.all_reduce_f64(v),
    }
}

/// [`Collective::broadcast_f64`] or `_f32`, by `E`.
///
/// # Errors
/// As the backend's.
pub fn broadcast<E: Float>(c: &dyn Collective, values: &mut [E]) -> Result<()> {
    match E::concrete(values) {
        Floats::F32(v) => c.broadcast_f32(v),
        Floats::F64(v) => c.broadcast_f64(v),
    }
}

/// Whether `ok` holds on every replica: the same answer everywhere, so that all of them take
/// the same branch after a local failure.
///
/// # Errors
/// As the backend's.
pub fn all_ok(c: &dyn Collective, ok: bool) -> Result<bool> {
    let mut failed = [if ok { 0.0 } else { 1.0 }];
    c.all_reduce_f64(&mut failed)?;
    Ok(failed[0] == 0.0)
}
