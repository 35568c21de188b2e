//! The gradients as the optimizer takes them: checked finite, and on data-parallel replicas
//! first summed. Before the optimizer updates, every trainable tensor's gradient (the task
//! loss's, and a candidate's own) is summed over the replicas, in one all-reduce of one host
//! buffer, so that every replica applies the same update; a NaN or an infinity anywhere is
//! refused before anything is applied.

use dfdx::shapes::{HasShape, Shape};
use dfdx::tensor::{Gradients, Tensor};
use dfdx::tensor_ops::Device;

use crate::collective::{self, Collective};
use crate::error::{Error, Result};
use crate::float::Float;
use crate::host::{buffer_from_host, buffer_to_host, grad_mut, on_host};
use crate::model::DendriticModel;
use crate::params::{Param, ParamVisitor};

/// Sums the gradients of the tensors that train now under `path` over the replicas of `c`;
/// `buffer` is the host buffer they travel in (kept by the optimizer from step to step).
///
/// # Errors
/// [`Error::Collective`] when a replica stopped or the replicas' models differ;
/// [`Error::NonFinite`] on every replica when the sum holds a NaN or an infinity; backend
/// errors.
pub(super) fn reduce_gradients<M, E, D>(
    model: &mut M,
    path: &str,
    grads: &mut Gradients<E, D>,
    c: &dyn Collective,
    buffer: &mut Vec<E>,
) -> Result<()>
where
    E: Float,
    D: Device<E>,
    M: DendriticModel<Dtype = E, Device = D>,
{
    buffer.clear();
    model.visit_params(
        path,
        &mut Walk {
            grads: &mut *grads,
            buffer: &mut *buffer,
            at: 0,
            gather: true,
        },
    )?;
    collective::all_reduce(c, buffer)?;
    // the same sum on every replica: a NaN from any of them fails all of them alike
    if !crate::float::all_finite(buffer) {
        return Err(Error::NonFinite {
            layer: if path.is_empty() { "(model)" } else { path }.into(),
            what: "the gradient summed over the replicas",
            hint: "a replica's loss or input held a NaN or an infinity",
        });
    }
    model.visit_params(
        path,
        &mut Walk {
            grads,
            buffer,
            at: 0,
            gather: false,
        },
    )
}

/// Refuses a NaN or an infinity in the gradient of any tensor that trains now under `path`
/// (a NaN in an input or a target, or a diverging loss), before anything is applied.
///
/// # Errors
/// [`Error::NonFinite`] naming the first such tensor; backend errors.
pub(super) fn check_finite<M, E, D>(
    model: &mut M,
    path: &str,
    grads: &mut Gradients<E, D>,
) -> Result<()>
where
    E: Float,
    D: Device<E>,
    M: DendriticModel<Dtype = E, Device = D>,
{
    model.visit_params(path, &mut Finite { grads })
}

struct Finite<'a, E: Float, D: Device<E>> {
    grads: &'a mut Gradients<E, D>,
}

impl<E: Float, D: Device<E>> ParamVisitor<E, D> for Finite<'_, E, D> {
    fn visit<S: Shape>(&mut self, param: Param<'_, E, D>, t: &mut Tensor<S, E, D>) -> Result<()> {
        if !param.trainable {
            return Ok(());
        }
        // a tensor's own gradients (a correlation-mode candidate), else the task loss's
        let grads = param.own_grads.unwrap_or(&mut *self.grads);
        let finite = if on_host::<E, D>() {
            crate::float::all_finite(grad_mut(grads, t).map_err(Error::device)?)
        } else {
            let dev = t.device().clone();
            let g = grads.get_or_alloc_mut(t).map_err(Error::device)?;
            crate::float::all_finite(&buffer_to_host(&dev, g)?)
        };
        if finite {
            return Ok(());
        }
        Err(Error::NonFinite {
            layer: param.path.to_string(),
            what: "the gradient",
            hint: "nothing was applied; a NaN or an infinity in an input, a target or the loss \
                   (check the data, lower the learning rate)",
        })
    }
}

/// Copies each trainable tensor's gradient into the buffer (`gather`) or back from it.
struct Walk<'a, E: Float, D: Device<E>> {
    grads: &'a mut Gradients<E, D>,
    buffer: &'a mut Vec<E>,
    at: usize,
    gather: bool,
}

impl<E: Float, D: Device<E>> ParamVisitor<E, D> for Walk<'_, E, D> {
    fn visit<S: Shape>(&mut self, param: Param<'_, E, D>, t: &mut Tensor<S, E, D>) -> Result<()> {
        if !param.trainable {
            return Ok(());
        }
        // a tensor's own gradients (a correlation-mode candidate), else the task loss's
        let grads = param.own_grads.unwrap_or(&mut *self.grads);
        let len = t.shape().num_elements();
        if on_host::<E, D>() {
            let g = grad_mut(grads, t).map_err(Error::device)?;
            if self.gather {
                self.buffer.extend_from_slice(g);
            } else {
                g.copy_from_slice(&self.buffer[self.at..self.at + len]);
            }
        } else {
            let dev = t.device().clone();
            let g = grads.get_or_alloc_mut(t).map_err(Error::device)?;
            if self.gather {
                self.buffer.extend(buffer_to_host(&dev, g)?);
            } else {
                *g = buffer_from_host(&dev, &self.buffer[self.at..self.at + len])?;
            }
        }
        self.at += len;
        Ok(())
    }
}
