//! Data-parallel training: the same training loop on several replicas, each on its share of
//! every batch.
//!
//! ```text
//! replica k:  shard k of the batch -> forward, backward (loss scaled by shard / batch)
//!             optimizer step: gradients summed over the replicas, then the same update
//!             dendrite phase: candidate statistics merged over the replicas, exactly
//! ```
//!
//! Every replica holds the whole model. [`Replica::broadcast_model`] makes them equal at the
//! start (rank 0's weights, dendrites, statistics and dendrite seeds); from there each one
//! applies the same update from the same summed gradients, draws the same dendrites and takes
//! the same tracker decisions (feed it the score from [`Replica::all_reduce`] of the
//! validation sums), so they stay bit-identical.
//!
//! Inside a replica the loop is the single-process loop: [`crate::DendriticOptimizer`] sums the
//! gradients over the replicas before it updates, and a candidate merges its correlation
//! statistics over them in the backward pass (`crate::correlation`), both through the
//! replica [installed](crate::collective::install) on the thread. Three rules for the loop:
//! scale each replica's loss by [`Replica::loss_scale`] (the shard's share of the batch);
//! every replica takes every optimizer step, and one whose shard is empty skips only the
//! forward and backward passes: `opt.step(&mut model, grads)` with
//! `grads = model.alloc_grads()?` (zeros) joins the others' sums with nothing of its own; and
//! one backward pass per optimizer step (a replica folds its candidates' statistics in at the
//! step, on the thread that ran the backward pass).
//!
//! The tracker: pass it the same score on every replica, from validation sums added with
//! [`Replica::all_reduce`] (it checks, and fails on every replica when they differ). Only rank
//! 0's tracker writes the run's files; the others keep their save points in memory, so their
//! rollbacks load the same weights as rank 0's.
//!
//! Backends: [`threads`] (replicas as threads of one process), `mpi` (feature `mpi`: this
//! process as one rank of an `mpiexec` job) and `nccl` (feature `nccl`: this process's GPU as
//! one rank of an NCCL job). What is not shared: buffers such as batch-norm running
//! statistics stay each replica's own until the next [`Replica::broadcast_model`] (like
//! `PyTorch`'s DDP without `SyncBatchNorm`, but DDP broadcasts them every step).

use std::ops::Range;
use std::rc::Rc;

use dfdx::shapes::{HasShape, Shape};
use dfdx::tensor::Tensor;
use dfdx::tensor_ops::Device;

use crate::collective::threads::{Group, Member};
use crate::collective::{self, Collective};
use crate::dendritic::SeedState;
use crate::error::{Error, Result};
use crate::float::Float;
use crate::model::DendriticModel;
use crate::params::{Param, ParamVisitor};

/// One replica of a data-parallel run: its rank and the group it reduces with.
#[derive(Clone)]
pub struct Replica {
    collective: Rc<dyn Collective>,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("rank", &self.rank())
            .field("world", &self.world())
            .finish()
    }
}

impl Replica {
    /// A replica on `collective` (for a backend of your own; [`threads`] makes its own).
    pub fn new(collective: Rc<dyn Collective>) -> Self {
        Self { collective }
    }

    /// This replica's number, `0..world`.
    pub fn rank(&self) -> usize {
        self.collective.rank()
    }

    /// The number of replicas.
    pub fn world(&self) -> usize {
        self.collective.world()
    }

    /// Whether this is rank 0, the one that writes the run's files.
    pub fn is_main(&self) -> bool {
        self.rank() == 0
    }

    /// The collective this replica reduces with.
    pub fn collective(&self) -> &dyn Collective {
        &*self.collective
    }

    /// Installs this replica on the calling thread until the guard is dropped: the optimizer
    /// and the candidates reduce through it. [`threads`] does this for its replicas.
    pub fn install(&self) -> collective::Installed {
        collective::install(Rc::clone(&self.collective))
    }

    /// This replica's rows of a batch of `rows`: contiguous shards in rank order whose sizes
    /// differ by at most one (the last ones empty when there are fewer rows than replicas).
    pub fn shard(&self, rows: usize) -> Range<usize> {
        let (world, rank) = (self.world(), self.rank());
        let (base, extra) = (rows / world, rows % world);
        let start = rank * base + rank.min(extra);
        start..start + base + usize::from(rank < extra)
    }

