//! A plain dfdx model, trained and saved, then loaded into a perforated model: outputs equal
//! before any dendrite, then the tracker grows dendrites and the change is reported.
//!
//! ```text
//! cargo run --release --example pretrained -- [--epochs 300] [--out runs/pretrained]
//! ```

mod common;

use common::args::Args;
use common::digits::Digits;
use common::mlp::Mlp;
use common::run::{run, Images, Setup};
use perforated::prelude::*;
use rand::rngs::StdRng;
use rand::SeedableRng;

/// The same network as `Mlp<8>`, in plain dfdx.
type Plain = (Linear<64, 8>, LeakyReLU<f32>, Linear<8, 10>);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse("pretrained", 1, 300);
    let digits = Digits::load()?;
    let dev = AutoDevice::seed_from_u64(0);
    let mut rng = StdRng::seed_from_u64(0);

    // 1. an ordinary dfdx model, trained for 60 epochs and saved with dfdx
    let mut plain = dev.build_module::<Plain, f32>();
    let mut opt = perforated::dfdx::optim::Adam::new(
        &plain,
        AdamConfig {
            lr: 1e-2,
            ..Default::default()
        },
    );
    for _ in 0..60 {
        for rows in digits.train.batches(32, &mut rng) {
            let (x, y): (Images, _) = digits.train.tensors(&dev, &rows);
            let grads = plain.alloc_grads();
            let loss = cross_entropy_with_logits_loss(plain.forward_mut(x.traced(grads)), y);
            opt.update(&mut plain, &loss.backward())
                .map_err(|e| format!("{e:?}"))?;
        }
    }
    std::fs::create_dir_all(&args.out)?;
    let path = args.out.join("plain.safetensors");
    plain.save_safetensors(&path)?;
    let (test_x, _) = digits.test.all::<f32, _>(&dev);
    let plain_acc = digits.test.accuracy(&plain.forward(test_x.clone()));

    // 2. the perforated model takes the plain weights into its neurons
    let mut model = Mlp::<8, f32, AutoDevice>::build(&dev)?;
    perforated::checkpoint::load_plain(&mut model, &path, &[("fc1", "0"), ("fc2", "2")])?;
    let same = model.forward(test_x.clone()).as_vec() == plain.forward(test_x.clone()).as_vec();
    println!("plain dfdx model: test accuracy {:.2}%", 100.0 * plain_acc);
    println!("loaded into the perforated model: outputs identical = {same}");
    if !same {
        return Err("the converted model does not compute what the plain one did".into());
    }

    // 3. dendrites grow from there, the tracker deciding on validation loss
    let setup = Setup::new(&digits, &dev, 0, &args, "dendrites", Some(2));
    let outcome = run(
        &setup,
        &mut model,
        perforated::prelude::ModuleMut::forward_mut,
        perforated::prelude::Module::forward,
    )?;
    println!(
        "with dendrites: test accuracy {:.2}% at the best validation epoch ({} dendrite(s) per layer, {} parameters, {} epochs, {:.1} s); change {:+.2} points",
        100.0 * outcome.test,
        outcome.dendrites,
        outcome.params,
        outcome.epochs,
        outcome.seconds,
        100.0 * (outcome.test - plain_acc)
    );
    // what the run showed, said plainly
    if outcome.dendrites == 0 {
        println!(
            "no set of dendrites beat the pretrained network's best validation loss, so the \
             tracker rolled each back: this 64-8-10 network is already near what these 1,077 \
             images support (see {}/switches.csv for each decision); the change in accuracy is \
             the neurons' further training (one of the 360 test images is 0.28 points). The \
             point of this example is the exact load, not a gain",
            args.out.join("dendrites-seed0").display()
        );
    } else if outcome.test < plain_acc {
        println!(
            "the dendrites lowered the validation loss but not the test accuracy: with 360 test \
             images one image is 0.28 points"
        );
    }
    Ok(())
}
