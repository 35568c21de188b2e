//! The parsed model: a plain IR that borrows the user's syntax (and so keeps its spans): each
//! field, its attributes and what it is. Builds no tokens; `types` and `expand` do.

use syn::{Ident, Type};

use crate::attr::{self, FieldAttrs, ModelAttrs};

/// A layer name the macro knows.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Known {
    /// A dfdx layer with `consts` const arguments before `E, D`.
    Dfdx { consts: usize, norm: bool },
    /// A pai-core layer with `consts` const arguments before `E, D`.
    Core { consts: usize },
    /// `PaiSequential<Layer, Norm>`.
    Sequential,
    /// Parameter-free: kept as written.
    Free,
}

pub fn known(name: &str) -> Option<Known> {
    Some(match name {
        "Linear" | "UnbiasedLinear" => Known::Dfdx {
            consts: 2,
            norm: false,
        },
        "BatchNorm1D" | "BatchNorm2D" | "LayerNorm1D" => Known::Dfdx {
            consts: 1,
            norm: true,
        },
        "Conv1d" | "Conv2d" | "Conv3d" => Known::Core { consts: 3 },
        "GruCell" | "Gru" | "LstmCell" | "Lstm" => Known::Core { consts: 2 },
        "PaiSequential" => Known::Sequential,
        "ReLU" | "LeakyReLU" | "GeLU" | "FastGeLU" | "AccurateGeLU" | "Sigmoid" | "Tanh"
        | "Softmax" | "Square" | "Sqrt" | "Abs" | "Exp" | "Ln" | "Sin" | "Cos" | "Dropout"
        | "DropoutOneIn" | "Flatten" | "MaxPool2d" | "AvgPool2d" => Known::Free,
        _ => return None,
    })
}

/// Processors whose state is sized by the layer's hidden size: `<H, E, D>` is appended.
pub fn stateful_processor(name: &str) -> bool {
    matches!(
        name,
        "GruCellState" | "GruState" | "LstmCellState" | "LstmState" | "LstmLast"
    )
}

/// What a field is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    /// Gets dendrites.
    Converted,
    /// Trains without dendrites.
    Tracked,
    /// No parameters.
    Free,
    /// Itself a perforated model (or any `DendriticModel`).
    Nested,
    /// Left out of the registry and of the generated forward.
    Skipped,
}

// `field.field` is the syn field this IR field was parsed from
#[allow(clippy::struct_field_names)]
pub struct Field<'a> {
    pub ident: &'a Ident,
    pub field: &'a syn::Field,
    pub attrs: FieldAttrs,
    /// Last path segment of the written type, if it is a path.
    pub name: Option<String>,
    /// What that name is, if the macro knows it.
    pub known: Option<Known>,
    pub kind: Kind,
}

pub struct Model<'a> {
    pub input: &'a syn::DeriveInput,
    pub attrs: ModelAttrs,
    pub fields: Vec<Field<'a>>,
}

/// The last segment of a path type, and its generic arguments.
pub fn segment(ty: &Type) -> Option<&syn::PathSegment> {
    match ty {
        Type::Path(p) if p.qself.is_none() => p.path.segments.last(),
        _ => None,
    }
}

/// Parses the struct into the IR. Never fails: problems go to `errors` (then `check` reports
/// them) and a best guess is kept so expansion can still emit stubs.
pub fn parse<'a>(
    input: &'a syn::DeriveInput,
    attrs: ModelAttrs,
    errors: &mut Vec<syn::Error>,
) -> Model<'a> {
    let mut fields = Vec::new();
    if let syn::Data::Struct(s) = &input.data {
        if let syn::Fields::Named(named) = &s.fields {
            for field in &named.named {
                let ident = field.ident.as_ref().expect("named field");
                let attrs = attr::field_attrs(&field.attrs, errors);
                let name = segment(&field.ty).map(|s| s.ident.to_string());
                let known = name.as_deref().and_then(known);
                let kind = classify(&attrs, known);
                fields.push(Field {
                    ident,
                    field,
                    attrs,
                    name,
                    known,
                    kind,
                });
            }
        }
    }
    Model {
        input,
        attrs,
        fields,
    }
}

/// What a field is, from its attributes and its layer name. A bare normalisation (reported
/// by `check`) is classed as tracked so that the expansion stays valid.
fn classify(attrs: &FieldAttrs, known: Option<Known>) -> Kind {
    if attrs.skip.is_some() {
        return Kind::Skipped;
    }
    if attrs.track.is_some() {
        return Kind::Tracked;
    }
    let convertible = matches!(
        known,
        Some(Known::Dfdx { norm: false, .. } | Known::Core { .. } | Known::Sequential)
    );
    if convertible || attrs.convert.is_some() {
        return Kind::Converted;
    }
    match known {
        Some(Known::Free) => Kind::Free,
        Some(Known::Dfdx { norm: true, .. }) => Kind::Tracked,
        _ => Kind::Nested,
    }
}
