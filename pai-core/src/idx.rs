//! IDX files, the format of MNIST and Fashion-MNIST: images and labels as `u8` arrays.
//!
//! A file is a big-endian header (two zero bytes, the element type `0x08` for `u8`, the number
//! of dimensions, then each dimension as a `u32`) followed by the elements in row-major order.
//! Files may be gzipped (`.gz`, recognised by their first bytes). Reading checks everything a
//! damaged or foreign file can get wrong: the magic, the type, a header cut short, fewer or
//! more elements than the header promises, and a header whose sizes would not fit in memory.
//!
//! ```no_run
//! let images = pai_core::idx::read("data/fashion-mnist/train-images-idx3-ubyte.gz")?;
//! assert_eq!(&images.dims[1..], &[28, 28]);
//! let labels = pai_core::idx::read("data/fashion-mnist/train-labels-idx1-ubyte.gz")?;
//! assert_eq!(labels.dims, [images.dims[0]]);
//! # Ok::<(), pai_core::Error>(())
//! ```

use std::io::Read;
use std::path::Path;

use crate::error::{Error, Result};

/// The most elements a file may declare: 2³² bytes (the full MNIST training images are 47 MB).
const MAX_ELEMENTS: u64 = 1 << 32;

/// The contents of an IDX file of `u8` elements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idx {
    /// The dimensions, outermost first: `[n, rows, cols]` for images, `[n]` for labels.
    pub dims: Vec<usize>,
    /// The elements, row-major.
    pub data: Vec<u8>,
}

impl Idx {
    /// The number of items: the first dimension.
    #[must_use]
    pub fn len(&self) -> usize {
        self.dims.first().copied().unwrap_or(0)
    }

    /// Whether the file holds no items.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Elements per item: the product of the dimensions after the first.
    #[must_use]
    pub fn item_len(&self) -> usize {
        self.dims.iter().skip(1).product()
    }
}

/// Reads an IDX file of `u8` elements, gzipped or not.
///
/// # Errors
/// [`Error::Io`] when the file cannot be opened; [`Error::Data`] when it is not an IDX file of
/// `u8`, is truncated, holds more than its header declares, or declares more than 2³² elements.
pub fn read(path: impl AsRef<Path>) -> Result<Idx> {
    let path = path.as_ref();
    let file = std::fs::File::open(path).map_err(|source| Error::Io {
        action: "opening",
        path: path.to_path_buf(),
        source,
    })?;
    let mut reader = std::io::BufReader::new(file);
    let bad = |reason: String, source: Option<std::io::Error>| Error::Data {
        path: path.to_path_buf(),
        reason,
        source: source.map(Into::into),
    };
    let gzipped = std::io::BufRead::fill_buf(&mut reader)
        .map_err(|e| bad("cannot read it".into(), Some(e)))?
        .starts_with(&[0x1f, 0x8b]);
    if gzipped {
        parse(&mut flate2::read::GzDecoder::new(reader), &bad)
    } else {
        parse(&mut reader, &bad)
    }
}

/// Header and elements from `r`.
fn parse(r: &mut dyn Read, bad: &dyn Fn(String, Option<std::io::Error>) -> Error) -> Result<Idx> {
    let mut head = [0u8; 4];
    r.read_exact(&mut head).map_err(|e| {
        bad(
            "too short for an IDX header (or a damaged gzip stream)".into(),
            Some(e),
        )
    })?;
    if head[0] != 0 || head[1] != 0 {
        return Err(bad(
            format!(
                "not an IDX file: it starts with {:02x} {:02x}, not 00 00 (MNIST-style files \
                 are `*-idx3-ubyte` or `*-idx1-ubyte`, gzipped or not)",
                head[0], head[1]
            ),
            None,
        ));
    }
    if head[2] != 0x08 {
        return Err(bad(
            format!(
                "element type {:#04x}: only unsigned bytes (0x08) are read",
                head[2]
            ),
            None,
        ));
    }
    let rank = usize::from(head[3]);
    if rank == 0 {
        return Err(bad("declares no dimensions".into(), None));
    }
    let mut dims = Vec::with_capacity(rank);
    let mut elements: u64 = 1;
    for axis in 0..rank {
        let mut d = [0u8; 4];
        r.read_exact(&mut d)
            .map_err(|e| bad(format!("header cut short at dimension {axis}"), Some(e)))?;
        let d = u32::from_be_bytes(d);
        elements = elements.saturating_mul(u64::from(d));
        dims.push(d as usize);
    }
    if elements > MAX_ELEMENTS {
        return Err(bad(
            format!("declares {dims:?} = {elements} elements, more than the 2^32 read at most"),
            None,
        ));
    }
    let expected = elements as usize;
    let mut data = Vec::with_capacity(expected);
    // one byte past the end tells a file longer than its header
    r.take(expected as u64 + 1)
        .read_to_end(&mut data)
        .map_err(|e| {
            bad(
                "cannot read the elements (a damaged gzip stream?)".into(),
                Some(e),
            )
        })?;
    if data.len() != expected {
        let found = if data.len() > expected {
            "more".to_string()
        } else {
            data.len().to_string()
        };
        return Err(bad(
            format!("its header declares {dims:?} = {expected} elements, the file holds {found}"),
            None,
        ));
    }
    Ok(Idx { dims, data })
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn file(name: &str, bytes: &[u8], gz: bool) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("pai-idx-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        let bytes = if gz {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(bytes).unwrap();
            e.finish().unwrap()
        } else {
            bytes.to_vec()
        };
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// Two 2x3 images.
    fn images() -> Vec<u8> {
        let mut v = vec![0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 3];
        v.extend(1..=12);
        v
    }

    #[test]
    fn reads_plain_and_gzipped_files() {
        for gz in [false, true] {
            let idx = read(file(&format!("ok{gz}"), &images(), gz)).unwrap();
            assert_eq!(idx.dims, [2, 2, 3]);
            assert_eq!(idx.data, (1..=12).collect::<Vec<u8>>());
            assert_eq!((idx.len(), idx.item_len()), (2, 6));
        }
    }

    #[test]
    fn damaged_files_are_clear_errors() {
        let good = images();
        let mut longer = good.clone();
        longer.push(0);
        let mut wrong_type = good.clone();
        wrong_type[2] = 0x0d;
        let huge = [0, 0, 8, 2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        let cases: [(&str, &[u8], &str); 7] = [
            ("empty", &[], "too short"),
            ("text", b"hello, world", "not an IDX file"),
            ("type", &wrong_type, "element type"),
            ("header", &good[..10], "cut short at dimension 1"),
            ("short", &good[..20], "the file holds 4"),
            ("long", &longer, "the file holds more"),
            ("huge", &huge, "more than the 2^32"),
        ];
        for gz in [false, true] {
            for (name, bytes, expected) in cases {
                let e = read(file(&format!("{name}{gz}"), bytes, gz)).unwrap_err();
                assert!(matches!(e, Error::Data { .. }), "{name}: {e}");
                assert!(e.to_string().contains(expected), "{name} (gz {gz}): {e}");
            }
        }
        let missing = read(std::env::temp_dir().join("pai-idx-no-such-file")).unwrap_err();
        assert!(matches!(missing, Error::Io { .. }), "{missing}");
    }

    #[test]
    fn a_gzip_stream_cut_short_is_an_error() {
        let path = file("cutgz", &images(), true);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 12]).unwrap();
        assert!(matches!(read(&path), Err(Error::Data { .. })));
    }
}
