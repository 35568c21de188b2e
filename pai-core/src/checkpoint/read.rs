//! Reading a safetensors file with every check made before anything is trusted: a regular
//! file whose header fits in it, the format tag, the checksum over metadata and tensors, the
//! dtype, finite values.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use dfdx::shapes::Shape;
use dfdx::tensor::Tensor;
use dfdx::tensor_ops::Device;

use crate::error::{Error, Result};
use crate::float::Float;

/// safetensors' own limit on a header; `load` refuses more, so `save` never writes more.
pub(super) const MAX_HEADER: u64 = 100_000_000;

pub(super) const FORMAT_KEY: &str = "format";
/// The current format: a checksum over everything, the dendrite settings per layer.
pub(super) const FORMAT: &str = "perforated/2";
/// The first format (no checksum, no dendrite settings); still loaded.
pub(super) const FORMAT_1: &str = "perforated/1";
pub(super) const DTYPE_KEY: &str = "dtype";
pub(super) const STRUCTURE_KEY: &str = "structure";
pub(super) const CHECKSUM_KEY: &str = "checksum";

/// Tensors of a file by name: shape and values.
pub(super) type Values<E> = HashMap<String, (Vec<usize>, Vec<E>)>;

/// The bytes of the file at `path`, read only once it is known to be a regular file whose
/// declared header fits inside it (a device such as `/dev/zero` or a pipe is refused before it
/// is opened, and nothing larger than the file is ever allocated).
///
/// # Errors
/// [`Error::Io`] when it cannot be read; [`Error::Corrupt`] for anything but a regular file
/// holding a safetensors header.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>> {
    let io = |source| Error::Io {
        action: "reading",
        path: path.to_path_buf(),
        source,
    };
    let corrupt = |reason: String| Error::corrupt(path, reason, None);
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_file() {
        return Err(corrupt(
            "not a regular file (a directory, device or pipe): give the path of a \
             .safetensors file"
                .into(),
        ));
    }
    let size = meta.len();
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut prefix = [0u8; 8];
    if size < 8 {
        return Err(corrupt(format!(
            "{size} bytes, shorter than a safetensors header: the file is truncated or empty"
        )));
    }
    file.read_exact(&mut prefix).map_err(io)?;
    let header = u64::from_le_bytes(prefix);
    if header > MAX_HEADER {
        let what = if prefix.starts_with(b"PK") {
            "a zip archive, as `torch.save` writes: save the weights with safetensors \
             (`safetensors.torch.save_file(model.state_dict(), path)`)"
                .to_string()
        } else {
            format!("a header of {header} bytes declared, over safetensors' limit of {MAX_HEADER}: not a safetensors file")
        };
        return Err(corrupt(what));
    }
    if 8 + header > size {
        return Err(corrupt(format!(
            "truncated: a header of {header} bytes declared in a file of {size} bytes"
        )));
    }
    let capacity = usize::try_from(size).map_err(|_| corrupt(format!("{size} bytes")))?;
    let mut bytes = Vec::with_capacity(capacity);
    bytes.extend_from_slice(&prefix);
    file.take(size - 8).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 != size {
        return Err(corrupt(format!(
            "{} bytes read of {size}: the file changed while it was read",
            bytes.len()
        )));
    }
    Ok(bytes)
}

/// A file's metadata and tensors, checked.
pub(super) struct Contents<E> {
    pub metadata: HashMap<String, String>,
    pub tensors: Values<E>,
}

