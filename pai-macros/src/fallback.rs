//! What a failed expansion emits: every error, and the struct as written.

use proc_macro2::TokenStream;

/// Every error, then the struct: as written when the struct itself is wrong, or generated
/// (layers with the model's dtype and device) when only fields are, so that uses of the
/// struct elsewhere do not add errors of their own.
pub fn errors(
    model: &crate::ast::Model<'_>,
    shape_ok: bool,
    errors: Vec<syn::Error>,
) -> TokenStream {
    let mut combined = errors.into_iter();
    let mut first = combined.next().expect("called with errors");
    for e in combined {
        first.combine(e);
    }
    let mut out = first.to_compile_error();
    if shape_ok {
        out.extend(crate::expand::item(model, true));
    } else {
        out.extend(crate::expand::stub(model.input));
    }
    out
}

/// The width errors, then the whole model but its forward pass, and a forward pass that
/// accepts any input and returns it: the `forward` calls elsewhere add no bound errors of
/// their own to the one reported at the struct. The stub never runs (the crate does not
/// compile), as thiserror's fallback impls.
pub fn widths(model: &crate::ast::Model<'_>, errors: Vec<syn::Error>) -> TokenStream {
    let mut combined = errors.into_iter();
    let mut first = combined.next().expect("called with errors");
    for e in combined {
        first.combine(e);
    }
    let mut out = first.to_compile_error();
    out.extend(crate::expand::model(model, false));
    out.extend(crate::expand::stub_forward(model));
    out
}
