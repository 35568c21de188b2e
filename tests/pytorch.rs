//! PyTorch-made weights load as they are (`load_pytorch`, one naming table per model) and the
//! loaded models compute PyTorch's outputs. The fixtures come from
//! `scripts/pytorch_fixtures.py` (see `tests/fixtures/pytorch/PROVENANCE.md`); no Python runs
//! here.

use perforated::checkpoint::{load_plain, load_pytorch, read_tensor};
use perforated::prelude::*;

const DIR: &str = "tests/fixtures/pytorch";

fn fixture(name: &str) -> String {
    format!("{DIR}/{name}.safetensors")
}

/// The largest difference between our output and PyTorch's, which must be below 1e-5.
fn assert_close(ours: &[f32], name: &str, rows: usize, cols: usize) {
    let dev: Cpu = Default::default();
    let io = fixture(&format!("{name}.io"));
    let theirs: Tensor<(usize, usize), f32, Cpu> =
        read_tensor(&dev, &io, "output", (rows, cols)).unwrap();
    let theirs = theirs.as_vec();
    assert_eq!(ours.len(), theirs.len());
    let worst = ours
        .iter()
        .zip(&theirs)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(worst < 1e-5, "{name}: largest difference {worst}");
    assert!(
        theirs.iter().any(|v| v.abs() > 1e-2),
        "{name}: a real output"
    );
}

#[perforated]
struct Mlp {
    fc1: Linear<16, 32>,
    act: ReLU,
    fc2: Linear<32, 4>,
}

/// `nn.Sequential(Linear(16, 32), ReLU(), Linear(32, 4))`: indices to fields.
const MLP_NAMES: &[(&str, &str)] = &[("fc1", "0"), ("fc2", "2")];

fn mlp_output(name: &str) -> Vec<f32> {
    let dev: Cpu = Default::default();
    let mut model = Mlp::<f32, Cpu>::build(&dev).unwrap();
    load_pytorch(&mut model, fixture(name), MLP_NAMES).unwrap();
    let x: Tensor<(usize, Const<16>), f32, Cpu> =
        read_tensor(&dev, fixture(&format!("{name}.io")), "input", (6, Const)).unwrap();
    model.forward(x).as_vec()
}

#[test]
fn mlp_matches_pytorch() {
    assert_close(&mlp_output("mlp"), "mlp", 6, 4);
}

/// f16, bf16 and f64 weights are converted on load; the reference output was computed by
/// PyTorch from the weights as saved (rounded to f16 or bf16).
#[test]
fn half_and_double_precision_weights_are_converted() {
    for name in ["mlp_f16", "mlp_bf16", "mlp_f64"] {
        assert_close(&mlp_output(name), name, 6, 4);
    }
}

#[perforated]
struct Cnn {
    block: PaiSequential<Conv2d<1, 4, 3, 1, 1>, BatchNorm2D<4>>,
    act: ReLU,
    pool: MaxPool2d<2>,
    flat: Flatten<64>,
    head: Linear<64, 3>,
}

/// `features = Sequential(Conv2d, BatchNorm2d, ReLU, MaxPool2d)`, `classifier = Linear`.
const CNN_NAMES: &[(&str, &str)] = &[
    ("block.layer", "features.0"),
    ("block.norm", "features.1"),
    ("head", "classifier"),
];

#[test]
fn conv_batchnorm_cnn_matches_pytorch_in_evaluation() {
    let dev: Cpu = Default::default();
    let mut model = Cnn::<f32, Cpu>::build(&dev).unwrap();
    load_pytorch(&mut model, fixture("cnn"), CNN_NAMES).unwrap();
    let x: Tensor<(usize, Const<1>, usize, usize), f32, Cpu> =
        read_tensor(&dev, fixture("cnn.io"), "input", (5, Const, 8, 8)).unwrap();
    assert_close(&model.forward(x.clone()).as_vec(), "cnn", 5, 3);
    // a dendrite phase on the loaded model leaves its output as PyTorch's
    model.start_dendrite_phase().unwrap();
    let grads = model.alloc_grads().unwrap();
    let loss = model.forward_mut(x.clone().traced(grads)).square().mean();
    let mut opt = DendriticOptimizer::adam(AdamConfig::default());
    opt.step(&mut model, loss.backward()).unwrap();
    assert_close(&model.forward(x).as_vec(), "cnn", 5, 3);
}

