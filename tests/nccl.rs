//! The NCCL backend on real GPUs (feature `nccl`; not in CI, which has no GPU):
//!
//! ```text
//! scripts/build-cuda.sh                       # builds this test binary among the others
//! target/cuda/release/deps/nccl-<hash>        # world of 1 on GPU 0
//! PAI_RANK=r PAI_WORLD=n PAI_NCCL_ID=/shared/id target/cuda/release/deps/nccl-<hash>
//! ```
//!
//! With `PAI_WORLD` above 1 (one process per GPU, GPU = rank), rank 0 writes the job's id to
//! `PAI_NCCL_ID` and the others read it. Every rank checks sums, broadcasts and a barrier,
//! then that thread-style data-parallel training on its GPU keeps the replicas identical.

use std::time::Duration;

use perforated::collective::nccl::Id;
use perforated::dfdx::tensor::Cuda;
use perforated::parallel;
use perforated::prelude::*;

#[perforated]
struct Net {
    fc1: Linear<3, 5>,
    act: Tanh,
    fc2: Linear<5, 2>,
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> perforated::Result<()> {
    let (rank, world) = (env("PAI_RANK", 0), env("PAI_WORLD", 1));
    let id_path = std::env::var("PAI_NCCL_ID").unwrap_or_else(|_| "/tmp/pai-nccl-id".into());
    let id = if rank == 0 {
        let id = Id::new()?;
        if world > 1 {
            id.write(id_path.as_ref())?;
        }
        id
    } else {
        Id::wait_for(id_path.as_ref(), Duration::from_mins(2))?
    };
    parallel::nccl(rank, rank, world, id, |r| {
        let c = r.collective();
        // sums: rank k contributes k + 1 to every element
        let mut v = vec![(r.rank() + 1) as f32; 1000];
        c.all_reduce_f32(&mut v)?;
        let want = (world * (world + 1) / 2) as f32;
        assert!(v.iter().all(|x| *x == want), "f32 sum {} != {want}", v[0]);
        let mut w = vec![(r.rank() + 1) as f64; 7];
        c.all_reduce_f64(&mut w)?;
        assert!(w.iter().all(|x| *x == f64::from(want)), "f64 sum");
        let mut b = vec![r.rank() as f64 + 0.5; 3];
        c.broadcast_f64(&mut b)?;
        assert_eq!(b, [0.5; 3], "broadcast from rank 0");
        c.barrier()?;
        // training: replicas built from different seeds, broadcast, stepped on shards
        let dev = Cuda::try_build(rank, rank as u64).map_err(perforated::Error::device)?;
        let mut model = Net::<f32, Cuda>::build(&dev)?;
        r.broadcast_model(&mut model)?;
        let mut opt = DendriticOptimizer::adam(AdamConfig::default());
        for _ in 0..5 {
            let rows = 8;
            let shard = r.shard(rows);
            let x: Tensor<(usize, Const<3>), f32, Cuda> =
                dev.sample_normal_like(&(shard.len(), Const));
            let grads = model.alloc_grads()?;
            let loss =
                model.forward_mut(x.trace(grads)).square().mean() * r.loss_scale(rows) as f32;
            opt.step(&mut model, loss.backward())?;
        }
        let probe = dev.tensor([[0.1f32, -0.2, 0.3]]);
        let mut out: Vec<f64> = model
            .forward(probe)
            .as_vec()
            .iter()
            .map(|v| f64::from(*v))
            .collect();
        let mine = out.clone();
        c.broadcast_f64(&mut out)?;
        assert_eq!(out, mine, "rank {rank} ended unlike rank 0");
        println!("NCCL rank {rank} of {world}: sums, broadcast, barrier and training agree");
        Ok(())
    })
}
