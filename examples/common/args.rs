//! The command-line overrides every example accepts: `--seeds N`, `--epochs N`, `--out DIR`.

use std::path::PathBuf;

/// Parsed overrides.
#[derive(Debug, Clone)]
pub struct Args {
    pub seeds: usize,
    pub epochs: usize,
    pub out: PathBuf,
}

impl Args {
    /// Reads the process arguments; `example` names the default output directory.
    pub fn parse(example: &str, seeds: usize, epochs: usize) -> Result<Self, String> {
        let mut args = Args {
            seeds,
            epochs,
            out: PathBuf::from("runs").join(example),
        };
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            let mut value = |name: &str| it.next().ok_or_else(|| format!("`{name}` needs a value"));
            match flag.as_str() {
                "--seeds" => args.seeds = number(&value("--seeds")?)?,
                "--epochs" => args.epochs = number(&value("--epochs")?)?,
                "--out" => args.out = PathBuf::from(value("--out")?),
                "--help" | "-h" => {
                    return Err(format!(
                        "usage: cargo run --release --example {example} -- [--seeds N] [--epochs N] [--out DIR]"
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
