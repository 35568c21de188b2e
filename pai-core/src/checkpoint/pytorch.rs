//! A PyTorch `state_dict` as it is: PyTorch's leaf names, its packed recurrent weights, and
//! a naming table from our fields to its modules; loaded ([`load_pytorch`]) and written back
//! ([`export_pytorch`]).
//!
//! The table of what is translated is on [`load_pytorch`].

use std::collections::BTreeMap;
use std::path::Path;

use dfdx::shapes::{HasShape, Shape};
use dfdx::tensor::Tensor;
use dfdx::tensor_ops::Device;

use super::matching::{load_named, Key, Table};
use super::read::{self, Values};
use crate::error::{Error, Result};
use crate::float::Float;
use crate::model::DendriticModel;
use crate::params::{Param, ParamVisitor};

/// Gate letters of a packed recurrent tensor, by the number of gates.
fn gates(count: usize) -> Option<&'static [char]> {
    match count {
        3 => Some(&['r', 'z', 'n']),
        4 => Some(&['i', 'f', 'g', 'o']),
        _ => None,
    }
}

/// The four packed tensors of a recurrent layer, by their leaf name without the layer suffix.
const PACKED: [&str; 4] = ["weight_ih", "weight_hh", "bias_ih", "bias_hh"];

/// `name` split as `(module, packed leaf, suffix)` when it is a packed recurrent tensor:
/// `rnn.weight_ih_l0` is `("rnn", "weight_ih", "_l0")`, a `GRUCell`'s `cell.bias_hh` is
/// `("cell", "bias_hh", "")`.
fn packed(name: &str) -> Option<(&str, &'static str, &str)> {
    let (module, leaf) = name.rsplit_once('.').unwrap_or(("", name));
    PACKED.iter().find_map(|p| {
        let suffix = leaf.strip_prefix(p)?;
        (suffix.is_empty() || suffix.starts_with('_')).then_some((module, *p, suffix))
    })
}

/// The file's packed recurrent tensors replaced by one entry per gate, `{name}#{gate}`: the
/// gate count is the rows of `weight_hh` over its columns (the hidden size).
///
/// # Errors
/// [`Error::Mismatch`] for a stacked or bidirectional layer (a suffix other than `_l0`), or
/// rows that are not 3 or 4 times the hidden size.
fn split_packed<E: Clone>(tensors: &mut Values<E>) -> Result<()> {
    let names: Vec<String> = tensors
        .keys()
        .filter(|n| packed(n).is_some())
        .cloned()
        .collect();
    // hidden sizes read before any tensor is split (and removed)
    let hidden_of = |name: &str| -> Option<usize> {
        let (module, _, suffix) = packed(name)?;
        let dot = if module.is_empty() { "" } else { "." };
        tensors
            .get(&format!("{module}{dot}weight_hh{suffix}"))
            .and_then(|(dims, _)| dims.get(1).copied())
    };
    let hidden: Vec<Option<usize>> = names.iter().map(|n| hidden_of(n)).collect();
    for (name, hidden) in names.into_iter().zip(hidden) {
        let (module, leaf, suffix) = packed(&name).expect("filtered");
        if !(suffix.is_empty() || suffix == "_l0") {
            return Err(Error::Mismatch {
                path: name.clone(),
                expected: "a single-layer, unidirectional GRU or LSTM (tensors ending `_l0`)"
                    .into(),
                found: format!(
                    "`{name}`: a stacked (`num_layers` > 1) or bidirectional layer; convert \
                     each layer as a field of its own"
                ),
            });
        }
        let prefix = if module.is_empty() {
            String::new()
        } else {
            format!("{module}.")
        };
        let hidden_name = format!("{prefix}weight_hh{suffix}");
        let (dims, values) = tensors.remove(&name).expect("listed");
        let rows = dims[0];
        let gate_list = match hidden {
            Some(h) if h > 0 && rows % h == 0 => gates(rows / h),
            _ => None,
        };
        let Some(gate_list) = gate_list else {
            return Err(Error::Mismatch {
                path: name,
                expected: format!(
                    "3 (GRU: r, z, n) or 4 (LSTM: i, f, g, o) gates stacked on the first axis, \
                     and `{hidden_name}` of shape (gates x hidden, hidden)"
                ),
                found: format!("shape {dims:?}"),
            });
        };
        let step = rows / gate_list.len();
        let per_row: usize = dims[1..].iter().product();
        for (g, letter) in gate_list.iter().enumerate() {
            let mut part_dims = dims.clone();
            part_dims[0] = step;
            let part = values[g * step * per_row..(g + 1) * step * per_row].to_vec();
            tensors.insert(
                format!("{prefix}{leaf}{suffix}#{letter}"),
                (part_dims, part),
            );
        }
    }
    Ok(())
}

