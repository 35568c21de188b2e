//! Files on disk: writes that replace a file whole or not at all, with temporary names no
//! other writer shares, and the sweep of temporaries a killed process left behind.
//!
//! Checkpoints, the tracker's CSV files and its graph all go through [`write_atomic`] (or
//! [`temp_path`] for writers that need a path), so a crash or a full disk never leaves a
//! half-written file where a good one stood.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// What every temporary name holds, and the sweep looks for.
const TEMP_MARK: &str = ".tmp-";

/// A temporary path beside `path`, unique to this process and call: `.{stem}.tmp-{pid}-{n}`
/// with `path`'s extension kept (an image encoder picks its format by it).
///
/// # Errors
/// [`Error::Config`] when `path` names no file.
pub fn temp_path(path: &Path) -> Result<PathBuf> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let stem = path
        .file_stem()
        .ok_or_else(|| Error::Config(format!("`{}` is not a file path", path.display())))?;
    let mut name = std::ffi::OsString::from(".");
    name.push(stem);
    name.push(format!(
        "{TEMP_MARK}{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    if let Some(ext) = path.extension() {
        name.push(".");
        name.push(ext);
    }
    Ok(path.with_file_name(name))
}

/// Renames the finished temporary `tmp` over `path`; `tmp` is removed if that fails.
///
/// # Errors
/// [`Error::Io`] naming `path`.
pub fn replace(tmp: &Path, path: &Path) -> Result<()> {
    std::fs::rename(tmp, path).map_err(|source| {
        let _ = std::fs::remove_file(tmp);
        Error::Io {
            action: "replacing",
            path: path.to_path_buf(),
            source,
        }
    })
}

/// Writes `bytes` to a temporary file beside `path`, then renames it over `path`. On failure
/// the temporary file is removed and `path` is as it was.
///
/// # Errors
/// [`Error::Io`] naming the file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temp_path(path)?;
    if let Err(source) = std::fs::write(&tmp, bytes) {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::Io {
            action: "writing",
            path: path.to_path_buf(),
            source,
        });
    }
    replace(&tmp, path)
}

/// Writes `bytes` into `path` after its first `committed` bytes (made if missing), cutting
/// off whatever followed them: the lines of an epoch whose call failed, or that a crash cut
/// short. Returns the new length, to be committed once everything else of the epoch is, or
/// `None` without writing when the file is shorter than `committed` (it was removed or cut by
/// someone else): the caller then rewrites it whole.
///
/// # Errors
/// [`Error::Io`] naming the file.
pub fn append_after(path: &Path, committed: u64, bytes: &[u8]) -> Result<Option<u64>> {
    use std::io::{Seek, Write};
    let io = |source| Error::Io {
        action: "appending to",
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io)?;
    if file.metadata().map_err(io)?.len() < committed {
        return Ok(None);
    }
    file.set_len(committed).map_err(io)?;
    file.seek(std::io::SeekFrom::Start(committed)).map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    Ok(Some(committed + bytes.len() as u64))
}

/// Removes the temporary files a killed writer left in `dir` (hidden names holding `.tmp`);
/// call it only while no other writer can be at work there (the tracker holds the run's
/// lock). Returns how many it removed.
pub fn sweep_temporaries(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with('.') && name.contains(".tmp") && e.path().is_file()
        })
        .filter(|e| std::fs::remove_file(e.path()).is_ok())
        .count()
}