    /// The factor this replica's mean loss is multiplied by before `backward`: its shard's
    /// share of the batch, so that the summed gradients are the whole batch's mean gradient.
    pub fn loss_scale(&self, rows: usize) -> f64 {
        if rows == 0 {
            return 0.0;
        }
        self.shard(rows).len() as f64 / rows as f64
    }

    /// Sums `values` over the replicas (validation counts and losses, for instance), the same
    /// result on every replica.
    ///
    /// # Errors
    /// [`Error::Collective`] when a replica stopped or the lengths differ.
    pub fn all_reduce(&self, values: &mut [f64]) -> Result<()> {
        self.collective.all_reduce_f64(values)
    }

    /// Makes every replica's model rank 0's: every tensor (weights, dendrites, candidates,
    /// statistics, buffers) and every layer's dendrite seeds. The replicas must hold the same
    /// structure (the same dendrite counts and phases); call it on all of them at once.
    ///
    /// # Errors
    /// [`Error::Collective`] naming the difference when the structures differ (on every
    /// replica), or when a replica stopped.
    pub fn broadcast_model<M: DendriticModel>(&self, model: &mut M) -> Result<()> {
        let c = &*self.collective;
        // the structure: per layer its dendrite count and phase, then the number of values
        let mut shape: Vec<f64> = Vec::new();
        model.visit_layers("", &mut |_, l| {
            shape.push(l.dendrite_count() as f64);
            shape.push(f64::from(u8::from(
                l.phase() == crate::phase::Phase::Dendrite,
            )));
        });
        let mut values = Vec::new();
        model.visit_params("", &mut Gather(&mut values))?;
        shape.push(values.len() as f64);
        let mut len = [shape.len() as f64];
        c.broadcast_f64(&mut len)?;
        let mut theirs = shape.clone();
        theirs.resize(len[0] as usize, f64::NAN);
        c.broadcast_f64(&mut theirs)?;
        if !collective::all_ok(c, theirs == shape)? {
            return Err(Error::Collective(format!(
                "replica {} holds another model structure than replica 0 (dendrite counts, \
                 phases or sizes differ): build the same model on every replica",
                self.rank()
            )));
        }
        collective::broadcast(c, &mut values)?;
        model.visit_params("", &mut Scatter(values.into_iter()))?;
        // the dendrite seeds, as exact halves of each u64
        let mut seeds = Vec::new();
        model.visit_layers("", &mut |_, l| {
            let s = l.seeds();
            seeds.extend([
                s.seed >> 32,
                s.seed & 0xffff_ffff,
                s.drawn >> 32,
                s.drawn & 0xffff_ffff,
            ]);
        });
        let mut halves: Vec<f64> = seeds.iter().map(|&h| h as f64).collect();
        c.broadcast_f64(&mut halves)?;
        let mut halves = halves.chunks_exact(4);
        model.visit_layers_mut("", &mut |_, l| {
            if let Some(h) = halves.next() {
                let word = |hi: f64, lo: f64| ((hi as u64) << 32) | lo as u64;
                l.set_seeds(SeedState {
                    seed: word(h[0], h[1]),
                    drawn: word(h[2], h[3]),
                });
            }
            Ok(())
        })?;
        Ok(())
    }
}

/// Collects every tensor's values, in walk order.
struct Gather<'a, E>(&'a mut Vec<E>);

impl<E: Float, D: Device<E>> ParamVisitor<E, D> for Gather<'_, E> {
    fn visit<S: Shape>(&mut self, _: Param<'_, E, D>, t: &mut Tensor<S, E, D>) -> Result<()> {
        let start = self.0.len();
        self.0.resize(start + t.shape().num_elements(), E::zero());
        t.copy_into(&mut self.0[start..]);
        Ok(())
    }
}

/// Writes values back in walk order.
struct Scatter<I>(I);

impl<E: Float, D: Device<E>, I: Iterator<Item = E>> ParamVisitor<E, D> for Scatter<I> {
    fn visit<S: Shape>(&mut self, _: Param<'_, E, D>, t: &mut Tensor<S, E, D>) -> Result<()> {
        let values: Vec<E> = self.0.by_ref().take(t.shape().num_elements()).collect();
        t.copy_from(&values);
        Ok(())
    }
}