/// The file entry PyTorch gives our tensor at `renamed` (our plain path, its module prefix
/// already renamed by the table): leaf renames, and gate tensors of recurrent layers mapped
/// into the split packed ones.
fn pytorch_name(renamed: &str) -> String {
    let parts: Vec<&str> = renamed.split('.').collect();
    let n = parts.len();
    // a recurrent gate: `.. [cell] . x_r . weight`
    if n >= 2 {
        let (gate, leaf) = (parts[n - 2], parts[n - 1]);
        let letter = gate
            .strip_prefix("x_")
            .map(|g| ("ih", g))
            .or_else(|| gate.strip_prefix("h_").map(|g| ("hh", g)));
        if let Some((side, g)) = letter {
            let known = g.len() == 1 && "rznifgo".contains(g);
            if known && (leaf == "weight" || leaf == "bias") {
                let before = &parts[..n - 2];
                // `Gru` holds its step as `cell`; a `GruCell` field holds the gates itself
                let (module, suffix) = match before.split_last() {
                    Some((&"cell", rest)) if !rest.is_empty() => (rest.join("."), "_l0"),
                    _ => (before.join("."), ""),
                };
                let dot = if module.is_empty() { "" } else { "." };
                return format!("{module}{dot}{leaf}_{side}{suffix}#{g}");
            }
        }
    }
    let leaf = match parts[n - 1] {
        "scale" | "gamma" => "weight",
        "beta" => "bias",
        other => other,
    };
    let mut out: Vec<&str> = parts[..n - 1].to_vec();
    out.push(leaf);
    out.join(".")
}

/// Loads a PyTorch `state_dict` saved to safetensors (`safetensors.torch.save_file(
/// model.state_dict(), path)`) into the neurons and tracked layers of `model`, as
/// [`load_plain`](super::load_plain) does, with PyTorch's names: `names` maps our field paths
/// (as errors print them: `fc1`, `block.layer`) to PyTorch's module paths (`0`, `features.0`),
/// the first match winning; leaf names and packed GRU/LSTM weights are translated. f16, bf16
/// and f64 tensors are converted.
///
/// What differs between a PyTorch module and ours, and how a load bridges it:
///
/// | ours | PyTorch | bridged by |
/// |---|---|---|
/// | `BatchNorm*`: `scale`, `bias`, `running_mean`, `running_var` | `weight`, `bias`, `running_mean`, `running_var` (`num_batches_tracked` is a count: skipped) | leaf rename |
/// | `LayerNorm1D`: `gamma`, `beta` | `weight`, `bias` | leaf rename |
/// | `Gru` / `GruCell`: one `Linear` per gate, `cell.x_r` ... `cell.h_n` | `weight_ih_l0` `(3H, I)`, `weight_hh_l0` `(3H, H)`, `bias_ih_l0`, `bias_hh_l0`, gates in the order r, z, n (`GRUCell`: no `_l0`) | rows split by gate |
/// | `Lstm` / `LstmCell`: `cell.x_i` ... `cell.h_o` | the same four tensors `(4H, ..)`, gates i, f, g, o | rows split by gate |
/// | field paths (`block.layer`, `head`) | module paths (`features.0`, `classifier`) | the naming table |
/// | `Linear`, `Conv*`: `weight`, `bias` | the same names, the same layouts | nothing |
///
/// Only single-layer, unidirectional recurrent layers are ours: a file with `_l1` or
/// `_reverse` tensors is refused, naming them.
///
/// Batch norm's epsilon and momentum are not in a `state_dict`: build ours with PyTorch's
/// (`1e-5` and `0.1` by default, as dfdx's), or outputs differ.
///
/// # Errors
/// As [`load_plain`](super::load_plain); also a stacked or bidirectional recurrent layer, and a
/// naming-table entry that matches none of our paths. Nothing is copied unless every tensor
/// matches and every file tensor is used.
pub fn load_pytorch<M: DendriticModel>(
    model: &mut M,
    path: impl AsRef<Path>,
    names: &[(&str, &str)],
) -> Result<()> {
    let path = path.as_ref();
    let mut tensors = read::plain::<M::Dtype>(&read::read_file(path)?, path)?;
    split_packed(&mut tensors)?;
    load_named(model, &tensors, names, pytorch_name)
}

