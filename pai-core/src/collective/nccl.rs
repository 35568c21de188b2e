//! The NCCL backend (feature `nccl`): one replica per GPU, one process per replica, on one
//! node or several (cudarc 0.9's NCCL bindings; `libnccl.so.2` at run time).
//!
//! The ranks find each other through an [`Id`] that rank 0 makes and every other rank
//! receives before it joins: through a file on a shared file system ([`Id::write`],
//! [`Id::wait_for`]), or through any channel of the user's ([`Id::to_bytes`],
//! [`Id::from_bytes`]; with the `mpi` feature, a broadcast over the MPI world).
//!
//! The sums are NCCL all-reduces. NCCL computes each element's sum once and sends the result
//! to every rank (ring and tree algorithms alike), so the replicas get the same bits. Host
//! buffers travel through two device buffers kept from call to call: the optimizer's
//! gradients are gathered into one host buffer per step (`optim::reduce`), so a step costs one
//! copy to the GPU, one all-reduce and one copy back.
//!
//! Only `ncclSuccess` counts as success: cudarc 0.9 knows NCCL's codes up to 8 and reads
//! newer ones (8 is `ncclTimeout` in NCCL 2.32) as its `NumResults` or `InProgress`, which it
//! passes as `Ok`. A rank that dies is not detected by NCCL itself: launch the ranks under a
//! launcher that ends the job when one process ends (`mpiexec`, `torchrun`, a batch system).

use std::cell::RefCell;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cudarc::driver::{CudaDevice, CudaSlice, DeviceRepr, DeviceSlice, ValidAsZeroBits};
use cudarc::nccl::{Comm, NcclType, ReduceOp};

use super::Collective;
use crate::error::{Error, Result};

/// NCCL's unique id of one job: made by rank 0, given to every other rank.
#[derive(Debug, Clone, Copy)]
pub struct Id(cudarc::nccl::Id);

/// The bytes of an [`Id`].
const ID_BYTES: usize = 128;

impl Id {
    /// A new id (on rank 0).
    ///
    /// # Errors
    /// [`Error::Collective`] when NCCL cannot make one (no network interface, no library).
    pub fn new() -> Result<Self> {
        cudarc::nccl::Id::new()
            .map(Self)
            .map_err(|e| nccl_error("making a unique id", &e))
    }

    /// The id as bytes, to send to the other ranks.
    pub fn to_bytes(&self) -> [u8; ID_BYTES] {
        self.0.internal().map(|c| c as u8)
    }

    /// The id from [`Self::to_bytes`].
    pub fn from_bytes(bytes: [u8; ID_BYTES]) -> Self {
        Self(cudarc::nccl::Id::uninit(
            bytes.map(|b| b as std::ffi::c_char),
        ))
    }

    /// Writes the id to `path` (atomically, so that a reader never sees half of it).
    ///
    /// # Errors
    /// [`Error::Io`] naming the file.
    pub fn write(&self, path: &Path) -> Result<()> {
        crate::disk::write_atomic(path, &self.to_bytes())
    }