/// The checksum of a file's contents: every metadata entry but the checksum itself, then every
/// tensor's name, dtype, shape and bytes, in sorted order (so it does not depend on how the
/// file lays them out). CRC-32 catches every single flipped bit and every burst of up to 32.
pub(super) fn checksum<'a>(
    metadata: &HashMap<String, String>,
    tensors: impl IntoIterator<Item = (&'a str, safetensors::Dtype, &'a [usize], &'a [u8])>,
) -> String {
    let mut hasher = crc32fast::Hasher::new();
    let mut field = |bytes: &[u8]| {
        hasher.update(&(bytes.len() as u64).to_le_bytes());
        hasher.update(bytes);
    };
    let mut entries: Vec<_> = metadata
        .iter()
        .filter(|(k, _)| k.as_str() != CHECKSUM_KEY)
        .collect();
    entries.sort();
    for (k, v) in entries {
        field(k.as_bytes());
        field(v.as_bytes());
    }
    let mut tensors: Vec<_> = tensors.into_iter().collect();
    tensors.sort_by(|a, b| a.0.cmp(b.0));
    for (name, dtype, dims, bytes) in tensors {
        field(name.as_bytes());
        field(format!("{dtype:?}").as_bytes());
        let dims: Vec<u8> = dims
            .iter()
            .flat_map(|d| (*d as u64).to_le_bytes())
            .collect();
        field(&dims);
        field(bytes);
    }
    format!("crc32:{:08x}", hasher.finalize())
}

/// Parses a checkpoint: its format, its checksum (the current format must have one), its
/// dtype, and every tensor in dtype `E` with finite values.
///
/// # Errors
/// [`Error::Corrupt`] for a damaged or foreign file; [`Error::Mismatch`] for another dtype;
/// [`Error::NonFinite`] for a NaN or infinity in a tensor.
pub(super) fn checkpoint<E: Float>(bytes: &[u8], path: &Path) -> Result<Contents<E>> {
    let corrupt = |reason: String| Error::corrupt(path, reason, None);
    let st = deserialize(bytes, path)?;
    let metadata = metadata(bytes, path)?;
    let format = metadata.get(FORMAT_KEY).map(String::as_str);
    if format != Some(FORMAT) && format != Some(FORMAT_1) {
        return Err(corrupt(format!(
            "metadata `{FORMAT_KEY}` is {format:?}, expected {FORMAT:?}"
        )));
    }
    match metadata.get(CHECKSUM_KEY) {
        None if format == Some(FORMAT) => {
            return Err(corrupt(format!("no `{CHECKSUM_KEY}` in its metadata")));
        }
        None => {}
        Some(stored) => {
            let views = st.tensors();
            let found = checksum(
                &metadata,
                views
                    .iter()
                    .map(|(n, v)| (n.as_str(), v.dtype(), v.shape(), v.data())),
            );
            if *stored != found {
                return Err(corrupt(format!(
                    "checksum mismatch (recorded {stored}, contents {found}): the file was \
                     damaged after it was written; load an earlier checkpoint"
                )));
            }
        }
    }
    let file_dtype = metadata.get(DTYPE_KEY).cloned().unwrap_or_default();
    if file_dtype != format!("{:?}", E::SAFETENSORS) {
        return Err(Error::Mismatch {
            path: "dtype".into(),
            expected: format!("{:?}", E::SAFETENSORS),
            found: file_dtype,
        });
    }
    Ok(Contents {
        tensors: values(&st, Dtypes::Exact)?,
        metadata,
    })
}

/// The metadata of a safetensors file's bytes, from its header alone (nothing else checked).
///
/// # Errors
/// [`Error::Corrupt`] for an unreadable header.
pub(crate) fn metadata(bytes: &[u8], path: &Path) -> Result<HashMap<String, String>> {
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| Error::corrupt(path, format!("unreadable header ({e:?})"), Some(e.into())))?;
    Ok(header.metadata().clone().unwrap_or_default())
}

fn deserialize<'a>(bytes: &'a [u8], path: &Path) -> Result<safetensors::SafeTensors<'a>> {
    safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| Error::corrupt(path, format!("unreadable tensors ({e:?})"), Some(e.into())))
}

/// Every tensor of a safetensors file (any writer's), converted to dtype `E` from f16, bf16,
/// f32 or f64 (f64 into f32 rounds to nearest), finite. Rank-0 entries (module scalars such as
/// a norm's epsilon, which dfdx saves as f64, or PyTorch's `num_batches_tracked`) are
/// configuration, not weights, and are skipped.
///
/// # Errors
/// As [`checkpoint`], without the format checks; [`Error::Mismatch`] for a tensor that is not
/// floating point; [`Error::NonFinite`] also for an f64 value beyond `E`'s range.
pub(super) fn plain<E: Float>(bytes: &[u8], path: &Path) -> Result<Values<E>> {
    values(&deserialize(bytes, path)?, Dtypes::Convert)
}

