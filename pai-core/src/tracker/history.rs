//! `history.jsonl`: every epoch's record, one JSON object a line, appended as the run goes
//! (checkpoints leave the history out, so that saving an epoch costs the same at epoch 10 and
//! at epoch 10,000), and read back by a resume up to the epochs `latest` committed.

use std::io::BufRead;
use std::path::Path;

use super::EpochRecord;
use crate::disk::{append_after, write_atomic};
use crate::error::{Error, Result};

/// The epoch records, one JSON object a line.
pub(super) const HISTORY: &str = "history.jsonl";

/// Appends the newest record of `history` to the run's history file after its first
/// `committed` bytes (anything after them is a line of an epoch that was not committed: a
/// failed call, or a crash before `latest` was written); rewrites the file from `history`
/// when it is shorter than that (removed or cut by someone else). Returns the file's new
/// length, which becomes `committed` once the epoch is.
///
/// # Errors
/// [`Error::Io`] naming the file.
pub(super) fn append(dir: &Path, committed: u64, history: &[EpochRecord]) -> Result<u64> {
    let line = |r: &EpochRecord| serde_json::to_string(r).expect("plain data serialises") + "\n";
    let path = dir.join(HISTORY);
    let Some(last) = history.last() else {
        return Ok(committed);
    };
    if let Some(length) = append_after(&path, committed, line(last).as_bytes())? {
        return Ok(length);
    }
    let text: String = history.iter().map(line).collect();
    write_atomic(&path, text.as_bytes())?;
    Ok(text.len() as u64)
}

/// Cuts the history file back to its first `committed` bytes (the epochs `latest` holds).
///
/// # Errors
/// [`Error::Io`] naming the file.
pub(super) fn cut(dir: &Path, committed: u64) -> Result<()> {
    let path = dir.join(HISTORY);
    let io = |source| Error::Io {
        action: "cutting back",
        path: path.clone(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(io)?;
    file.set_len(committed).map_err(io)
}

/// Starts an empty history file (a new run in `dir`).
///
/// # Errors
/// [`Error::Io`] naming the file.
pub(super) fn start(dir: &Path) -> Result<()> {
    write_atomic(&dir.join(HISTORY), b"")
}

/// The first `epochs` records of the run's history file, and the bytes they take (lines
/// after them belong to epochs that were never committed, and are dropped).
///
/// # Errors
/// [`Error::Io`] when it cannot be read; [`Error::Corrupt`] when it holds fewer epochs than
/// the checkpoint recorded, or a line that is not an epoch record.
pub(super) fn read(dir: &Path, epochs: usize) -> Result<(Vec<EpochRecord>, u64)> {
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
