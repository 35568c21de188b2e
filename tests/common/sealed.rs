//! Editing a checkpoint's metadata as a tamperer who knows the format would: the entries
//! changed, the checksum recomputed by the format's rule (written out here on its own, so the
//! rule itself stays tested), the file re-serialised.

use std::collections::HashMap;

/// The format's checksum: CRC-32 over every metadata entry but `checksum` (sorted, each key
/// and value prefixed by its length as a u64 LE), then every tensor by sorted name: name,
/// dtype (`F32`), shape (u64 LE each), data, each prefixed by its length.
pub fn checksum(
    metadata: &HashMap<String, String>,
    tensors: &[(String, String, Vec<usize>, Vec<u8>)],
) -> String {
    let mut h = crc32fast::Hasher::new();
    let mut field = |b: &[u8]| {
        h.update(&(b.len() as u64).to_le_bytes());
        h.update(b);
    };
    let mut entries: Vec<_> = metadata.iter().filter(|(k, _)| *k != "checksum").collect();
    entries.sort();
    for (k, v) in entries {
        field(k.as_bytes());
        field(v.as_bytes());
    }
    let mut tensors: Vec<_> = tensors.iter().collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, dtype, dims, data) in tensors {
        field(name.as_bytes());
        field(dtype.as_bytes());
        let dims: Vec<u8> = dims
            .iter()
            .flat_map(|d| (*d as u64).to_le_bytes())
            .collect();
        field(&dims);
        field(data);
    }
    format!("crc32:{:08x}", h.finalize())
}

/// `bytes` (a checkpoint) with its metadata edited by `edit`, re-sealed with a valid checksum.
pub fn edit_metadata(bytes: &[u8], edit: impl FnOnce(&mut HashMap<String, String>)) -> Vec<u8> {
    let st = safetensors::SafeTensors::deserialize(bytes).expect("a readable checkpoint");
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes).expect("a header");
    let mut metadata = header.metadata().clone().unwrap_or_default();
    edit(&mut metadata);
    let owned: Vec<(String, String, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| {
            (
                n,
                format!("{:?}", v.dtype()),
                v.shape().to_vec(),
                v.data().to_vec(),
            )
        })
        .collect();
    metadata.insert("checksum".into(), checksum(&metadata, &owned));
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = owned
        .iter()
        .zip(st.tensors())
        .map(|((n, _, dims, data), (_, v))| {
            let view = safetensors::tensor::TensorView::new(v.dtype(), dims.clone(), data)
                .expect("a valid view");
            (n.clone(), view)
        })
        .collect();
    safetensors::tensor::serialize(views, &Some(metadata)).expect("serialises")
}

/// [`edit_metadata`] replacing the first `from` in the entry `key` by `to`.
pub fn replace_in(bytes: &[u8], key: &str, from: &str, to: &str) -> Vec<u8> {
    edit_metadata(bytes, |m| {
        let v = m.get_mut(key).expect("the metadata entry");
        assert!(v.contains(from), "`{from}` in `{key}`: {v}");
        *v = v.replacen(from, to, 1);
    })
}
