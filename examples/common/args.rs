//! The command line every example accepts (parsed by `clap`: `--help` lists it), and the
//! output a person sees: the library's per-epoch `tracing` events on standard error, batch
//! progress bars (`indicatif`, drawn only on a terminal); `--quiet` turns both off.

use std::path::PathBuf;

use clap::{CommandFactory, FromArgMatches, Parser};

/// Flags as typed; the example fills in its own defaults.
#[derive(Debug, Parser)]
struct Flags {
    /// Seeds to run (the tables report mean ± sd over them)
    #[arg(long, value_parser = positive)]
    seeds: Option<usize>,
    /// Most epochs a run trains (the tracker usually completes sooner)
    #[arg(long, value_parser = positive)]
    epochs: Option<usize>,
    /// Where the runs' checkpoints, CSV files and graphs go [default: runs/<example>]
    #[arg(long)]
    out: Option<PathBuf>,
    /// Read the data from IDX files in this directory (the full Fashion-MNIST or MNIST)
    #[arg(long)]
    data: Option<PathBuf>,
    /// Data-parallel replicas, where an example uses them
    #[arg(long, value_parser = positive, default_value_t = 2)]
    replicas: usize,
    /// Runs (seeds and rows of a table) trained at the same time [default: the number of
    /// cores]; each run's seconds are then measured beside the others
    #[arg(long, value_parser = positive)]
    jobs: Option<usize>,
    /// A short run: one seed, fewer epochs, part of the training set
    #[arg(long)]
    quick: bool,
    /// No progress bars and no per-epoch lines
    #[arg(long)]
    quiet: bool,
}

fn positive(s: &str) -> Result<usize, String> {
    s.parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("`{s}` is not a positive whole number"))
}

/// Parsed flags with the example's defaults.
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
    /// Runs trained at the same time.
    pub jobs: usize,
    /// The progress bars of the runs under way, drawn together.
    bars: indicatif::MultiProgress,
}

impl Args {
    /// Reads the process arguments (`--help` prints the flags and exits 0; a bad flag prints
    /// why and exits 2); `example` names the command and the default output directory. Unless
    /// `--quiet`, shows the library's events (one line per epoch) on standard error.
    pub fn parse(example: &str, seeds: usize, epochs: usize) -> Self {
        let command = Flags::command()
            .name(example.to_string())
            .bin_name(format!("cargo run --release --example {example} --"))
            .about(format!("perforated example `{example}`"))
            .mut_arg("seeds", |a| a.default_value(seeds.to_string()))
            .mut_arg("epochs", |a| a.default_value(epochs.to_string()));
        let flags = Flags::from_arg_matches(&command.get_matches()).unwrap_or_else(|e| e.exit());
        if !flags.quiet {
            // one line per epoch from the tracker (target `perforated`), on standard error
            tracing_subscriber::fmt()
                .with_writer(std::io::stderr)
                .with_max_level(tracing_subscriber::filter::LevelFilter::INFO)
                .with_target(false)
                .without_time()
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .init();
        }
        Args {
            seeds: flags.seeds.unwrap_or(seeds),
            epochs: flags.epochs.unwrap_or(epochs),
            out: flags
                .out
                .unwrap_or_else(|| PathBuf::from("runs").join(example)),
            data: flags.data,
            quick: flags.quick,
            quiet: flags.quiet,
            replicas: flags.replicas,
            jobs: flags.jobs.unwrap_or_else(|| {
                std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
            }),
            bars: indicatif::MultiProgress::new(),
        }
    }

    /// A bar over `len` batches labelled `label` on standard error: hidden with `--quiet`
    /// (and by `indicatif` when standard error is not a terminal).
    pub fn progress(&self, label: &str, len: usize) -> indicatif::ProgressBar {
        if self.quiet {
            return indicatif::ProgressBar::hidden();
        }
        let bar = indicatif::ProgressBar::new(len as u64).with_prefix(label.to_string());
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {elapsed}")
        {
            bar.set_style(style.progress_chars("#>."));
        }
        self.bars.add(bar)
    }
}
