//! Procedural macros of `perforated`. Use them through the `perforated` crate.
//!
//! `#[perforated]` turns a struct of layers into a dendritic model; see the `perforated` crate
//! documentation for the DSL reference.

mod ast;
mod attr;
mod check;
mod expand;
mod fallback;
mod paths;
mod processor;
#[cfg(test)]
mod tests;
mod types;
mod widths;

use proc_macro::TokenStream;

/// Turns a struct of layers into a dendritic model. See the `perforated` crate docs.
#[proc_macro_attribute]
pub fn perforated(args: TokenStream, item: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(item as syn::DeriveInput);
    model(args.into(), &input).into()
}

fn model(args: proc_macro2::TokenStream, input: &syn::DeriveInput) -> proc_macro2::TokenStream {
    let (model, shape_ok, errors) = analyse(args, input);
    if !errors.is_empty() {
        return fallback::errors(&model, shape_ok, errors);
    }
    let mut widths = Vec::new();
    widths::chain(&model, &mut widths);
    if widths.is_empty() {
        expand::model(&model, true)
    } else {
        fallback::widths(&model, widths)
    }
}

/// Parse and check: the IR, whether the struct itself is well formed, and every error (the
/// width rule runs only on a model without them, so that `fallback::widths` can expand it).
fn analyse(
    args: proc_macro2::TokenStream,
    input: &syn::DeriveInput,
) -> (ast::Model<'_>, bool, Vec<syn::Error>) {
    let mut errors = Vec::new();
    let attrs = attr::model_attrs(args, &mut errors);
    check::shape(input, &mut errors);
    let shape_ok = errors.is_empty();
    let model = ast::parse(input, attrs, &mut errors);
    check::fields(&model, &mut errors);
    (model, shape_ok, errors)
}

/// Describes a layer with several inputs or outputs for conversion: which output element
/// dendrites add to (`main`), which output element is the recurrent state each dendrite keeps
/// (`state`), and where the layer takes that state (`state_input = 1`, inputs `(data, state)`).
/// See the `perforated` crate docs.
#[proc_macro_derive(Processor, attributes(processor))]
pub fn derive_processor(item: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(item as syn::DeriveInput);
    processor::derive(&input).into()
}
