//! `#[pai(...)]` field attributes and `#[perforated(...)]` arguments.

use syn::spanned::Spanned;
use syn::{Attribute, Ident, Path, Type};

/// Field keys.
pub const CONVERT: &str = "convert";
pub const TRACK: &str = "track";
pub const SKIP: &str = "skip";
pub const DIMS: &str = "dims";
pub const PROCESSOR: &str = "processor";
const FIELD_KEYS: &str = "`convert`, `track`, `skip`, `dims = (...)`, `processor = ...`";

/// Struct keys.
pub const CUSTOM_FORWARD: &str = "custom_forward";

/// A key as written, with its span.
pub struct Flag {
    pub span: proc_macro2::Span,
}

/// Everything `#[pai(...)]` said about one field.
#[derive(Default)]
pub struct FieldAttrs {
    pub convert: Option<Flag>,
    pub track: Option<Flag>,
    pub skip: Option<Flag>,
    /// The tag types, as written.
    pub dims: Option<(proc_macro2::Span, Vec<Ident>)>,
    pub processor: Option<Path>,
}

fn duplicate(name: &str, span: proc_macro2::Span) -> syn::Error {
    syn::Error::new(span, format!("duplicate `pai` key `{name}`: write it once"))
}

/// Parses every `#[pai(...)]` on a field; errors are collected into `errors`.
pub fn field_attrs(attrs: &[Attribute], errors: &mut Vec<syn::Error>) -> FieldAttrs {
    let mut out = FieldAttrs::default();
    for attr in attrs.iter().filter(|a| a.path().is_ident("pai")) {
        let result = attr.parse_nested_meta(|meta| {
            let span = meta.path.span();
            let set = |slot: &mut Option<Flag>, name: &str| {
                if slot.is_some() {
                    Err(duplicate(name, span))
                } else {
                    *slot = Some(Flag { span });
                    Ok(())
                }
            };
            if meta.path.is_ident(CONVERT) {
                set(&mut out.convert, CONVERT)
            } else if meta.path.is_ident(TRACK) {
                set(&mut out.track, TRACK)
            } else if meta.path.is_ident(SKIP) {
                set(&mut out.skip, SKIP)
            } else if meta.path.is_ident(DIMS) {
                if out.dims.is_some() {
                    return Err(duplicate(DIMS, span));
                }
                let ty: Type = meta.value()?.parse()?;
                out.dims = Some((ty.span(), tags(&ty)?));
                Ok(())
            } else if meta.path.is_ident(PROCESSOR) {
                if out.processor.is_some() {
                    return Err(duplicate(PROCESSOR, span));
                }
                out.processor = Some(meta.value()?.parse()?);
                Ok(())
            } else {
                let name = meta
                    .path
                    .get_ident()
                    .map_or_else(|| "?".to_string(), ToString::to_string);
                Err(syn::Error::new(
                    span,
                    format!("unknown `pai` key `{name}`: expected one of {FIELD_KEYS}"),
                ))
            }
        });
        if let Err(e) = result {
            errors.push(e);
        }
    }
    out
}

/// The idents of a `dims = (A, B, ...)` tuple.
fn tags(ty: &Type) -> syn::Result<Vec<Ident>> {
    let bad = || {
        syn::Error::new(
            ty.span(),
            "`dims` takes a tuple of axis tags, one per output axis, such as `(Batch, Time, Neurons)`",
        )
    };
    let Type::Tuple(tuple) = ty else {
        return Err(bad());
    };
    tuple
        .elems
        .iter()
        .map(|t| match t {
            Type::Path(p) if p.qself.is_none() => p.path.get_ident().cloned().ok_or_else(bad),
            _ => Err(bad()),
        })
        .collect()
}

/// Arguments of `#[perforated(...)]`.
#[derive(Default)]
pub struct ModelAttrs {
    pub custom_forward: bool,
}

/// Parses the attribute's own arguments.
pub fn model_attrs(args: proc_macro2::TokenStream, errors: &mut Vec<syn::Error>) -> ModelAttrs {
    let mut out = ModelAttrs::default();
    if args.is_empty() {
        return out;
    }
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident(CUSTOM_FORWARD) {
            if out.custom_forward {
                return Err(syn::Error::new(
                    meta.path.span(),
                    format!("duplicate `perforated` argument `{CUSTOM_FORWARD}`: write it once"),
                ));
            }
            out.custom_forward = true;
            Ok(())
        } else {
            Err(meta.error(format!(
                "unknown `perforated` argument: expected `{CUSTOM_FORWARD}` (the struct implements `Module` itself)"
            )))
        }
    });
    if let Err(e) = syn::parse::Parser::parse2(parser, args) {
        errors.push(e);
    }
    out
}
