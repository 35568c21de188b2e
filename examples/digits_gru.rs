//! Each 8x8 digit read as a sequence of 8 rows by a GRU, converted through its processor so
//! that every dendrite runs its own recurrence; with and without dendrites.
//!
//! ```text
//! cargo run --release --example digits_gru -- [--seeds 3] [--epochs 200] [--out runs/digits_gru]
//! ```

mod common;

use common::args::Args;
use common::digits::Digits;
use common::run::{run, table, verdict, Images, Logits, Outcome, Setup};
use perforated::layers::last_step;
use perforated::prelude::*;

const HIDDEN: usize = 16;

#[perforated(custom_forward)]
struct Reader {
    #[pai(processor = GruState)]
    gru: Gru<8, HIDDEN>,
    head: Linear<HIDDEN, 10>,
}

type Rows<T> = Tensor<(usize, usize, Const<8>), f32, AutoDevice, T>;
type Hidden = Tensor<(usize, Const<HIDDEN>), f32, AutoDevice>;

fn rows<T: Tape<f32, AutoDevice>>(x: Images<T>) -> (Rows<T>, Hidden) {
    let b = x.shape().0;
    let h0 = x.device().zeros_like(&(b, Const::<HIDDEN>));
    (x.reshape_like(&(b, 8, Const::<8>)), h0)
}

fn gru(
    digits: &Digits,
    seed: u64,
    dendrites: Option<usize>,
    args: &Args,
    name: &str,
) -> Result<Outcome, perforated::Error> {
    let dev = AutoDevice::seed_from_u64(seed);
    let mut model = Reader::<f32, AutoDevice>::build(&dev)?;
    let setup = Setup::new(digits, &dev, seed, args, name, dendrites);
    run(
        &setup,
        &mut model,
        |m, x| -> Logits<_> {
            // a fresh image is a fresh sequence: every dendrite starts from zeros
            m.gru.reset_state();
            let (outputs, _) = m.gru.forward_mut(rows(x));
            m.head
                .forward_mut(last_step(outputs).expect("a step of an 8-step sequence"))
        },
        |m, x| {
            m.gru.reset_state();
            let (outputs, _) = m.gru.forward(rows(x));
            m.head
                .forward(last_step(outputs).expect("a step of an 8-step sequence"))
        },
    )
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse("digits_gru", 3, 200);
    let digits = Digits::load()?;
    println!(
        "digits read row by row by a GRU; {} seeds; test accuracy at the best validation epoch",
        args.seeds
    );
    let rows = table(
        &args,
        &[
            ("gru 16", &|s| gru(&digits, s, None, &args, "gru")),
            ("gru 16 + dendrites", &|s| {
                gru(&digits, s, Some(2), &args, "gru-dendrites")
            }),
        ],
    )?;
    println!("\nwhat this showed: {}", verdict(&rows[0], &rows[1]));
    println!("tracker output under {}", args.out.display());
    Ok(())
}