/// A model's neuron tensors under PyTorch's names (gates still split), with their values.
struct Named<'a> {
    key: &'a dyn Fn(&str) -> Option<Key>,
    tensors: BTreeMap<String, (Vec<usize>, Vec<f64>)>,
}

impl<E: Float, D: Device<E>> ParamVisitor<E, D> for Named<'_> {
    fn visit<S: Shape>(
        &mut self,
        param: Param<'_, E, D>,
        tensor: &mut Tensor<S, E, D>,
    ) -> Result<()> {
        if let Some(key) = (self.key)(param.path) {
            let dims = tensor.shape().concrete().into_iter().collect();
            let values = tensor.as_vec().into_iter().map(Float::as_f64).collect();
            self.tensors.insert(key.file, (dims, values));
        }
        Ok(())
    }
}

/// The split gate entries (`name#g`) joined back into PyTorch's packed tensors, gates in
/// PyTorch's order.
fn join_packed(
    tensors: BTreeMap<String, (Vec<usize>, Vec<f64>)>,
) -> Result<BTreeMap<String, (Vec<usize>, Vec<f64>)>> {
    let mut out = BTreeMap::new();
    let mut parts: BTreeMap<String, BTreeMap<char, (Vec<usize>, Vec<f64>)>> = BTreeMap::new();
    for (name, tensor) in tensors {
        match name.rsplit_once('#') {
            Some((base, gate)) => {
                let letter = gate.chars().next().unwrap_or('?');
                parts
                    .entry(base.to_string())
                    .or_default()
                    .insert(letter, tensor);
            }
            None => {
                out.insert(name, tensor);
            }
        }
    }
    for (base, gates_of) in parts {
        let order = gates(gates_of.len())
            .filter(|order| order.iter().all(|g| gates_of.contains_key(g)))
            .ok_or_else(|| Error::Mismatch {
                path: base.clone(),
                expected: "every gate of a GRU (r, z, n) or an LSTM (i, f, g, o)".into(),
                found: format!("gates {:?}", gates_of.keys().collect::<Vec<_>>()),
            })?;
        let mut dims = gates_of[&order[0]].0.clone();
        dims[0] *= order.len();
        let values = order
            .iter()
            .flat_map(|g| gates_of[g].1.iter().copied())
            .collect();
        out.insert(base, (dims, values));
    }
    Ok(out)
}

