//! What a failed expansion emits: every error, and the struct as written.

use proc_macro2::TokenStream;

pub fn errors(input: &syn::DeriveInput, errors: Vec<syn::Error>) -> TokenStream {
    let mut combined = errors.into_iter();
    let mut first = combined.next().expect("called with errors");
    for e in combined {
        first.combine(e);
    }
    let mut out = first.to_compile_error();
    out.extend(crate::expand::stub(input));
    out
}
