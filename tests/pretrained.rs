//! A plain dfdx model's weights load into a perforated model, which then computes the same.

mod common;

use common::TestDevice;

use perforated::prelude::*;

#[perforated]
struct Net {
    fc1: Linear<4, 8>,
    act: ReLU,
    #[pai(track)]
    norm: LayerNorm1D<8>,
    fc2: Linear<8, 3>,
}

type Plain = (Linear<4, 8>, ReLU, LayerNorm1D<8>, Linear<8, 3>);

fn dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("perforated-pretrained-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn plain_weights_load_into_the_neurons_with_identical_outputs() {
    let dev = TestDevice::seed_from_u64(3);
    let mut plain = dev.build_module::<Plain, f32>();
    // train it a little so it is not at its initialisation
    let x: Tensor<Rank2<16, 4>, f32, TestDevice> = dev.sample_normal();
    let y: Tensor<Rank2<16, 3>, f32, TestDevice> = dev.sample_normal();
    let mut opt = perforated::dfdx::optim::Adam::new(&plain, AdamConfig::default());
    for _ in 0..20 {
        let grads = plain.alloc_grads();
        let loss = mse_loss(plain.forward_mut(x.trace(grads)), y.clone());
        opt.update(&mut plain, &loss.backward()).unwrap();
    }
    let path = dir().join("plain.safetensors");
    plain.save_safetensors(&path).unwrap();

    let mut net = Net::<f32, TestDevice>::build(&TestDevice::seed_from_u64(99)).unwrap();
    assert_ne!(
        net.forward(x.clone()).array(),
        plain.forward(x.clone()).array()
    );
    perforated::checkpoint::load_plain(
        &mut net,
        &path,
        &[("fc1", "0"), ("norm", "2"), ("fc2", "3")],
    )
    .unwrap();
    assert_eq!(
        net.forward(x.clone()).array(),
        plain.forward(x.clone()).array()
    );

    // dendrites added to a pretrained model change nothing until they are trained
    net.start_dendrite_phase().unwrap();
    assert_eq!(
        net.forward(x.clone()).array(),
        plain.forward(x.clone()).array()
    );

    // a wrong mapping is refused with the tensor named, and nothing is copied
    let mut other = Net::<f32, TestDevice>::build(&dev).unwrap();
    let before = other.forward(x.clone()).array();
    let e = perforated::checkpoint::load_plain(&mut other, &path, &[("fc1", "0")])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("norm.beta") || e.contains("norm.gamma") || e.contains("fc2"),
        "{e}"
    );
    assert_eq!(other.forward(x).array(), before);
}

#[perforated]
struct Fused {
    block: PaiSequential<Conv2d<1, 4, 3, 1, 1>, BatchNorm2D<4>>,
    act: ReLU,
}

#[test]
fn separate_conv_and_norm_load_into_a_fused_group() {
    let dev = TestDevice::seed_from_u64(4);
    type Separate = (
        Conv2d<1, 4, 3, f32, TestDevice, 1, 1>,
        modules::BatchNorm2D<4, f32, TestDevice>,
    );
    let mut plain: Separate = (BuildModule::build(&dev), BuildModule::build(&dev));
    let x: Tensor<(usize, Const<1>, usize, usize), f32, TestDevice> =
        dev.sample_normal_like(&(3, Const, 5, 5));
    // move the running statistics away from their defaults
    for _ in 0..3 {
        let _ = plain.1.forward_mut(plain.0.forward(x.leaky_trace()));
    }
    let path = dir().join("separate.safetensors");
    plain.save_safetensors(&path).unwrap();
    let want = plain.1.forward(plain.0.forward(x.clone())).relu();

    let mut fused = Fused::<f32, TestDevice>::build(&dev).unwrap();
    perforated::checkpoint::load_plain(
        &mut fused,
        &path,
        &[("block.layer", "0"), ("block.norm", "1")],
    )
    .unwrap();
    assert_eq!(fused.forward(x.clone()).as_vec(), want.as_vec());

    // or in memory: the pair becomes the group with `From`
    let group: PaiSequential<_, _> = plain.into();
    let direct: Dendritic<_> = Dendritic::new(&dev, group, DendriteConfig::default()).unwrap();
    assert_eq!(direct.forward(x).relu().as_vec(), want.as_vec());
}

#[perforated]
struct Twin {
    fc1: Linear<4, 4>,
    act: ReLU,
    fc2: Linear<4, 4>,
}

/// A rename table that sends two layers to the same file tensors used to load `Ok` with the
/// second layer's tensors silently ignored; each file tensor is now used once, and a tensor
/// no layer takes is an error that names it.
#[test]
fn a_file_tensor_used_twice_or_left_unused_is_an_error() {
    let dev = TestDevice::seed_from_u64(4);
    // `nn.Sequential(Linear(4, 4), ReLU, Linear(4, 4))` as PyTorch names it
    let plain = dev.build_module::<(Linear<4, 4>, ReLU, Linear<4, 4>), f32>();
    let path = dir().join("sequential.safetensors");
    plain.save_safetensors(&path).unwrap();
    let mut model = Twin::<f32, TestDevice>::build(&dev).unwrap();
    let before = common::snapshot(&mut model);
    let e = perforated::checkpoint::load_plain(&mut model, &path, &[("fc1", "0"), ("fc2", "0")])
        .unwrap_err()
        .to_string();
    assert!(e.contains("already used") && e.contains("0.weight"), "{e}");
    assert_eq!(common::snapshot(&mut model), before, "nothing was copied");
    // a table that leaves layer 2 out
    let e = perforated::checkpoint::load_plain(&mut model, &path, &[("fc1", "0"), ("fc2", "0x")])
        .unwrap_err()
        .to_string();
    assert!(e.contains("0x.weight"), "{e}");
    assert!(
        e.contains("the file has `0.bias`, `0.weight`, `2.bias`, `2.weight`"),
        "{e}"
    );
    // the right table loads
    perforated::checkpoint::load_plain(&mut model, &path, &[("fc1", "0"), ("fc2", "2")]).unwrap();
    // a file with a third layer nothing takes: named, not ignored
    let longer = dev.build_module::<(Linear<4, 4>, ReLU, Linear<4, 4>, ReLU, Linear<4, 4>), f32>();
    let path = dir().join("longer.safetensors");
    longer.save_safetensors(&path).unwrap();
    let e = perforated::checkpoint::load_plain(&mut model, &path, &[("fc1", "0"), ("fc2", "2")])
        .unwrap_err()
        .to_string();
    assert!(e.contains("`4.bias`, `4.weight`"), "{e}");
}
