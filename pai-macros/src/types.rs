//! The types the generated struct gives its fields: a written layer type with the model's
//! `E, D` added, the dendritic wrapper of a converted field, the tag tuple of `dims`, the
//! processor with its hidden size.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{GenericArgument, PathArguments, Type};

use crate::ast::{known, segment, stateful_processor, Field, Kind, Known};
use crate::paths;

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

/// The processor type: known stateful processors get `<H, E, D>` with `H` the layer's
/// second const argument (its hidden size); any other processor named bare but `Plain` and
/// `FirstOutput` is a derived one and gets the model's `<E, D>` (`Name<>` keeps a processor
/// without generics as written).
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
    if bare && !matches!(last.as_str(), "Plain" | "FirstOutput") {
        return quote_spanned!(p.span()=> #p<E, D>);
    }
    quote!(#p)
}

/// The tag tuple `dims = (...)` names, in pai-core's axis module.
fn tags(span: proc_macro2::Span, idents: &[syn::Ident]) -> TokenStream {
    let core = paths::core();
    let tags = idents
        .iter()
        .map(|i| quote_spanned!(i.span()=> #core::axis::#i));
    quote_spanned!(span=> (#(#tags,)*))
}

/// The type a field has in the generated struct. With `plain` (after field errors) a
/// converted layer gets no tags or processor, so that a mistake there reports once.
pub fn field_type(f: &Field<'_>, plain: bool) -> TokenStream {
    let core = paths::core();
    let ty = &f.field.ty;
    match f.kind {
        Kind::Converted => {
            let module = module_type(ty);
            let tags = f
                .attrs
                .dims
                .as_ref()
                .map(|(span, idents)| tags(*span, idents));
            let processor = f.attrs.processor.as_ref().map(|p| processor_type(p, ty));
            match (tags, processor) {
                // a parameter-free layer marked `convert` stays as written
                _ if plain && f.known == Some(Known::Free) => quote!(#ty),
                (None, None) => quote!(#core::Dendritic<#module>),
                _ if plain => quote!(#core::Dendritic<#module>),
                (Some(t), None) => quote!(#core::Dendritic<#module, #t>),
                (None, Some(p)) => quote!(
                    #core::Dendritic<#module, <#module as #core::Convertible>::DefaultTags, #p>
                ),
                (Some(t), Some(p)) => quote!(#core::Dendritic<#module, #t, #p>),
            }
        }
        Kind::Tracked | Kind::Nested => module_type(ty),
        Kind::Free | Kind::Skipped => quote!(#ty),
    }
}