#[perforated]
struct UnbiasedCnn {
    // stride 1, padding 1, dilation 1, no bias
    block: PaiSequential<Conv2d<1, 4, 3, 1, 1, 1, false>, BatchNorm2D<4>>,
    act: ReLU,
    pool: MaxPool2d<2>,
    flat: Flatten<64>,
    head: Linear<64, 3>,
}

/// `Conv2d(.., bias=False)` before a BatchNorm is ours with `BIAS = false`: no bias tensor to
/// load, and none trained (it stays zero through training steps, dendrite copies included).
#[test]
fn a_bias_free_convolution_matches_pytorch() {
    let dev: Cpu = Default::default();
    let mut model = UnbiasedCnn::<f32, Cpu>::build(&dev).unwrap();
    load_pytorch(&mut model, fixture("cnn_nobias"), CNN_NAMES).unwrap();
    let x: Tensor<(usize, Const<1>, usize, usize), f32, Cpu> =
        read_tensor(&dev, fixture("cnn_nobias.io"), "input", (5, Const, 8, 8)).unwrap();
    assert_close(&model.forward(x.clone()).as_vec(), "cnn_nobias", 5, 3);
    let mut opt = DendriticOptimizer::adam(AdamConfig::default());
    for _ in 0..2 {
        let grads = model.alloc_grads().unwrap();
        let loss = model.forward_mut(x.clone().traced(grads)).square().mean();
        opt.step(&mut model, loss.backward()).unwrap();
    }
    assert!(model
        .block
        .neurons()
        .layer
        .bias
        .as_vec()
        .iter()
        .all(|b| *b == 0.0));
    // the file with a bias does not load into it: the bias is left unused, named
    let e = load_pytorch(&mut model, fixture("cnn"), CNN_NAMES)
        .unwrap_err()
        .to_string();
    assert!(e.contains("features.0.bias"), "{e}");
}

#[perforated(custom_forward)]
struct GruReader {
    #[pai(processor = GruState)]
    gru: Gru<8, 16>,
    head: Linear<16, 5>,
}

#[perforated(custom_forward)]
struct LstmReader {
    #[pai(processor = LstmState)]
    lstm: Lstm<8, 16>,
    head: Linear<16, 5>,
}

type Sequences = Tensor<(usize, usize, Const<8>), f32, Cpu>;
type Hidden = Tensor<(usize, Const<16>), f32, Cpu>;

fn sequences(name: &str) -> (Sequences, Hidden) {
    let dev: Cpu = Default::default();
    let x: Sequences =
        read_tensor(&dev, fixture(&format!("{name}.io")), "input", (3, 7, Const)).unwrap();
    (x, dev.zeros_like(&(3, Const)))
}

/// `nn.GRU(8, 16, batch_first=True)` as `rnn`, read at the last step by `fc`: the packed
/// `weight_ih_l0` (48, 8) etc. are split into the gates r, z, n by the loader.
#[test]
fn gru_matches_pytorch() {
    let dev: Cpu = Default::default();
    let mut model = GruReader::<f32, Cpu>::build(&dev).unwrap();
    load_pytorch(
        &mut model,
        fixture("gru"),
        &[("gru", "rnn"), ("head", "fc")],
    )
    .unwrap();
    let (x, h0) = sequences("gru");
    let (outputs, _) = model.gru.forward((x, h0));
    let y = model
        .head
        .forward(perforated::layers::last_step(outputs).unwrap());
    assert_close(&y.as_vec(), "gru", 3, 5);
}

