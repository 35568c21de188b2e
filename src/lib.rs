//! # perforated: artificial dendrites for Rust neural networks
//!
//! New here? [`guide::first_model`] walks from a plain network to a trained one with
//! dendrites, in a program that runs.
//!
//! Give a dfdx network *dendrites*: each converted layer gets copies of itself whose squashed
//! outputs feed its neurons through one learned weight per neuron. Training alternates between
//! a **neuron phase** (ordinary training) and a **dendrite phase** (a candidate dendrite per
//! layer learns to correlate with each neuron's remaining error while everything else is frozen
//! and the network output does not change). The usual result is a more accurate network at the
//! same size, or the same accuracy from a smaller one.
//!
//! ## The DSL
//!
//! Annotate a struct of layers with [`perforated`]. The macro adds dtype and device generics
//! (`E = f32`, `D = Cpu`), gives every convertible layer dendrites, and generates the build,
//! the parameter registry walk, the phase controls (through [`DendriticModel`]) and a
//! sequential forward.
//!
//! ```
//! use perforated::prelude::*;
//!
//! #[perforated]
//! struct Mlp {
//!     fc1: Linear<64, 16>, // converted: neurons on the last axis
//!     act: ReLU,           // parameter-free, passes through
//!     fc2: Linear<16, 10>,
//! }
//!
//! let dev = Cpu::seed_from_u64(0);
//! let mut model = Mlp::<f32, Cpu>::build(&dev)?;
//! let mut opt = DendriticOptimizer::adam(AdamConfig { lr: 1e-3, ..Default::default() });
//! let x: Tensor<Rank2<32, 64>, f32, Cpu> = dev.sample_normal();
//! let y: Tensor<Rank2<32, 10>, f32, Cpu> = dev.sample_normal::<Rank2<32, 10>>().softmax::<Axis<1>>();
//! let grads = model.alloc_grads()?;
//! let loss = cross_entropy_with_logits_loss(model.forward_mut(x.traced(grads)), y);
//! opt.step(&mut model, loss.backward())?; // a neuron step or a candidate step, by phase
//! println!("{}", Mlp::<f32, Cpu>::PERFORATED_SUMMARY);
//! # Ok::<(), perforated::Error>(())
//! ```
//!
//! One gradient buffer can also serve every step, as with dfdx's `zero_grads`: ready it with
//! [`DendriticModel::zero_grads`] *before* each forward pass (so that a restructure between
//! steps is covered) and update with [`DendriticOptimizer::update`], which leaves it to you.
//!
//! ### What each field becomes
//!
//! | field | becomes |
//! |---|---|
//! | `Linear`, `Conv1d`, `Conv2d`, `Conv3d`, `PaiSequential<..>` | converted: [`Dendritic`] |
//! | `GruCell`, `Gru`, `LstmCell`, `Lstm` with `#[pai(processor = ..)]` | converted through the processor |
//! | `ReLU`, `LeakyReLU<E>`, `Tanh`, `Sigmoid`, `GeLU`, `Dropout`, `Flatten`, `MaxPool2d`, `AvgPool2d`, ... | kept as written (no parameters; built with `Default`) |
//! | a type that is itself `#[perforated]` | a nested model, converted with the rest |
//! | `#[pai(track)]` | trains normally, no dendrites |
//! | `#[pai(skip)]` | left out of the registry and the generated forward |
//! | `#[pai(convert, dims = (..))]` | a block of your own converted as one unit |
//!
//! Misuse is a compile error on the token you wrote: a bare normalisation layer (group it in
//! `PaiSequential`), a field with parameters that is neither converted, tracked nor skipped, a
//! recurrent layer without its processor, `dims` without exactly one `Neurons`, unknown or
//! duplicate keys, `track` with `convert`. The cases are in `ui-tests/fail`.
//!
//! ### `#[pai(dims = ...)]`: the neuron axis, typed
//!
//! One tag per axis of the layer's output, exactly one [`Neurons`](axis::Neurons) (see
//! [`axis`]). `Linear` defaults to the last axis, convolutions to axis 1; a tag list that does
//! not fit the output shape does not compile.
//!
//! ```
//! use perforated::prelude::*;
//!
//! #[perforated]
//! struct Sequence {
//!     #[pai(dims = (Batch, Time, Neurons))]
//!     fc: Linear<8, 4>, // applied at every time step
//! }
//!
//! let dev: Cpu = Default::default();
//! let model = Sequence::<f32, Cpu>::build(&dev)?;
//! let x: Tensor<Rank3<2, 5, 8>, f32, Cpu> = dev.zeros();
//! assert_eq!(model.forward(x).shape(), &(Const::<2>, Const::<5>, Const::<4>));
//! # Ok::<(), perforated::Error>(())
//! ```
//!
//! ### `#[pai(track)]` and `#[pai(skip)]`
//!
//! ```
//! use perforated::prelude::*;
//!
//! #[perforated]
//! struct Normed {
//!     fc: Linear<8, 8>,
//!     #[pai(track)]
//!     norm: LayerNorm1D<8>, // trains in the neuron phase, never gets dendrites
//!     head: Linear<8, 2>,
//! }
//!
//! let dev: Cpu = Default::default();
//! let mut model = Normed::<f32, Cpu>::build(&dev)?;
//! assert_eq!(model.param_counts()?.get(Role::Tracked), 16);
//! # Ok::<(), perforated::Error>(())
//! ```
//!
//! ### Groups: `PaiSequential`
//!
//! A layer and its normalisation are one unit; each dendrite copies both and keeps its own
//! running statistics. Const generics on the struct are kept.
//!
//! ```
//! use perforated::prelude::*;
//!
//! #[perforated]
//! struct Cnn<const C: usize> {
//!     block: PaiSequential<Conv2d<1, C, 3, 1, 1>, BatchNorm2D<C>>, // stride 1, padding 1
//!     act: ReLU,
//!     pool: MaxPool2d<2>,
//!     flat: Flatten<{ 16 * 4 }>,
//!     head: Linear<{ 16 * 4 }, 10>,
//! }
//!
//! let dev: Cpu = Default::default();
//! let mut cnn = Cnn::<4, f32, Cpu>::build(&dev)?;
//! let x: Tensor<(usize, Const<1>, usize, usize), f32, Cpu> = dev.zeros_like(&(2, Const, 8, 8));
//! let grads = cnn.alloc_grads()?;
//! assert_eq!(cnn.forward_mut(x.traced(grads)).shape(), &(2, Const::<10>));
//! # Ok::<(), perforated::Error>(())
//! ```
//!
//! ### Processors: `#[pai(processor = ...)]`
//!
//! Layers with several inputs or outputs are converted through a [`processor`]: it says which
//! output tensor dendrites add to and keeps each dendrite's own recurrent state, reset by
//! [`Dendritic::reset_state`] (or `model.reset_state()` for every layer). Built-in ones cover
//! the recurrent layers; `#[derive(Processor)]` with `#[processor(outputs = N, main = i, ...)]`
//! describes any other layer: see the guide [`guide::processors`].
//!
//! ```
//! use perforated::prelude::*;
//!
//! #[perforated(custom_forward)]
//! struct Reader {
//!     #[pai(processor = GruState)]
//!     gru: Gru<8, 16>,
//!     head: Linear<16, 10>,
//! }
//!
//! type Rows<E, D, T> = Tensor<(usize, usize, Const<8>), E, D, T>;
//! type Logits<E, D, T> = Tensor<(usize, Const<10>), E, D, T>;
//!
//! impl<E: perforated::Float, D: Device<E>> Reader<E, D> {
//!     /// Training: `forward_mut` on a traced input, so that dendrites learn. The logits read
//!     /// the last step of the output sequence, which carries the tape (the final state the
//!     /// GRU returns beside it does not).
//!     fn train(&mut self, rows: Rows<E, D, OwnedTape<E, D>>) -> perforated::Result<Logits<E, D, OwnedTape<E, D>>> {
//!         self.reset_state(); // new sequences: no dendrite carries the last batch's state
//!         let h0 = rows.device().zeros_like(&(rows.shape().0, Const::<16>));
//!         let (outputs, _) = self.gru.forward_mut((rows, h0));
//!         Ok(self.head.forward_mut(perforated::layers::last_step(outputs)?))
//!     }
//!
//!     /// Evaluation: `forward`, no tape.
//!     fn read(&self, rows: Rows<E, D, NoneTape>) -> perforated::Result<Logits<E, D, NoneTape>> {
//!         self.reset_state();
//!         let h0 = rows.device().zeros_like(&(rows.shape().0, Const::<16>));
//!         let (outputs, _) = self.gru.forward((rows, h0));
//!         Ok(self.head.forward(perforated::layers::last_step(outputs)?))
//!     }
//! }
//!
//! let dev: Cpu = Default::default();
//! let mut reader = Reader::<f32, Cpu>::build(&dev)?;
//! let rows: Rows<f32, Cpu, NoneTape> = dev.zeros_like(&(3, 8, Const::<8>));
//! assert_eq!(reader.read(rows.clone())?.shape(), &(3, Const::<10>));
//! let mut opt = DendriticOptimizer::adam(AdamConfig::default());
//! reader.start_dendrite_phase()?;
//! let grads = reader.alloc_grads()?;
//! let loss = reader.train(rows.traced(grads))?.square().mean();
//! opt.step(&mut reader, loss.backward())?; // the GRU's candidate received its neuron error
//! # Ok::<(), perforated::Error>(())
//! ```
//!
//! ### Several networks, and forward passes of your own
//!
//! A field whose type is `#[perforated]` is converted with the rest: a generator and a
//! discriminator inside one pair share phases, checkpoints and the tracker.
//! `#[perforated(custom_forward)]` generates everything but `Module`, for residual blocks and
//! models with several inputs.
//!
//! ```
//! use perforated::prelude::*;
//!
//! #[perforated]
//! struct Generator { fc: Linear<2, 8>, act: Tanh, out: Linear<8, 2> }
//! #[perforated]
//! struct Critic { fc: Linear<2, 8>, act: ReLU, out: Linear<8, 1> }
//! #[perforated(custom_forward)]
//! struct Pair { generator: Generator, critic: Critic }
//!
//! let dev: Cpu = Default::default();
//! let mut pair = Pair::<f32, Cpu>::build(&dev)?;
//! pair.start_dendrite_phase()?; // all four layers at once
//! assert_eq!(pair.layers().len(), 4);
//! # Ok::<(), perforated::Error>(())
//! ```
//!
//! ### A block of your own: `#[pai(convert, dims = ...)]`
//!
//! Implement [`Convertible`] (one line per method with the helpers in [`dendritic`]) and the
//! block's dendrites are copies of the whole block.
//!
//! ### Pretrained networks
//!
//! [`checkpoint::load_pytorch`] loads a PyTorch `state_dict` saved to safetensors (see
//! [`guide::from_pytorch`]), [`checkpoint::load_plain`] weights saved from a plain dfdx model,
//! into the neurons; before any dendrite is trained the converted model computes what the
//! plain one did.
//!
//! ## Training with the tracker
//!
//! The [`tracker`] decides when to switch phases, rolls back to the best weights, keeps or
//! drops dendrites, owns the learning-rate schedule and writes checkpoints, CSV files and a
//! graph. One call per epoch:
//!
//! ```no_run
//! # use perforated::prelude::*;
//! # #[perforated] struct Mlp { fc1: Linear<64, 16>, act: ReLU, fc2: Linear<16, 10> }
//! # fn validation_accuracy(_: &Mlp) -> f64 { 0.0 }
//! let dev: Cpu = Default::default();
//! let mut model = Mlp::build(&dev)?;
//! let mut tracker = Tracker::new(TrackerConfig::new("runs/mlp").maximize())?;
//! let mut opt = tracker.optimizer(perforated::optim::Rule::Adam(AdamConfig::default()));
//! loop {
//!     // ... one epoch of `opt.step(&mut model, loss.backward())?` ...
//!     match tracker.add_validation_score(validation_accuracy(&model), &mut model, &mut opt)? {
//!         Step::Continue { .. } | Step::Restructured => {}
//!         Step::Complete => break, // the model holds the best weights
//!     }
//! }
//! # Ok::<(), perforated::Error>(())
//! ```
//!
//! ### Seeing a run's progress
//!
//! The library prints nothing. Each epoch the tracker emits one `tracing` event (target
//! `perforated`, level INFO): epoch, phase, dendrites, parameters, seconds, score, best,
//! learning rate, and what it decided and why. Install any subscriber to see them, e.g.
//! `tracing_subscriber::fmt().init()`; the examples do, and draw batch progress bars with
//! `indicatif` (`--quiet` turns both off).
//!
//! Before training, `println!("{}", model.summary()?)` lists the converted layers (neurons,
//! dendrites) and every parameter that trains without dendrites: a layer you meant to
//! convert shows up there. When a dendrite phase ends with a layer's best candidate
//! correlation below 0.005, the tracker warns (a `tracing` WARN event, and the switch's reason
//! in `switches.csv` names the layer): such a dendrite can barely help, and something is
//! probably wrong (the neuron axis, the processor, or what the layer is wrapped with).
//!
//! ### The files of a run
//!
//! Under the run's directory, all written atomically (a crash never leaves half a file):
//!
//! | file | what |
//! |---|---|
//! | `latest.safetensors` | model, optimizer and tracker after the last epoch: [`Tracker::resume`](tracker::Tracker::resume) continues from it exactly |
//! | `best.safetensors`, `switch_NNN.safetensors` | the best weights so far; the model at each phase switch |
//! | `history.jsonl` | one JSON line per epoch (every field of [`EpochRecord`](tracker::EpochRecord)); appended, read back by a resume |
//! | `scores.csv` | per epoch: `epoch,phase,score,running,test,train_loss,lr,dendrites,params,bytes,seconds`, then one column per extra score |
//! | `switches.csv`, `params.csv`, `best_test_scores.csv`, `correlations.csv` | phase switches with their reasons; parameters per epoch; the best score per dendrite count; candidate correlations per layer and epoch |
//! | `graph.png` | scores and training loss (each on a log scale when it spans two decades), learning rate, correlations, epoch times |
//! | `.lock` | held while a tracker works there: a second tracker on the directory is refused ([`Error::Busy`]) |
//!
//! Checkpoints carry a CRC-32 of their contents and are checked whole before a model changes:
//! a damaged, truncated or foreign file, NaN weights or another architecture are an `Err` and
//! the model stays as it was. A failed `add_validation_score` (a full disk) changes nothing,
//! so the same call can be made again; NaN losses, scores, gradients and learning rates are
//! refused where they enter.
//!
//! ## Requirements and threads
//!
//! Stable Rust: dfdx 0.13 does not build on nightly, so a crate that uses `perforated` needs a
//! stable toolchain too (pin one with `rust-toolchain.toml`).
//!
//! Matrix products and the convolution run on rayon's global pool: all cores by default. Set
//! `RAYON_NUM_THREADS=n` before the program starts, or train inside
//! `rayon::ThreadPoolBuilder::new().num_threads(n).build()?.install(|| ...)`. With data-parallel
//! thread replicas, give each replica its own cores (`RAYON_NUM_THREADS=1` and one replica per
//! core).
//!
//! ## Data parallel
//!
//! [`parallel`] runs the same loop on several replicas: threads of one process
//! ([`parallel::threads`]), MPI processes (`parallel::mpi`, feature `mpi`, under `mpiexec`) or
//! GPUs (`parallel::nccl`, feature `nccl`). Each replica trains on its shard of every global
//! batch; the optimizer sums the gradients and the candidates merge their statistics over the
//! replicas, so they stay bit-identical and compute what one process would on the whole batch.
//!
//! ```no_run
//! # use perforated::prelude::*;
//! # #[perforated] struct Mlp { fc1: Linear<64, 16>, act: ReLU, fc2: Linear<16, 10> }
//! # fn batches() -> Vec<(Vec<f32>, Vec<f32>)> { Vec::new() } // inputs, one-hot targets
//! # fn validation_counts(_: &Mlp, _: std::ops::Range<usize>) -> [f64; 2] { [0.0, 1.0] }
//! use perforated::parallel;
//! parallel::threads(2, |replica| {
//!     let dev = Cpu::default();
//!     let mut model = Mlp::build(&dev)?;
//!     replica.broadcast_model(&mut model)?; // every replica starts as rank 0's
//!     let mut tracker = Tracker::new(TrackerConfig::new("runs/mlp").maximize())?;
//!     let mut opt = tracker.optimizer(perforated::optim::Rule::Adam(AdamConfig::default()));
//!     loop {
//!         for (x, y) in batches() {
//!             let rows = y.len() / 10;
//!             let shard = replica.shard(rows);
//!             if shard.is_empty() {
//!                 let none = model.alloc_grads()?; // no rows: join the sums with zeros
//!                 opt.step(&mut model, none)?;
//!                 continue;
//!             }
//!             let (n, s) = (shard.len(), shard.start);
//!             let x = dev.tensor_from_vec(x[s * 64..(s + n) * 64].to_vec(), (n, Const::<64>));
//!             let y = dev.tensor_from_vec(y[s * 10..(s + n) * 10].to_vec(), (n, Const::<10>));
//!             let grads = model.alloc_grads()?;
//!             let logits = model.forward_mut(x.trace(grads));
//!             let loss = cross_entropy_with_logits_loss(logits, y)
//!                 * replica.loss_scale(rows) as f32;
//!             opt.step(&mut model, loss.backward())?;
//!         }
//!         // the validation counts summed over the replicas: the same score everywhere
//!         let mut counts = validation_counts(&model, replica.shard(1000));
//!         replica.all_reduce(&mut counts)?;
//!         let step = tracker.add_validation_score(counts[0] / counts[1], &mut model, &mut opt)?;
//!         if step == Step::Complete {
//!             return Ok(model.dendrite_count());
//!         }
//!     }
//! })?;
//! # Ok::<(), perforated::Error>(())
//! ```
//!
//! Only rank 0's tracker writes files; the others keep their save points in memory.
#![deny(missing_docs)]

pub use dfdx;
pub use pai_core::*;
pub use pai_macros::{perforated, Processor};

/// Guides: longer pages than the reference above, each with a program that compiles and runs
/// (they are doc tests).
pub mod guide {
    #[doc = include_str!("guide/first_model.md")]
    pub mod first_model {}
    #[doc = include_str!("guide/processors.md")]
    pub mod processors {}
    #[doc = include_str!("guide/from_pytorch.md")]
    pub mod from_pytorch {}
}

/// Everything a model author needs: dfdx's prelude and perforated's names.
pub mod prelude {
    /// The `safetensors` crate (0.3), named here so that dfdx's prelude does not shadow it
    /// with a private item of its own.
    pub use ::safetensors;
    pub use dfdx::optim::{AdamConfig, SgdConfig};
    pub use dfdx::prelude::*;
    pub use pai_core::prelude::*;
    pub use pai_macros::{perforated, Processor};
}

/// Paths used by generated code. Not public API.
#[doc(hidden)]
pub mod __private {
    pub use dfdx;
    pub use pai_core;
}
