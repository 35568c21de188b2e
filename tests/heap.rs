//! A dendritic convolution's training step reuses the memory the step before it freed: no page
//! faults in a steady state (`host/heap.rs` pins glibc's thresholds at the first dendritic
//! forward pass). A test binary of its own: the count is the whole process's.
//!
//! With glibc left as it is (`PERFORATED_HEAP=system cargo test --test heap`), each step
//! here faults in about 370 pages, and this test fails.

#![cfg(all(target_os = "linux", target_env = "gnu"))]

use perforated::layers::Conv2d;
use perforated::prelude::*;

type Conv = Conv2d<16, 32, 3, f32, Cpu, 1, 1>;

/// Minor page faults of this process so far (`/proc/self/stat`, field 10).
fn minor_faults() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("procfs");
    // the command name (field 2) is in parentheses and may hold spaces
    let after_name = &stat[stat.rfind(')').expect("a command name") + 2..];
    after_name
        .split(' ')
        .nth(7)
        .and_then(|f| f.parse().ok())
        .expect("a fault count")
}

#[test]
fn a_dendritic_conv_step_faults_in_no_memory_once_warm() {
    let dev = Cpu::seed_from_u64(0);
    let mut layer: Dendritic<Conv> =
        Dendritic::new(&dev, Conv::build(&dev), DendriteConfig::default()).expect("valid config");
    layer.grow_dendrites(3).expect("neuron phase");
    let mut opt = DendriticOptimizer::adam(AdamConfig::default());
    let x: Tensor<(usize, Const<16>, usize, usize), f32, Cpu> =
        dev.sample_normal_like(&(4, Const, 28, 28));
    let mut step = || {
        let grads = layer.alloc_grads().expect("gradients");
        let y = layer.forward_mut(x.trace(grads));
        opt.step(&mut layer, y.sum::<Rank0, _>().backward())
            .expect("finite");
    };
    for _ in 0..4 {
        step();
    }
    let (steps, before) = (10, minor_faults());
    for _ in 0..steps {
        step();
    }
    let per_step = (minor_faults() - before) / steps;
    // one output of the layer is 100 pages; a step allocates about fifteen such buffers. Once
    // warm, a step faults in a few dozen pages now and then (the heap's top growing).
    assert!(per_step < 100, "{per_step} page faults a step");
}