/// `nn.LSTM(8, 16, batch_first=True)`: gates i, f, g, o.
#[test]
fn lstm_matches_pytorch() {
    let dev: Cpu = Default::default();
    let mut model = LstmReader::<f32, Cpu>::build(&dev).unwrap();
    load_pytorch(
        &mut model,
        fixture("lstm"),
        &[("lstm", "rnn"), ("head", "fc")],
    )
    .unwrap();
    let (x, h0) = sequences("lstm");
    let (outputs, _) = model.lstm.forward((x, (h0.clone(), h0)));
    let y = model
        .head
        .forward(perforated::layers::last_step(outputs).unwrap());
    assert_close(&y.as_vec(), "lstm", 3, 5);
}

/// The naming table's mistakes are errors that say what is wrong: an entry that matches no
/// path of ours (a typo), two fields mapped to one module; nothing is copied.
#[test]
fn naming_table_mistakes_are_named() {
    let dev: Cpu = Default::default();
    let mut model = Mlp::<f32, Cpu>::build(&dev).unwrap();
    let before = model.forward(dev.ones_like(&(1, Const::<16>))).as_vec();
    let e = load_pytorch(&mut model, fixture("mlp"), &[("fc1", "0"), ("fc_2", "2")])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("(`fc_2`, `2`)") && e.contains("matching nothing"),
        "{e}"
    );
    // (layers of one shape mapped to one module: "already used", see tests/pretrained.rs)
    let e = load_pytorch(&mut model, fixture("mlp"), &[("fc1", "0"), ("fc2", "0")])
        .unwrap_err()
        .to_string();
    assert!(e.contains("fc2.weight (`0.weight` in the file)"), "{e}");
    // the same table mistake through the plain loader
    let e = load_plain(
        &mut model,
        fixture("mlp"),
        &[("fc1", "0"), ("fc2", "2"), ("fc3", "4")],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("(`fc3`, `4`)"), "{e}");
    assert_eq!(
        model.forward(dev.ones_like(&(1, Const::<16>))).as_vec(),
        before,
        "nothing copied"
    );
}

/// Paths in errors are the paths tables match (no `.neurons`), and a missing tensor's error
/// lists what the file has near it.
#[test]
fn errors_print_the_paths_tables_match() {
    let dev: Cpu = Default::default();
    let mut model = Mlp::<f32, Cpu>::build(&dev).unwrap();
    let e = load_pytorch(&mut model, fixture("mlp"), &[("fc1", "0"), ("fc2", "1")])
        .unwrap_err()
        .to_string();
    assert!(!e.contains("neurons"), "{e}");
    assert!(e.contains("fc2.weight (`1.weight` in the file)"), "{e}");
}

/// The reading helper names a missing tensor with what the file has, and a wrong shape.
#[test]
fn reading_helper_checks_names_and_shapes() {
    let dev: Cpu = Default::default();
    let io = fixture("mlp.io");
    let e = read_tensor::<_, f32, _>(&dev, &io, "inputs", (6, Const::<16>))
        .unwrap_err()
        .to_string();
    assert!(e.contains("`inputs`") && e.contains("input, output"), "{e}");
    let e = read_tensor::<_, f32, _>(&dev, &io, "input", (6, Const::<15>))
        .unwrap_err()
        .to_string();
    assert!(e.contains("[6, 15]") && e.contains("[6, 16]"), "{e}");
}

/// `use perforated::prelude::*` leaves `safetensors` naming the crate (dfdx's prelude used to
/// shadow it with a private item).
#[test]
fn the_prelude_names_the_safetensors_crate() {
    let bytes = std::fs::read(fixture("mlp.io")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.tensor("input").unwrap().shape(), &[6, 16]);
}

#[perforated]
struct UnbiasedMlp {
    fc1: UnbiasedLinear<16, 32>,
    act: ReLU,
    fc2: Linear<32, 4>,
}

