//! Files on disk: writes that replace a file whole or not at all.
//!
//! Checkpoints and the tracker's CSV files both go through [`write_atomic`], so a crash or a
//! full disk never leaves a half-written file where a good one stood.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Writes `bytes` to a temporary file beside `path`, then renames it over `path`.
///
/// # Errors
/// [`Error::Io`] naming the file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |action, source| Error::Io {
        action,
        path: path.to_path_buf(),
        source,
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| Error::Config(format!("`{}` is not a file path", path.display())))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp: PathBuf = path.with_file_name(tmp_name);
    std::fs::write(&tmp, bytes).map_err(|e| io("writing", e))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io("replacing", e)
    })
}
