//! The command-line overrides every example accepts: `--seeds N`, `--epochs N`, `--out DIR`,
//! `--data DIR` (where the example reads its data from, if it reads files), `--replicas N`
//! (data-parallel replicas, where an example uses them), `--quick` (a short
//! run: one seed, fewer epochs, a part of the training set) and `--quiet` (no progress bars).

use std::path::PathBuf;

/// Parsed overrides.
#[derive(Debug, Clone)]
pub struct Args {
    pub seeds: usize,
    pub epochs: usize,
    pub out: PathBuf,
    pub data: Option<PathBuf>,
    pub quick: bool,
    pub quiet: bool,
    /// Data-parallel replicas (the examples that train on several).
    pub replicas: usize,
}

impl Args {
    /// Reads the process arguments; `example` names the default output directory.
    pub fn parse(example: &str, seeds: usize, epochs: usize) -> Result<Self, String> {
        let mut args = Args {
            seeds,
            epochs,
            out: PathBuf::from("runs").join(example),
            data: None,
            quick: false,
            quiet: false,
            replicas: 2,
        };
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            let mut value = |name: &str| it.next().ok_or_else(|| format!("`{name}` needs a value"));
            match flag.as_str() {
                "--seeds" => args.seeds = number(&value("--seeds")?)?,
                "--epochs" => args.epochs = number(&value("--epochs")?)?,
                "--out" => args.out = PathBuf::from(value("--out")?),
                "--data" => args.data = Some(PathBuf::from(value("--data")?)),
                "--replicas" => args.replicas = number(&value("--replicas")?)?,
                "--quick" => args.quick = true,
                "--quiet" => args.quiet = true,
                "--help" | "-h" => {
                    return Err(format!(
                        "usage: cargo run --release --example {example} -- [--seeds N] [--epochs N] [--out DIR] [--data DIR] [--replicas N] [--quick] [--quiet]"
                    ))
                }
                other => return Err(format!("unknown argument `{other}` (try --help)")),
            }
        }
        Ok(args)
    }
}

fn number(s: &str) -> Result<usize, String> {
    s.parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("`{s}` is not a positive whole number"))
}