    /// Waits up to `timeout` for `path` to hold an id, and reads it. Give every job its own
    /// path: an id left by an earlier job would be read as this one's.
    ///
    /// # Errors
    /// [`Error::Collective`] when the file does not appear in time or is not an id.
    pub fn wait_for(path: &Path, timeout: Duration) -> Result<Self> {
        let start = Instant::now();
        loop {
            if let Ok(bytes) = std::fs::read(path) {
                let bytes: [u8; ID_BYTES] = bytes.try_into().map_err(|b: Vec<u8>| {
                    Error::Collective(format!(
                        "`{}` holds {} bytes, not an NCCL id ({ID_BYTES})",
                        path.display(),
                        b.len()
                    ))
                })?;
                return Ok(Self::from_bytes(bytes));
            }
            if start.elapsed() > timeout {
                return Err(Error::Collective(format!(
                    "no NCCL id appeared in `{}` within {timeout:?}: is rank 0 running, and \
                     does it write there?",
                    path.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn nccl_error(action: &str, e: &impl std::fmt::Debug) -> Error {
    Error::Collective(format!("NCCL failed {action}: {e:?}"))
}

/// Only `ncclSuccess` is success (see the module docs).
fn success(
    action: &str,
    status: std::result::Result<cudarc::nccl::result::NcclStatus, cudarc::nccl::result::NcclError>,
) -> Result<()> {
    match status {
        Ok(cudarc::nccl::result::NcclStatus::Success) => Ok(()),
        Ok(_) => Err(Error::Collective(format!(
            "NCCL failed {action}: it returned a code cudarc 0.9 does not know (a time-out or \
             another error of a newer NCCL)"
        ))),
        Err(e) => Err(nccl_error(action, &e.0)),
    }
}

/// Device buffers a host buffer travels through, kept from call to call.
struct Staging<T> {
    send: Option<CudaSlice<T>>,
    recv: Option<CudaSlice<T>>,
}

/// This process's GPU in an NCCL job, as a [`Collective`].
pub struct Gpu {
    comm: Comm,
    device: Arc<CudaDevice>,
    f64s: RefCell<Staging<f64>>,
    f32s: RefCell<Staging<f32>>,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("nccl::Gpu")
            .field("rank", &self.comm.rank())
            .field("world", &self.comm.world_size())
            .field("ordinal", &self.device.ordinal())
            .finish_non_exhaustive()
    }
}

impl Gpu {
    /// Joins the job of `id` as `rank` of `world`, on GPU `ordinal`. Every rank must call it;
    /// it returns once all have.
    ///
    /// # Errors
    /// [`Error::Config`] for a rank outside `0..world`; [`Error::Collective`] when the GPU
    /// or NCCL cannot be set up.
    pub fn join(ordinal: usize, rank: usize, world: usize, id: Id) -> Result<Self> {
        if rank >= world {
            return Err(Error::Config(format!(
                "rank {rank} is not in a world of {world}"
            )));
        }
        let device = CudaDevice::new(ordinal)
            .map_err(|e| Error::Collective(format!("GPU {ordinal}: {e:?}")))?;
        let comm = Comm::from_rank(Arc::clone(&device), rank, world, id.0)
            .map_err(|e| nccl_error("joining the job", &e.0))?;
        Ok(Self {
            comm,
            device,
            f64s: RefCell::new(Staging {
                send: None,
                recv: None,
            }),
            f32s: RefCell::new(Staging {
                send: None,
                recv: None,
            }),
        })
    }

    /// `values` through the staging buffers: copied in, `op` on the device, copied out.
    fn staged<T>(
        &self,
        values: &mut [T],
        staging: &RefCell<Staging<T>>,
        action: &str,
        op: impl FnOnce(&Comm, &Option<CudaSlice<T>>, &mut CudaSlice<T>) -> Result<()>,
    ) -> Result<()>
    where
        T: NcclType + DeviceRepr + ValidAsZeroBits + Unpin + Copy,
    {
        let device_error = |e: cudarc::driver::DriverError| {
            Error::Collective(format!("GPU {} {action}: {e:?}", self.device.ordinal()))
        };
        let mut staging = staging.borrow_mut();
        let staging = &mut *staging;
        if staging
            .send
            .as_ref()
            .is_none_or(|s| s.len() != values.len())
        {
            staging.send = Some(
                self.device
                    .alloc_zeros(values.len())
                    .map_err(device_error)?,
            );
            staging.recv = Some(
                self.device
                    .alloc_zeros(values.len())
                    .map_err(device_error)?,
            );
        }
        let (Some(send), Some(recv)) = (staging.send.as_mut(), staging.recv.as_mut()) else {
            unreachable!("both buffers are made together");
        };
        self.device
            .htod_sync_copy_into(values, send)
            .map_err(device_error)?;
        op(&self.comm, &staging.send, recv)?;
        self.device
            .dtoh_sync_copy_into(recv, values)
            .map_err(device_error)
    }

    fn sum<T>(&self, values: &mut [T], staging: &RefCell<Staging<T>>) -> Result<()>
    where
        T: NcclType + DeviceRepr + ValidAsZeroBits + Unpin + Copy,
    {
        self.staged(values, staging, "summing", |comm, send, recv| {
            let Some(send) = send else {
                unreachable!("staged fills the send buffer");
            };
            success("summing", comm.all_reduce(send, recv, &ReduceOp::Sum))
        })
    }

    fn spread<T>(&self, values: &mut [T], staging: &RefCell<Staging<T>>) -> Result<()>
    where
        T: NcclType + DeviceRepr + ValidAsZeroBits + Unpin + Copy,
    {
        self.staged(values, staging, "broadcasting", |comm, send, recv| {
            success("broadcasting", comm.broadcast(send, recv, 0))
        })
    }
}

impl Collective for Gpu {
    fn rank(&self) -> usize {
        self.comm.rank()
    }

    fn world(&self) -> usize {
        self.comm.world_size()
    }

    fn all_reduce_f64(&self, values: &mut [f64]) -> Result<()> {
        self.sum(values, &self.f64s)
    }

    fn all_reduce_f32(&self, values: &mut [f32]) -> Result<()> {
        self.sum(values, &self.f32s)
    }

    fn broadcast_f64(&self, values: &mut [f64]) -> Result<()> {
        self.spread(values, &self.f64s)
    }

    fn broadcast_f32(&self, values: &mut [f32]) -> Result<()> {
        self.spread(values, &self.f32s)
    }

    fn barrier(&self) -> Result<()> {
        // a one-element sum returns on every rank only once all have joined it
        self.all_reduce_f32(&mut [0.0])
    }
}
