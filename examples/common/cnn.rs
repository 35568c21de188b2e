//! The CNNs the image examples and the conv bench share: two `PaiSequential(Conv2d,
//! BatchNorm2D)` blocks with max pooling, then a linear head, with dendrites on every layer
//! ([`Cnn`]) or on the convolutions only ([`ConvCnn`]); and their training on a dataset of
//! square grey-scale images.

use perforated::prelude::*;

use super::args::Args;
use super::digits::Dataset;
use super::run::{run, Images, Logits, Outcome, Setup};

/// Side -> `C1` channels -> pool to side/2 -> `C2` channels -> pool to side/4 -> 10 classes
/// (`F` = `C2` · (side/4)², spelled out: const generics cannot compute it on stable Rust).
#[perforated]
pub struct Cnn<const C1: usize, const C2: usize, const F: usize> {
    block1: PaiSequential<Conv2d<1, C1, 3, 1, 1>, BatchNorm2D<C1>>,
    act1: ReLU,
    pool1: MaxPool2d<2>,
    block2: PaiSequential<Conv2d<C1, C2, 3, 1, 1>, BatchNorm2D<C2>>,
    act2: ReLU,
    pool2: MaxPool2d<2>,
    flat: Flatten<F>,
    head: Linear<F, 10>,
}

/// [`Cnn`] with dendrites on the convolutions only: the head trains in every neuron phase but
/// is never copied (a copy of a `F`x10 head costs more parameters than both convolutions).
#[perforated]
pub struct ConvCnn<const C1: usize, const C2: usize, const F: usize> {
    block1: PaiSequential<Conv2d<1, C1, 3, 1, 1>, BatchNorm2D<C1>>,
    act1: ReLU,
    pool1: MaxPool2d<2>,
    block2: PaiSequential<Conv2d<C1, C2, 3, 1, 1>, BatchNorm2D<C2>>,
    act2: ReLU,
    pool2: MaxPool2d<2>,
    flat: Flatten<F>,
    #[pai(track)]
    head: Linear<F, 10>,
}

/// A batch of one-channel images.
pub type Image<T> = Tensor<(usize, Const<1>, usize, usize), f32, AutoDevice, T>;
type Traced = OwnedTape<f32, AutoDevice>;

/// A batch of `P`-pixel rows as `side`x`side` one-channel images.
pub fn images<const P: usize, T: Tape<f32, AutoDevice>>(x: Images<T, P>, side: usize) -> Image<T> {
    let b = x.shape().0;
    x.reshape_like(&(b, Const::<1>, side, side))
}

/// Trains the model `build` makes on `data` (images `side` pixels wide) with the shared
/// runner; `adjust` changes the runner's defaults.
#[allow(clippy::too_many_arguments)]
pub fn train<M, const P: usize>(
    data: &Dataset<P>,
    side: usize,
    seed: u64,
    dendrites: Option<usize>,
    args: &Args,
    name: &str,
    build: impl FnOnce(&AutoDevice) -> Result<M, perforated::Error>,
    adjust: impl for<'a> FnOnce(Setup<'a, P>) -> Setup<'a, P>,
) -> Result<Outcome, perforated::Error>
where
    M: DendriticModel<Dtype = f32, Device = AutoDevice>
        + ModuleMut<Image<Traced>, Output = Logits<Traced>>
        + Module<Image<NoneTape>, Output = Logits>,
{
    let dev = AutoDevice::seed_from_u64(seed);
    let mut model = build(&dev)?;
    let setup = adjust(Setup::new(data, &dev, seed, args, name, dendrites));
    run(
        &setup,
        &mut model,
        |m, x| m.forward_mut(images(x, side)),
        |m, x| m.forward(images(x, side)),
    )
}