/// Runs `work` on `replicas` threads, each with its [`Replica`] installed, and returns their
/// results in rank order. When replicas fail, the error returned is the first one that is not
/// a consequence of another's (a replica that stopped makes the others' next reduce fail).
///
/// # Errors
/// [`Error::Config`] for 0 replicas; the replicas' errors; [`Error::Collective`] for a replica
/// that panicked.
pub fn threads<R: Send>(
    replicas: usize,
    work: impl Fn(Replica) -> Result<R> + Sync,
) -> Result<Vec<R>> {
    let members = Group::members(replicas)?;
    let work = &work;
    let results: Vec<Result<R>> = std::thread::scope(|s| {
        let handles: Vec<_> = members
            .into_iter()
            .map(|member: Member| {
                s.spawn(move || {
                    let replica = Replica::new(Rc::new(member));
                    let _installed = replica.install();
                    work(replica)
                })
            })
            .collect();
        handles
            .into_iter()
            .enumerate()
            .map(|(rank, h)| {
                h.join().unwrap_or_else(|panic| {
                    let msg = panic
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    Err(Error::Collective(format!("replica {rank} panicked: {msg}")))
                })
            })
            .collect()
    });
    let consequence = |e: &Error| matches!(e, Error::Collective(m) if m.contains("stopped while"));
    let first_cause = results
        .iter()
        .position(|r| matches!(r, Err(e) if !consequence(e)))
        .or_else(|| results.iter().position(Result::is_err));
    match first_cause {
        Some(rank) => Err(results
            .into_iter()
            .nth(rank)
            .and_then(Result::err)
            .unwrap_or_else(|| Error::Collective("a replica failed".into()))),
        None => Ok(results.into_iter().filter_map(Result::ok).collect()),
    }
}

/// Runs `work` as this process's replica of an MPI job (feature `mpi`): launch the program
/// with `mpiexec -n N` and every process calls this once; [`Replica::rank`] is the MPI rank.
/// Started without a launcher, the process is a world of one.
///
/// MPI is initialised here and finalised when `work` returns `Ok` on every rank. When it
/// fails or panics, MPI is left unfinalised (a rank that fails alone must not wait in
/// `MPI_Finalize` for ranks still inside a sum), so the process should then exit, which the
/// launcher takes as the end of the job.
///
/// # Errors
/// [`Error::Collective`] when MPI was already initialised in this process (call this once per
/// process); `work`'s error.
#[cfg(feature = "mpi")]
pub fn mpi<R>(work: impl FnOnce(Replica) -> Result<R>) -> Result<R> {
    let Some((universe, _)) = ::mpi::initialize_with_threading(::mpi::Threading::Funneled) else {
        return Err(Error::Collective(
            "MPI was already initialised in this process: call `parallel::mpi` once per process"
                .into(),
        ));
    };
    let replica = Replica::new(Rc::new(collective::mpi::Process::new(universe.world())));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _installed = replica.install();
        work(replica)
    }));
    match result {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => {
            std::mem::forget(universe);
            Err(e)
        }
        Err(panic) => {
            std::mem::forget(universe);
            std::panic::resume_unwind(panic)
        }
    }
}

/// Runs `work` as replica `rank` of a `world` of NCCL ranks, on GPU `ordinal` (feature
/// `nccl`): one process per GPU, on one node or several, every one calling this with the
/// same `id` (rank 0 makes it with [`collective::nccl::Id::new`] and hands it to the others).
/// Build the `dfdx::Cuda` device inside the process, with `Cuda::try_build(ordinal, seed)`:
/// it is not `Send`. See `docs/cuda.md` for launching.
///
/// # Errors
/// [`Error::Config`] for a rank outside `0..world`; [`Error::Collective`] when the GPU or
/// NCCL cannot be set up; `work`'s error.
#[cfg(feature = "nccl")]
pub fn nccl<R>(
    ordinal: usize,
    rank: usize,
    world: usize,
    id: collective::nccl::Id,
    work: impl FnOnce(Replica) -> Result<R>,
) -> Result<R> {
    let gpu = collective::nccl::Gpu::join(ordinal, rank, world, id)?;
    let replica = Replica::new(Rc::new(gpu));
    let _installed = replica.install();
    work(replica)
}
