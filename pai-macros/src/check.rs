//! Rules on the struct and its fields, one function each. Emits no tokens, only errors: every
//! rule runs, so every mistake is reported at once, each on the token the user wrote.

use syn::spanned::Spanned;

use crate::ast::{Field, Kind, Known, Model};

/// A rule on one field: pushes an error for each way the field breaks it.
type FieldRule = fn(&Field<'_>, &mut Vec<syn::Error>);

/// Every field rule, in the order their errors are reported.
const FIELD_RULES: &[FieldRule] = &[
    track_or_convert,
    skip_alone,
    dims_need_convert,
    dims_have_one_neuron_axis,
    dims_tags_are_known,
    processor_needs_convert,
    convert_needs_dims,
    convert_needs_parameters,
    recurrent_needs_processor,
    normalisation_needs_group,
];

/// Everything wrong with the struct itself.
pub fn shape(input: &syn::DeriveInput, errors: &mut Vec<syn::Error>) {
    named_fields(input, errors);
    generics(input, errors);
}

/// Cross-field and per-field rules.
pub fn fields(model: &Model<'_>, errors: &mut Vec<syn::Error>) {
    for f in &model.fields {
        for rule in FIELD_RULES {
            rule(f, errors);
        }
    }
}

fn named_fields(input: &syn::DeriveInput, errors: &mut Vec<syn::Error>) {
    let name = &input.ident;
    let error = match &input.data {
        syn::Data::Enum(e) => syn::Error::new(
            e.enum_token.span,
            format!("`#[perforated]` works on structs with named fields; `{name}` is an enum: write a struct whose fields are its layers"),
        ),
        syn::Data::Union(u) => syn::Error::new(
            u.union_token.span,
            "`#[perforated]` works on structs with named fields, not unions",
        ),
        syn::Data::Struct(s) => match &s.fields {
            syn::Fields::Named(_) => return,
            syn::Fields::Unnamed(f) => syn::Error::new(
                f.span(),
                format!("`#[perforated]` needs named fields: layer names become checkpoint paths; write `struct {name} {{ layer: ... }}`"),
            ),
            syn::Fields::Unit => syn::Error::new(
                name.span(),
                format!("`#[perforated]` needs named fields: `{name}` has no layers"),
            ),
        },
    };
    errors.push(error);
}

fn generics(input: &syn::DeriveInput, errors: &mut Vec<syn::Error>) {
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

fn track_or_convert(f: &Field<'_>, errors: &mut Vec<syn::Error>) {
    if let (Some(track), Some(_)) = (&f.attrs.track, &f.attrs.convert) {
        errors.push(syn::Error::new(
            track.span,
            "`track` and `convert` conflict: a field either gets dendrites (`convert`) or trains without them (`track`)",
        ));
    }
}

fn skip_alone(f: &Field<'_>, errors: &mut Vec<syn::Error>) {
    let a = &f.attrs;
    let Some(skip) = &a.skip else {
        return;
    };
    if a.track.is_some() || a.convert.is_some() || a.dims.is_some() || a.processor.is_some() {
        errors.push(syn::Error::new(
            skip.span,
            "`skip` leaves the field out entirely: it cannot be combined with other `pai` keys",
        ));
    }
}

/// Whether a key that only a converted layer takes is misplaced (a skipped field already
/// reports its own error).
fn needs_convert(f: &Field<'_>) -> bool {
    f.kind != Kind::Converted && f.attrs.skip.is_none()
}

fn dims_need_convert(f: &Field<'_>, errors: &mut Vec<syn::Error>) {
    if let Some((span, _)) = &f.attrs.dims {
        if needs_convert(f) {
            errors.push(syn::Error::new(
                *span,
                "`dims` only applies to a converted layer: add `convert` or remove `dims`",
            ));
        }
    }
}

fn dims_have_one_neuron_axis(f: &Field<'_>, errors: &mut Vec<syn::Error>) {
    let Some((span, tags)) = &f.attrs.dims else {
        return;
    };
    let neurons = tags
        .iter()
        .filter(|t| *t == "Neurons" || *t == "NeuronsLast")
        .count();
    if neurons == 0 {
        errors.push(syn::Error::new(
            *span,
            "`dims` has no `Neurons`: mark the axis that holds the neurons, e.g. `(Batch, Neurons)`",
        ));
    } else if neurons > 1 {
        errors.push(syn::Error::new(
            *span,
            format!("`dims` has {neurons} `Neurons`: a layer has exactly one neuron axis"),
        ));
    }
}

fn dims_tags_are_known(f: &Field<'_>, errors: &mut Vec<syn::Error>) {
    let Some((_, tags)) = &f.attrs.dims else {
        return;
    };
    for t in tags {
        let known = ["Batch", "Time", "Any", "Neurons", "NeuronsLast"];
        if !known.iter().any(|k| t == k) {
            errors.push(syn::Error::new(
                t.span(),
                format!("unknown axis tag `{t}`: use `Batch`, `Time`, `Any` or `Neurons`"),
            ));
        }
    }
}

fn processor_needs_convert(f: &Field<'_>, errors: &mut Vec<syn::Error>) {
    if let Some(p) = &f.attrs.processor {
        if needs_convert(f) {
            errors.push(syn::Error::new(
                p.span(),
                "`processor` only applies to a converted layer: add `convert` or remove `processor`",
            ));
        }
    }
}

fn convert_needs_dims(f: &Field<'_>, errors: &mut Vec<syn::Error>) {
    if let Some(convert) = &f.attrs.convert {
        if f.known.is_none() && f.attrs.dims.is_none() {
            errors.push(syn::Error::new(
                convert.span,
                "`convert` on a block of your own needs its neuron axis: add `dims = (...)`, e.g. `dims = (Batch, Neurons)`",
            ));
        }
    }
}

fn convert_needs_parameters(f: &Field<'_>, errors: &mut Vec<syn::Error>) {
    if let (Some(convert), Some(Known::Free)) = (&f.attrs.convert, f.known) {
        errors.push(syn::Error::new(
            convert.span,
            "this layer has no parameters: there is nothing to convert",
        ));
    }
}

fn recurrent_needs_processor(f: &Field<'_>, errors: &mut Vec<syn::Error>) {
    let (Some(name), None, Kind::Converted) = (f.name.as_deref(), &f.attrs.processor, f.kind)
    else {
        return;
    };
    let (processor, why) = match name {
        "GruCell" => (
            "GruCellState",
            "takes `(x, h)`: each dendrite must step from its own state",
        ),
        "LstmCell" => (
            "LstmCellState",
            "returns a tuple `(h, c)` and each dendrite must step from its own state",
        ),
        "Gru" => ("GruState", "returns a tuple `(outputs, last state)`"),
        "Lstm" => ("LstmState", "returns a tuple `(outputs, (h, c))`"),
        _ => return,
    };
    errors.push(syn::Error::new(
        f.field.ty.span(),
        format!("`{name}` {why}: add a processor, `#[pai(processor = {processor})]` (see `perforated::layers`)"),
    ));
}

fn normalisation_needs_group(f: &Field<'_>, errors: &mut Vec<syn::Error>) {
    if let Some(Known::Dfdx { norm: true, .. }) = f.known {
        if f.attrs.track.is_none() && f.attrs.skip.is_none() {
            let name = f.name.as_deref().unwrap_or("normalisation");
            errors.push(syn::Error::new(
                f.field.ty.span(),
                format!("a bare `{name}` cannot get dendrites: group it with the layer before it, `PaiSequential<Layer, {name}<..>>`, or mark it `#[pai(track)]`"),
            ));
        }
    }
}