/// Which dtypes a read accepts.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Dtypes {
    /// `E` only: a checkpoint of ours, whose dtype says what the model computed in.
    Exact,
    /// Any floating-point dtype, converted: plain weights from another program.
    Convert,
}

/// The values of a tensor's little-endian `bytes` of `dtype`, in `E`; `None` for a dtype
/// that is not floating point.
fn converted<E: Float>(dtype: safetensors::Dtype, bytes: &[u8]) -> Option<Vec<E>> {
    use safetensors::Dtype as St;
    let pairs = || bytes.chunks_exact(2).map(|c| [c[0], c[1]]);
    Some(match dtype {
        St::F16 => pairs()
            .map(|b| E::of_f64(f64::from(half::f16::from_le_bytes(b))))
            .collect(),
        St::BF16 => pairs()
            .map(|b| E::of_f64(f64::from(half::bf16::from_le_bytes(b))))
            .collect(),
        St::F32 => f32::read_le(bytes)
            .into_iter()
            .map(|v| E::of_f64(f64::from(v)))
            .collect(),
        St::F64 => f64::read_le(bytes).into_iter().map(E::of_f64).collect(),
        _ => return None,
    })
}

fn values<E: Float>(st: &safetensors::SafeTensors<'_>, dtypes: Dtypes) -> Result<Values<E>> {
    let mut tensors = HashMap::new();
    for (name, view) in st.tensors() {
        if view.shape().is_empty() {
            continue;
        }
        let values = if view.dtype() == E::SAFETENSORS {
            E::read_le(view.data())
        } else {
            let read = match dtypes {
                Dtypes::Exact => None,
                Dtypes::Convert => converted::<E>(view.dtype(), view.data()),
            };
            let Some(values) = read else {
                let expected = match dtypes {
                    Dtypes::Exact => format!("{:?}", E::SAFETENSORS),
                    Dtypes::Convert => "a floating-point tensor (F16, BF16, F32 or F64)".into(),
                };
                return Err(Error::Mismatch {
                    path: name,
                    expected,
                    found: format!("{:?}", view.dtype()),
                });
            };
            values
        };
        if values.iter().any(|v| !v.as_f64().is_finite()) {
            return Err(Error::NonFinite {
                layer: name,
                what: "a value of the saved tensor",
                hint: "the file holds NaN or infinity (saved from a diverged run?), or an f64 \
                       value beyond the model's dtype: load an earlier checkpoint",
            });
        }
        tensors.insert(name, (view.shape().to_vec(), values));
    }
    Ok(tensors)
}

/// One tensor of a safetensors file (any writer's: an input batch saved by PyTorch, say) as a
/// dfdx tensor of `shape` on `dev`, converted from f16, bf16, f32 or f64.
///
/// # Errors
/// [`Error::Io`] / [`Error::Corrupt`] for an unreadable file; [`Error::Mismatch`] for a name
/// the file does not have (listing those it has), another shape, or a tensor that is not
/// floating point; [`Error::NonFinite`] for a NaN or infinity.
pub fn read_tensor<S: Shape, E: Float, D: Device<E>>(
    dev: &D,
    path: impl AsRef<Path>,
    name: &str,
    shape: S,
) -> Result<Tensor<S, E, D>> {
    let path = path.as_ref();
    let mut tensors = plain::<E>(&read_file(path)?, path)?;
    let Some((dims, values)) = tensors.remove(name) else {
        let mut names: Vec<String> = tensors.into_keys().collect();
        names.sort();
        return Err(Error::Mismatch {
            path: name.into(),
            expected: format!("a tensor named `{name}` in {}", path.display()),
            found: format!("only {}", names.join(", ")),
        });
    };
    let want: Vec<usize> = shape.concrete().into_iter().collect();
    if dims != want {
        return Err(Error::Mismatch {
            path: name.into(),
            expected: format!("shape {want:?}"),
            found: format!("shape {dims:?}"),
        });
    }
    dev.try_tensor_from_vec(values, shape)
        .map_err(Error::device)
}
