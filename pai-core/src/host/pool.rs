//! [`Scratch`]: host vectors kept from one training step to the next.

use std::any::{Any, TypeId};
use std::sync::{Mutex, OnceLock};

use dfdx::shapes::{HasShape, Shape};
use dfdx::tensor::{Tape, Tensor};
use dfdx::tensor_ops::Device;

use super::{host_into, lock};
use crate::float::Float;

/// Host vectors of one layer's fused sum, kept from one step to the next.
///
/// Every step the sum needs a host vector per dendrite the size of the layer's output (its
/// activation, kept until the backward pass). Allocated afresh they are freed together at the
/// end of the step, and glibc hands the top of its heap back to the system and page-faults it
/// in again on the next step: with 3 gradient-mode dendrites at batch 256 that was about 250
/// page faults a step and a sixth of its time. A layer's vectors all have its output's size,
/// so the ones it gives back serve the next step as they are.
pub(crate) struct Scratch<E> {
    free: Mutex<Vec<Vec<E>>>,
}

impl<E> Default for Scratch<E> {
    fn default() -> Self {
        Self {
            free: Mutex::new(Vec::new()),
        }
    }
}

impl<E> std::fmt::Debug for Scratch<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let free = self.free.lock().map_or(0, |v| v.len());
        f.debug_struct("Scratch").field("free", &free).finish()
    }
}

impl<E: Float> Scratch<E> {
    /// Vectors kept at most: a step gives back what it took, so this bounds only what a
    /// caller running several forward passes before one backward pass leaves behind.
    const KEEP: usize = 32;

    /// `len` zeros in a vector from the pool.
    pub(crate) fn zeros(&self, len: usize) -> Vec<E> {
        let mut v = lock(&self.free).pop().unwrap_or_default();
        v.clear();
        v.resize(len, E::zero());
        v
    }

    /// A vector of `len` values from the pool, the one that fits best; its contents are
    /// whatever it held (only growth is zeroed): the caller overwrites every element.
    pub(crate) fn reused(&self, len: usize) -> Vec<E> {
        let mut v = self.take(len);
        v.resize(len, E::zero());
        v
    }

    /// [`host`], in a vector from the pool (the one that fits best).
    pub(crate) fn host<S: Shape, D: Device<E>, T: Tape<E, D>>(
        &self,
        t: Tensor<S, E, D, T>,
    ) -> Result<(Tensor<S, E, D, T>, Vec<E>), D::Err> {
        let len = t.shape().num_elements();
        host_into(t, self.take(len))
    }

    /// The smallest vector of the pool with room for `len` values, else any (or a new one):
    /// a large vector taken for a small use would have to be zeroed again when grown back.
    fn take(&self, len: usize) -> Vec<E> {
        let mut free = lock(&self.free);
        let fit = free
            .iter()
            .enumerate()
            .filter(|(_, v)| v.capacity() >= len)
            .min_by_key(|(_, v)| v.capacity())
            .map(|(i, _)| i);
        match fit {
            Some(i) => free.swap_remove(i),
            None => free.pop().unwrap_or_default(),
        }
    }

    /// Vectors in the pool now.
    #[cfg(test)]
    pub(crate) fn kept(&self) -> usize {
        lock(&self.free).len()
    }

    /// Returns vectors to the pool.
    pub(crate) fn give(&self, vectors: impl IntoIterator<Item = Vec<E>>) {
        let mut free = lock(&self.free);
        for v in vectors {
            if free.len() < Self::KEEP {
                free.push(v);
            }
        }
    }
}

/// The pool shared by callers that have no home for one of their own (the convolution: a
/// layer is a plain dfdx-style struct of tensors), one per dtype.
pub(crate) fn shared<E: Float>() -> &'static Scratch<E> {
    static F32: OnceLock<Scratch<f32>> = OnceLock::new();
    static F64: OnceLock<Scratch<f64>> = OnceLock::new();
    let pool: &dyn Any = if TypeId::of::<E>() == TypeId::of::<f32>() {
        F32.get_or_init(Scratch::default)
    } else {
        F64.get_or_init(Scratch::default)
    };
    pool.downcast_ref()
        .expect("Float is implemented for f32 and f64 only")
}
