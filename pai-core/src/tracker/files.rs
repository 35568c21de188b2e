//! The files a run leaves behind beside its checkpoints: `history.jsonl` (one line per epoch,
//! appended) and the CSV files (rewritten atomically after every epoch).

use std::io::{BufRead, Seek, Write};
use std::path::Path;

use super::{EpochRecord, TrackerConfig, TrackerState};
use crate::disk::write_atomic;
use crate::error::{Error, Result};

/// The epoch records, one JSON object a line.
pub(super) const HISTORY: &str = "history.jsonl";

/// Appends `record` to the run's history file after its first `committed` bytes (anything
/// after them is a line of an epoch that was not committed: a failed call, or a crash before
/// `latest` was written). Returns the file's new length, which becomes `committed` once the
/// epoch is.
///
/// # Errors
/// [`Error::Io`] naming the file.
pub(super) fn append_history(dir: &Path, committed: u64, record: &EpochRecord) -> Result<u64> {
    let path = dir.join(HISTORY);
    let io = |source| Error::Io {
        action: "appending to",
        path: path.clone(),
        source,
    };
    let mut line = serde_json::to_string(record).expect("plain data serialises");
    line.push('\n');
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io)?;
    file.set_len(committed).map_err(io)?;
    file.seek(std::io::SeekFrom::Start(committed)).map_err(io)?;
    file.write_all(line.as_bytes()).map_err(io)?;
    Ok(committed + line.len() as u64)
}

/// Starts an empty history file (a new run in `dir`).
///
/// # Errors
/// [`Error::Io`] naming the file.
pub(super) fn start_history(dir: &Path) -> Result<()> {
    write_atomic(&dir.join(HISTORY), b"")
}

/// The first `epochs` records of the run's history file, and the bytes they take (lines
/// after them belong to epochs that were never committed, and are dropped).
///
/// # Errors
/// [`Error::Io`] when it cannot be read; [`Error::Corrupt`] when it holds fewer epochs than
/// the checkpoint recorded, or a line that is not an epoch record.
pub(super) fn read_history(dir: &Path, epochs: usize) -> Result<(Vec<EpochRecord>, u64)> {
    let path = dir.join(HISTORY);
    let file = std::fs::File::open(&path).map_err(|source| Error::Io {
        action: "reading",
        path: path.clone(),
        source,
    })?;
    let mut reader = std::io::BufReader::new(file);
    let mut records = Vec::new();
    let mut bytes = 0u64;
    let mut line = String::new();
    while records.len() < epochs {
        line.clear();
        let n = reader.read_line(&mut line).map_err(|source| Error::Io {
            action: "reading",
            path: path.clone(),
            source,
        })?;
        if n == 0 || !line.ends_with('\n') {
            return Err(Error::corrupt(
                &path,
                format!(
                    "it holds {} complete epoch record(s), and `latest.safetensors` recorded \
                     {epochs}",
                    records.len()
                ),
                None,
            ));
        }
        let record: EpochRecord = serde_json::from_str(&line).map_err(|e| {
            let reason = format!("line {} is not an epoch record ({e})", records.len() + 1);
            Error::corrupt(&path, reason, Some(e.into()))
        })?;
        records.push(record);
        bytes += n as u64;
    }
    Ok((records, bytes))
}

fn opt(v: Option<f64>) -> String {
    v.map_or(String::new(), |v| format!("{v}"))
}

/// One CSV file under the run's directory: the header, then one line per row.
fn csv<T>(
    config: &TrackerConfig,
    name: &str,
    header: &str,
    rows: impl IntoIterator<Item = T>,
    line: impl Fn(T) -> String,
) -> Result<()> {
    let mut text = format!("{header}\n");
    for row in rows {
        text.push_str(&line(row));
        text.push('\n');
    }
    write_atomic(&config.dir.join(name), text.as_bytes())
}

/// `scores.csv`, `switches.csv`, `params.csv`, `best_test_scores.csv`, `correlations.csv`.
pub(super) fn write_all(config: &TrackerConfig, state: &TrackerState) -> Result<()> {
    let mut extras: Vec<&String> = state.history.iter().flat_map(|r| r.extras.keys()).collect();
    extras.sort();
    extras.dedup();
    let header = "epoch,phase,score,running,test,train_loss,lr,dendrites,params,bytes,seconds";
    let header: String = std::iter::once(header)
        .chain(extras.iter().map(|n| n.as_str()))
        .collect::<Vec<_>>()
        .join(",");
    csv(config, "scores.csv", &header, &state.history, |r| {
        let mut line = format!(
            "{},{},{},{},{},{},{},{},{},{},{:.6}",
            r.epoch,
            r.phase,
            r.score,
            r.running,
            opt(r.test),
            opt(r.train_loss),
            r.lr,
            r.dendrites,
            r.params,
            r.bytes,
            r.seconds
        );
        for n in &extras {
            line.push(',');
            line.push_str(&opt(r.extras.get(*n).copied()));
        }
        line
    })?;
    csv(
        config,
        "switches.csv",
        "epoch,to,dendrites,reason",
        &state.switches,
        |s| format!("{},{},{},{}", s.epoch, s.to, s.dendrites, s.reason),
    )?;
    csv(
        config,
        "params.csv",
        "epoch,dendrites,params",
        &state.history,
        |r| format!("{},{},{}", r.epoch, r.dendrites, r.params),
    )?;
    csv(
        config,
        "best_test_scores.csv",
        "dendrites,params,best_val,test_at_best_val,epoch",
        &state.architectures,
        |a| {
            let test = opt(a.test);
            format!("{},{},{},{test},{}", a.dendrites, a.params, a.val, a.epoch)
        },
    )?;
    let correlations = state
        .history
        .iter()
        .flat_map(|r| r.correlations.iter().map(move |(l, c)| (r.epoch, l, c)));
    csv(
        config,
        "correlations.csv",
        "epoch,layer,best_correlation",
        correlations,
        |(epoch, layer, c)| format!("{epoch},{layer},{c}"),
    )
}
