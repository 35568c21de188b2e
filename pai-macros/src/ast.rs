//! The parsed model: fields, what each is, the type it becomes. Keeps the user's spans.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{GenericArgument, Ident, PathArguments, Type};

use crate::attr::{self, FieldAttrs, ModelAttrs};
use crate::paths;

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
        "Linear" => Known::Dfdx {
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
pub enum Kind {
    /// Gets dendrites.
    Converted {
        module: TokenStream,
        tags: Option<TokenStream>,
        processor: Option<TokenStream>,
    },
    /// Trains without dendrites.
    Tracked { module: TokenStream },
    /// No parameters.
    Free,
    /// Itself a perforated model (or any `DendriticModel`).
    Nested { ty: TokenStream },
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

fn args(seg: &syn::PathSegment) -> Vec<&GenericArgument> {
    match &seg.arguments {
        PathArguments::AngleBracketed(a) => a.args.iter().collect(),
        _ => Vec::new(),
    }
}

/// The module type a written layer type becomes, with the model's `E, D`.
pub fn module_type(ty: &Type) -> TokenStream {
    let span = ty.span();
    let Some(seg) = segment(ty) else {
        return quote!(#ty);
    };
    let name = seg.ident.to_string();
    let args = args(seg);
    let dfdx = paths::dfdx();
    let core = paths::core();
    let ident = &seg.ident;
    match known(&name) {
        Some(Known::Dfdx { consts, .. }) => {
            let (head, tail) = args.split_at(consts.min(args.len()));
            quote_spanned!(span=> #dfdx::nn::modules::#ident<#(#head,)* E, D #(, #tail)*>)
        }
        Some(Known::Core { consts }) => {
            let (head, tail) = args.split_at(consts.min(args.len()));
            quote_spanned!(span=> #core::layers::#ident<#(#head,)* E, D #(, #tail)*>)
        }
        Some(Known::Sequential) => {
            let inner: Vec<TokenStream> = args
                .iter()
                .map(|a| match a {
                    GenericArgument::Type(t) => module_type(t),
                    other => quote!(#other),
                })
                .collect();
            quote_spanned!(span=> #core::layers::PaiSequential<#(#inner),*>)
        }
        None if args.is_empty() => quote_spanned!(span=> #ty<E, D>),
        Some(Known::Free) | None => quote!(#ty),
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
                let kind = classify(field, &attrs, name.as_deref());
                fields.push(Field {
                    ident,
                    field,
                    attrs,
                    name,
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

fn classify(field: &syn::Field, attrs: &FieldAttrs, name: Option<&str>) -> Kind {
    let ty = &field.ty;
    if attrs.skip.is_some() {
        return Kind::Skipped;
    }
    if attrs.track.is_some() {
        return Kind::Tracked {
            module: module_type(ty),
        };
    }
    let known = name.and_then(known);
    let convertible = matches!(
        known,
        Some(Known::Dfdx { norm: false, .. } | Known::Core { .. } | Known::Sequential)
    );
    if convertible || attrs.convert.is_some() {
        let module = module_type(ty);
        let tags = attrs.dims.as_ref().map(|(span, idents)| {
            let core = paths::core();
            let tags = idents
                .iter()
                .map(|i| quote_spanned!(i.span()=> #core::axis::#i));
            quote_spanned!(*span=> (#(#tags,)*))
        });
        let processor = attrs.processor.as_ref().map(|p| processor_type(p, ty));
        return Kind::Converted {
            module,
            tags,
            processor,
        };
    }
    match known {
        Some(Known::Free) => Kind::Free,
        // a bare normalisation: reported by `check`; tracked so the expansion stays valid
        Some(Known::Dfdx { norm: true, .. }) => Kind::Tracked {
            module: module_type(ty),
        },
        _ => Kind::Nested {
            ty: module_type(ty),
        },
    }
}

/// The processor type: known stateful processors get `<H, E, D>` with `H` the layer's
/// second const argument (its hidden size).
fn processor_type(p: &syn::Path, layer: &Type) -> TokenStream {
    let last = p
        .segments
        .last()
        .map(|s| s.ident.to_string())
        .unwrap_or_default();
    let bare = p.segments.last().is_some_and(|s| s.arguments.is_none());
    if stateful_processor(&last) && bare {
        let hidden = segment(layer).and_then(|s| args(s).get(1).copied().cloned());
        if let Some(h) = hidden {
            let core = paths::core();
            let ident = &p.segments.last().expect("checked").ident;
            return quote_spanned!(p.span()=> #core::layers::#ident<#h, E, D>);
        }
    }
    quote!(#p)
}