/// `Linear(16, 32, bias=False)` is dfdx's `UnbiasedLinear`, converted like `Linear`; its
/// dendrites are bias-free copies and train.
#[test]
fn a_bias_free_linear_matches_pytorch_and_takes_dendrites() {
    let dev: Cpu = Default::default();
    let mut model = UnbiasedMlp::<f32, Cpu>::build(&dev).unwrap();
    load_pytorch(&mut model, fixture("mlp_nobias"), MLP_NAMES).unwrap();
    let x: Tensor<(usize, Const<16>), f32, Cpu> =
        read_tensor(&dev, fixture("mlp_nobias.io"), "input", (6, Const)).unwrap();
    assert_close(&model.forward(x.clone()).as_vec(), "mlp_nobias", 6, 4);
    assert_eq!(model.layers().len(), 2, "both layers converted");
    model.start_dendrite_phase().unwrap();
    let mut opt = DendriticOptimizer::adam(AdamConfig::default());
    for _ in 0..3 {
        let grads = model.alloc_grads().unwrap();
        let loss = model.forward_mut(x.clone().traced(grads)).square().mean();
        opt.step(&mut model, loss.backward()).unwrap();
    }
    assert!(model
        .correlation_scores()
        .iter()
        .all(|(_, r)| r.batches == 3));
    assert_close(&model.forward(x).as_vec(), "mlp_nobias", 6, 4);
}

/// Every tensor of a safetensors file: name -> (dtype, shape, bytes).
fn entries(
    path: &std::path::Path,
) -> std::collections::BTreeMap<String, (String, Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(n, v)| {
            (
                n,
                (
                    format!("{:?}", v.dtype()),
                    v.shape().to_vec(),
                    v.data().to_vec(),
                ),
            )
        })
        .collect()
}

/// `export_pytorch` writes back what `load_pytorch` read: the same names (packed gates joined in
/// PyTorch's order, norm leaves renamed), shapes and values to the bit; only BatchNorm's
/// `num_batches_tracked` count is ours (zero).
#[test]
fn export_writes_back_the_state_dict_it_loaded() {
    fn round_trip<M: DendriticModel<Dtype = f32, Device = Cpu>>(
        model: &mut M,
        name: &str,
        names: &[(&str, &str)],
    ) {
        load_pytorch(model, fixture(name), names).unwrap();
        let out = std::env::temp_dir().join(format!(
            "perforated-export-{}-{name}.safetensors",
            std::process::id()
        ));
        perforated::checkpoint::export_pytorch(model, &out, names).unwrap();
        let (theirs, ours) = (entries(std::path::Path::new(&fixture(name))), entries(&out));
        assert_eq!(
            theirs.keys().collect::<Vec<_>>(),
            ours.keys().collect::<Vec<_>>(),
            "{name}"
        );
        for (k, t) in &theirs {
            if k.ends_with("num_batches_tracked") {
                assert_eq!((&t.0, &t.1), (&ours[k].0, &ours[k].1), "{name} {k}");
            } else {
                assert_eq!(t, &ours[k], "{name} {k}");
            }
        }
        std::fs::remove_file(out).unwrap();
    }
    let dev: Cpu = Default::default();
    round_trip(&mut Mlp::<f32, Cpu>::build(&dev).unwrap(), "mlp", MLP_NAMES);
    round_trip(&mut Cnn::<f32, Cpu>::build(&dev).unwrap(), "cnn", CNN_NAMES);
    round_trip(
        &mut GruReader::<f32, Cpu>::build(&dev).unwrap(),
        "gru",
        &[("gru", "rnn"), ("head", "fc")],
    );
    round_trip(
        &mut LstmReader::<f32, Cpu>::build(&dev).unwrap(),
        "lstm",
        &[("lstm", "rnn"), ("head", "fc")],
    );
    // dendrites cannot go to PyTorch
    let mut model = Mlp::<f32, Cpu>::build(&dev).unwrap();
    model.fc1.grow_dendrites(1).unwrap();
    let e = perforated::checkpoint::export_pytorch(
        &mut model,
        std::env::temp_dir().join("never.safetensors"),
        MLP_NAMES,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("`fc1` has 1 dendrite(s)"), "{e}");
}