/// Writes the neuron weights of `model` as a PyTorch `state_dict` in safetensors, under the
/// names [`load_pytorch`] reads with the same `names` table (packed GRU/LSTM gates joined in
/// PyTorch's order, norm leaves renamed, a zero `num_batches_tracked` beside each batch norm's
/// running statistics), in the model's dtype: `model.load_state_dict(load_file(path))` in
/// PyTorch then computes what this model computes. Written atomically.
///
/// # Errors
/// [`Error::Config`] when a layer has dendrites (a PyTorch module cannot hold them: export
/// before they are added, or keep the model in Rust); [`Error::Mismatch`] for a naming-table
/// entry that matches nothing; [`Error::Io`] when the file cannot be written.
pub fn export_pytorch<M: DendriticModel>(
    model: &mut M,
    path: impl AsRef<Path>,
    names: &[(&str, &str)],
) -> Result<()> {
    let path = path.as_ref();
    if let Some(layer) = model.layers().into_iter().find(|l| l.dendrites > 0) {
        return Err(Error::Config(format!(
            "layer `{}` has {} dendrite(s), which a PyTorch module cannot hold: export the \
             network before dendrites are added",
            layer.path, layer.dendrites
        )));
    }
    let table = Table::new(names);
    let key = |ours: &str| table.key(ours, pytorch_name);
    table.check_used(model, &key)?;
    let mut named = Named {
        key: &key,
        tensors: BTreeMap::new(),
    };
    model.visit_params("", &mut named)?;
    let tensors = join_packed(named.tensors)?;
    let mut encoded: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, (dims, values)) in tensors {
        if let Some(norm) = name.strip_suffix(".running_mean") {
            let count = format!("{norm}.num_batches_tracked");
            encoded.push((
                count,
                safetensors::Dtype::I64,
                Vec::new(),
                0i64.to_le_bytes().to_vec(),
            ));
        }
        let mut bytes = Vec::new();
        let typed: Vec<M::Dtype> = values.into_iter().map(M::Dtype::of_f64).collect();
        M::Dtype::write_le(&typed, &mut bytes);
        encoded.push((name, M::Dtype::SAFETENSORS, dims, bytes));
    }
    let views = encoded
        .iter()
        .map(|(name, dtype, dims, bytes)| {
            safetensors::tensor::TensorView::new(*dtype, dims.clone(), bytes)
                .map(|v| (name.clone(), v))
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| super::encode_error(path, "a tensor", e))?;
    let bytes = safetensors::tensor::serialize(views, &None)
        .map_err(|e| super::encode_error(path, "the file", e))?;
    crate::disk::write_atomic(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_pytorch() {
        assert_eq!(pytorch_name("features.1.scale"), "features.1.weight");
        assert_eq!(pytorch_name("ln.gamma"), "ln.weight");
        assert_eq!(pytorch_name("ln.beta"), "ln.bias");
        assert_eq!(pytorch_name("fc.weight"), "fc.weight");
        assert_eq!(pytorch_name("rnn.cell.x_z.weight"), "rnn.weight_ih_l0#z");
        assert_eq!(pytorch_name("rnn.cell.h_o.bias"), "rnn.bias_hh_l0#o");
        assert_eq!(pytorch_name("step.x_r.bias"), "step.bias_ih#r");
        // a `GruCell` in a field named `cell`
        assert_eq!(pytorch_name("cell.h_n.weight"), "cell.weight_hh#n");
        // not a gate: left alone
        assert_eq!(pytorch_name("a.x_q.weight"), "a.x_q.weight");
    }

    #[test]
    fn packed_tensors_split_by_gate_rows() {
        // a GRU: hidden 2, input 1; rows r0 r1 z0 z1 n0 n1
        let mut t: Values<f64> = Values::new();
        t.insert(
            "g.weight_ih_l0".into(),
            (vec![6, 1], (0..6).map(f64::from).collect()),
        );
        t.insert(
            "g.weight_hh_l0".into(),
            (vec![6, 2], (0..12).map(f64::from).collect()),
        );
        t.insert(
            "g.bias_ih_l0".into(),
            (vec![6], (0..6).map(f64::from).collect()),
        );
        split_packed(&mut t).unwrap();
        assert_eq!(t["g.weight_ih_l0#z"], (vec![2, 1], vec![2.0, 3.0]));
        assert_eq!(
            t["g.weight_hh_l0#n"],
            (vec![2, 2], vec![8.0, 9.0, 10.0, 11.0])
        );
        assert_eq!(t["g.bias_ih_l0#r"], (vec![2], vec![0.0, 1.0]));
        assert!(!t.contains_key("g.weight_ih_l0"));
        // an LSTM's four gates
        let mut t: Values<f64> = Values::new();
        t.insert("weight_hh".into(), (vec![4, 1], vec![1.0, 2.0, 3.0, 4.0]));
        split_packed(&mut t).unwrap();
        assert_eq!(t["weight_hh#g"], (vec![1, 1], vec![3.0]));
        // stacked layers and odd gate counts are refused, naming the tensor
        let mut t: Values<f64> = Values::new();
        t.insert("g.weight_ih_l1".into(), (vec![6, 1], vec![0.0; 6]));
        let e = split_packed(&mut t).unwrap_err().to_string();
        assert!(e.contains("g.weight_ih_l1") && e.contains("stacked"), "{e}");
        let mut t: Values<f64> = Values::new();
        t.insert("weight_hh".into(), (vec![5, 1], vec![0.0; 5]));
        assert!(split_packed(&mut t).is_err());
    }
}
