//! The MPI backend (feature `mpi`): one replica per process, any number of nodes, launched
//! with `mpiexec -n N` (rsmpi over the system's MPI library, MPICH on Debian).
//!
//! Sums are a reduce to rank 0 followed by a broadcast of the result: MPI does not promise
//! that `MPI_Allreduce` gives every rank the same bits, and the replicas must stay
//! bit-identical. The reduce runs in a buffer kept from call to call.
//!
//! MPI's own error handler stays in place: a call that fails (mismatched lengths, a lost
//! connection) aborts the job with MPI's message. A rank that ends before the others
//! ([`crate::parallel::mpi`] returning an error on it alone) leaves MPI unfinalised and exits;
//! the launcher then ends the job instead of leaving the others waiting.

use std::cell::RefCell;

use ::mpi::collective::{CommunicatorCollectives, Root, SystemOperation};
use ::mpi::topology::{Communicator, SimpleCommunicator};
use ::mpi::traits::Equivalence;

use super::Collective;
use crate::error::Result;

/// This process's place in the MPI world, as a [`Collective`].
pub struct Process {
    world: SimpleCommunicator,
    sum_f64: RefCell<Vec<f64>>,
    sum_f32: RefCell<Vec<f32>>,
}

impl std::fmt::Debug for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("mpi::Process")
            .field("rank", &self.rank())
            .field("world", &self.world())
            .finish_non_exhaustive()
    }
}

impl Process {
    /// This process in `world` (from [`mpi::environment::Universe::world`]).
    pub fn new(world: SimpleCommunicator) -> Self {
        Self {
            world,
            sum_f64: RefCell::new(Vec::new()),
            sum_f32: RefCell::new(Vec::new()),
        }
    }

    /// Sum to rank 0 into `scratch`, then rank 0's sum to everyone.
    fn sum<T: Equivalence + Copy + Default>(&self, values: &mut [T], scratch: &RefCell<Vec<T>>) {
        let root = self.world.process_at_rank(0);
        if self.world.rank() == 0 {
            let mut sum = scratch.borrow_mut();
            sum.clear();
            sum.resize(values.len(), T::default());
            root.reduce_into_root(&*values, &mut sum[..], SystemOperation::sum());
            values.copy_from_slice(&sum);
        } else {
            root.reduce_into(&*values, SystemOperation::sum());
        }
        root.broadcast_into(values);
    }
}

impl Collective for Process {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }

    fn world(&self) -> usize {
        self.world.size() as usize
    }

    fn all_reduce_f64(&self, values: &mut [f64]) -> Result<()> {
        self.sum(values, &self.sum_f64);
        Ok(())
    }

    fn all_reduce_f32(&self, values: &mut [f32]) -> Result<()> {
        self.sum(values, &self.sum_f32);
        Ok(())
    }

    fn broadcast_f64(&self, values: &mut [f64]) -> Result<()> {
        self.world.process_at_rank(0).broadcast_into(values);
        Ok(())
    }

    fn broadcast_f32(&self, values: &mut [f32]) -> Result<()> {
        self.world.process_at_rank(0).broadcast_into(values);
        Ok(())
    }

    fn barrier(&self) -> Result<()> {
        self.world.barrier();
        Ok(())
    }
}
