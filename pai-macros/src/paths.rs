//! The one place that spells `::perforated::__private`.

use proc_macro2::TokenStream;
use quote::quote;

/// `::perforated::__private`.
pub fn private() -> TokenStream {
    quote!(::perforated::__private)
}

/// `::perforated::__private::dfdx`.
pub fn dfdx() -> TokenStream {
    let p = private();
    quote!(#p::dfdx)
}

/// `::perforated::__private::pai_core`.
pub fn core() -> TokenStream {
    let p = private();
    quote!(#p::pai_core)
}
