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
    let mut out = compile_errors(errors);
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
    let mut out = compile_errors(errors);
    out.extend(crate::expand::model(model, false));
    out.extend(crate::expand::stub_forward(model));
    out
}

/// Every error as one `compile_error!` sequence, in order (empty for none).
pub fn compile_errors(errors: Vec<syn::Error>) -> TokenStream {
    let mut all = errors.into_iter();
    let Some(mut first) = all.next() else {
        return TokenStream::new();
    };
    for e in all {
        first.combine(e);
    }
    first.to_compile_error()
}
