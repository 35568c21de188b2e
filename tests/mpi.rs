//! The data-parallel equality tests on the MPI backend, one replica per process:
//!
//! ```text
//! cargo test --release --features mpi --test mpi --no-run   # prints the test binary
//! mpiexec -n 3 target/release/deps/mpi-<hash>
//! ```
//!
//! Every process first trains on the whole batch alone (before MPI starts, so nothing is
//! summed), then as one replica of the MPI world; the replicas must match the whole batch to
//! 1e-12 and each other bit for bit, through a neuron phase, a dendrite phase, an accept and
//! a tracker run to `Complete` with rollbacks. Started without `mpiexec` it is a world of
//! one. A plain `cargo test --features mpi` runs it that way.

mod replicas;

use perforated::parallel::{self, Replica};
use replicas::{assert_matches, assert_tracker_matches, run, tracker_run};

/// Whether every replica holds rank 0's `values`, bit for bit.
fn same_everywhere(r: &Replica, values: &[f64]) -> perforated::Result<bool> {
    let mut theirs = values.to_vec();
    r.collective().broadcast_f64(&mut theirs)?;
    let mut differ = [f64::from(u8::from(
        theirs
            .iter()
            .zip(values)
            .any(|(a, b)| a.to_bits() != b.to_bits()),
    ))];
    r.all_reduce(&mut differ)?;
    Ok(differ[0] == 0.0)
}

fn main() {
    let root = std::env::temp_dir().join(format!("pai-mpi-{}", std::process::id()));
    let whole = run(0, None).unwrap();
    let whole_tracked = tracker_run(0, None, &root.join("whole")).unwrap();
    // every process has its own temporary directory; only rank 0's may be written
    let world = parallel::mpi(|r| {
        let what = format!("MPI rank {} of {}", r.rank(), r.world());
        let o = run(r.rank() as u64, Some(&r))?;
        assert_matches(&o, &whole, &what);
        assert!(same_everywhere(&r, &o.values)?, "{what}: replicas differ");
        let t = tracker_run(r.rank() as u64, Some(&r), &root.join("replica"))?;
        assert_tracker_matches(&t, &whole_tracked, &what);
        assert!(
            same_everywhere(&r, &t.values)?,
            "{what}: tracker runs differ"
        );
        assert_eq!(root.join("replica").exists(), r.is_main(), "{what}: files");
        Ok(r.world())
    })
    .unwrap();
    std::fs::remove_dir_all(&root).unwrap();
    println!("MPI data-parallel tests passed on a world of {world}");
}
