//! Rules across fields and attributes. Emits no tokens, only errors.

use syn::spanned::Spanned;

use crate::ast::{self, Kind, Known, Model};

/// Everything wrong with the struct itself.
pub fn shape(input: &syn::DeriveInput, errors: &mut Vec<syn::Error>) {
    let name = &input.ident;
    match &input.data {
        syn::Data::Enum(e) => errors.push(syn::Error::new(
            e.enum_token.span,
            format!("`#[perforated]` works on structs with named fields; `{name}` is an enum: write a struct whose fields are its layers"),
        )),
        syn::Data::Union(u) => errors.push(syn::Error::new(
            u.union_token.span,
            "`#[perforated]` works on structs with named fields, not unions",
        )),
        syn::Data::Struct(s) => match &s.fields {
            syn::Fields::Named(_) => {}
            syn::Fields::Unnamed(f) => errors.push(syn::Error::new(
                f.span(),
                format!("`#[perforated]` needs named fields: layer names become checkpoint paths; write `struct {name} {{ layer: ... }}`"),
            )),
            syn::Fields::Unit => errors.push(syn::Error::new(
                name.span(),
                format!("`#[perforated]` needs named fields: `{name}` has no layers"),
            )),
        },
    }
    for p in &input.generics.params {
        if !matches!(p, syn::GenericParam::Const(_)) {
            errors.push(syn::Error::new(
                p.span(),
                "`#[perforated]` adds the dtype and device generics `<E, D>` itself: remove this generic (const generics such as `const H: usize` are fine) and write the layers without `E, D`",
            ));
        }
    }
    if let Some(w) = &input.generics.where_clause {
        errors.push(syn::Error::new(
            w.span(),
            "`#[perforated]` structs take no where clause",
        ));
    }
}

/// Cross-field and per-field rules.
pub fn fields(model: &Model<'_>, errors: &mut Vec<syn::Error>) {
    for f in &model.fields {
        let a = &f.attrs;
        if let (Some(track), Some(_)) = (&a.track, &a.convert) {
            errors.push(syn::Error::new(
                track.span,
                "`track` and `convert` conflict: a field either gets dendrites (`convert`) or trains without them (`track`)",
            ));
        }
        if let Some(skip) = &a.skip {
            if a.track.is_some() || a.convert.is_some() || a.dims.is_some() || a.processor.is_some()
            {
                errors.push(syn::Error::new(
                    skip.span,
                    "`skip` leaves the field out entirely: it cannot be combined with other `pai` keys",
                ));
            }
        }
        let converted = matches!(f.kind, Kind::Converted { .. });
        if let Some((span, tags)) = &a.dims {
            if !converted && a.skip.is_none() {
                errors.push(syn::Error::new(
                    *span,
                    "`dims` only applies to a converted layer: add `convert` or remove `dims`",
                ));
            }
            let neurons = tags
                .iter()
                .filter(|t| *t == "Neurons" || *t == "NeuronsLast")
                .count();
            if neurons == 0 {
                errors.push(syn::Error::new(*span, "`dims` has no `Neurons`: mark the axis that holds the neurons, e.g. `(Batch, Neurons)`"));
            } else if neurons > 1 {
                errors.push(syn::Error::new(
                    *span,
                    format!("`dims` has {neurons} `Neurons`: a layer has exactly one neuron axis"),
                ));
            }
            for t in tags {
                if !matches!(
                    t.to_string().as_str(),
                    "Batch" | "Time" | "Any" | "Neurons" | "NeuronsLast"
                ) {
                    errors.push(syn::Error::new(
                        t.span(),
                        format!("unknown axis tag `{t}`: use `Batch`, `Time`, `Any` or `Neurons`"),
                    ));
                }
            }
        }
        if let Some(p) = &a.processor {
            if !converted && a.skip.is_none() {
                errors.push(syn::Error::new(p.span(), "`processor` only applies to a converted layer: add `convert` or remove `processor`"));
            }
        }
        let known = f.name.as_deref().and_then(ast::known);
        if let Some(convert) = &a.convert {
            if known.is_none() && a.dims.is_none() {
                errors.push(syn::Error::new(
                    convert.span,
                    "`convert` on a block of your own needs its neuron axis: add `dims = (...)`, e.g. `dims = (Batch, Neurons)`",
                ));
            }
            if matches!(known, Some(Known::Free)) {
                errors.push(syn::Error::new(
                    convert.span,
                    "this layer has no parameters: there is nothing to convert",
                ));
            }
        }
        if let (Some(name), None, Kind::Converted { .. }) =
            (f.name.as_deref(), &a.processor, &f.kind)
        {
            let needed = match name {
                "GruCell" => Some((
                    "GruCellState",
                    "takes `(x, h)`: each dendrite must step from its own state",
                )),
                "LstmCell" => Some((
                    "LstmCellState",
                    "returns a tuple `(h, c)` and each dendrite must step from its own state",
                )),
                "Gru" => Some(("GruState", "returns a tuple `(outputs, last state)`")),
                "Lstm" => Some(("LstmState", "returns a tuple `(outputs, (h, c))`")),
                _ => None,
            };
            if let Some((processor, why)) = needed {
                errors.push(syn::Error::new(
                    f.field.ty.span(),
                    format!("`{name}` {why}: add a processor, `#[pai(processor = {processor})]` (see `perforated::processor`)"),
                ));
            }
        }
        if let Some(Known::Dfdx { norm: true, .. }) = known {
            if a.track.is_none() && a.skip.is_none() {
                let name = f.name.as_deref().unwrap_or("normalisation");
                errors.push(syn::Error::new(
                    f.field.ty.span(),
                    format!("a bare `{name}` cannot get dendrites: group it with the layer before it, `PaiSequential<Layer, {name}<..>>`, or mark it `#[pai(track)]`"),
                ));
            }
        }
    }
}
