//! `#[derive(Processor)]`: parse, check (one function per rule), expand, in one file (small).

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote};
use syn::spanned::Spanned;
use syn::LitInt;

use crate::paths;

const OUTPUTS: &str = "outputs";
const MAIN: &str = "main";
const STATE: &str = "state";
const STATE_INPUT: &str = "state_input";
const KEYS: &str = "`outputs = N`, `main = i`, `state = i`, `state_input = 1`";

struct Attrs {
    outputs: (usize, Span),
    main: (usize, Span),
    state: Option<(usize, Span)>,
    state_input: Option<(usize, Span)>,
}

fn parse(input: &syn::DeriveInput, errors: &mut Vec<syn::Error>) -> Attrs {
    let call = Span::call_site();
    let mut out = Attrs {
        outputs: (1, call),
        main: (0, call),
        state: None,
        state_input: None,
    };
    let mut seen: Vec<String> = Vec::new();
    for attr in input
        .attrs
        .iter()
        .filter(|a| a.path().is_ident("processor"))
    {
        let result = attr.parse_nested_meta(|meta| {
            let key = meta
                .path
                .get_ident()
                .map(ToString::to_string)
                .unwrap_or_default();
            if seen.contains(&key) {
                return Err(meta.error(format!("duplicate `processor` key `{key}`: write it once")));
            }
            let lit: LitInt = match key.as_str() {
                OUTPUTS | MAIN | STATE | STATE_INPUT => meta.value()?.parse()?,
                _ => {
                    return Err(meta.error(format!(
                        "unknown `processor` key `{key}`: expected one of {KEYS}"
                    )))
                }
            };
            let value = (lit.base10_parse::<usize>()?, lit.span());
            match key.as_str() {
                OUTPUTS => out.outputs = value,
                MAIN => out.main = value,
                STATE => out.state = Some(value),
                _ => out.state_input = Some(value),
            }
            seen.push(key);
            Ok(())
        });
        if let Err(e) = result {
            errors.push(e);
        }
    }
    out
}

fn check(input: &syn::DeriveInput, a: &Attrs, errors: &mut Vec<syn::Error>) {
    generic_over_e_d(input, errors);
    indices_fit(a, errors);
    state_keys_pair(a, errors);
}

fn generic_over_e_d(input: &syn::DeriveInput, errors: &mut Vec<syn::Error>) {
    if !matches!(input.data, syn::Data::Struct(_)) {
        errors.push(syn::Error::new(input.ident.span(), "`#[derive(Processor)]` describes a layer with a struct: `struct MyProcessor<E, D>(PhantomData<(E, D)>);`"));
    }
    let names: Vec<String> = input
        .generics
        .params
        .iter()
        .map(|p| match p {
            syn::GenericParam::Type(t) => t.ident.to_string(),
            other => quote!(#other).to_string(),
        })
        .collect();
    if names != ["E", "D"] {
        let span = if input.generics.params.is_empty() {
            input.ident.span()
        } else {
            input.generics.span()
        };
        errors.push(syn::Error::new(
            span,
            "a processor is generic over exactly `<E, D>` (dtype and device of the state it keeps): write `struct Name<E, D>(PhantomData<(E, D)>)`",
        ));
    }
}

fn indices_fit(a: &Attrs, errors: &mut Vec<syn::Error>) {
    let (k, ks) = a.outputs;
    if k == 0 {
        errors.push(syn::Error::new(
            ks,
            "`outputs` is the number of tensors the layer returns: at least 1",
        ));
        // no index can fit; saying so for each would only repeat this error
        return;
    }
    let fits = |(i, span): (usize, Span), key: &str, errors: &mut Vec<syn::Error>| {
        if i >= k {
            let range = if k == 1 {
                "only `0`, the output itself".to_string()
            } else {
                format!("0 to {}", k - 1)
            };
            errors.push(syn::Error::new(span, format!("`{key} = {i}` does not fit a layer with {k} output(s): the elements are {range}")));
        }
    };
    fits(a.main, MAIN, errors);
    if let Some(s) = a.state {
        fits(s, STATE, errors);
    }
}

fn state_keys_pair(a: &Attrs, errors: &mut Vec<syn::Error>) {
    match (a.state, a.state_input) {
        (Some((_, span)), None) => errors.push(syn::Error::new(
            span,
            "`state` needs `state_input = 1`: where the layer takes the state the dendrite keeps",
        )),
        (None, Some((_, span))) => errors.push(syn::Error::new(
            span,
            "`state_input` needs `state = i`: which output element is the new state",
        )),
        (_, Some((i, span))) if i != 1 => errors.push(syn::Error::new(
            span,
            "`state_input` must be 1: a recurrent layer takes `(data, state)`",
        )),
        _ => {}
    }
}

pub fn derive(input: &syn::DeriveInput) -> TokenStream {
    let mut errors = Vec::new();
    let a = parse(input, &mut errors);
    check(input, &a, &mut errors);
    if !errors.is_empty() {
        let mut out = crate::fallback::compile_errors(errors);
        out.extend(fallback(input));
        return out;
    }
    expand(input, &a)
}

/// After an error: `Processor` alone (no routes) when the struct has the shape the derive
/// needs, so that a model naming the processor does not add an error of its own for each use
/// (as thiserror's fallback impls do).
fn fallback(input: &syn::DeriveInput) -> TokenStream {
    let generics: Vec<String> = input
        .generics
        .params
        .iter()
        .map(|p| match p {
            syn::GenericParam::Type(t) => t.ident.to_string(),
            _ => String::new(),
        })
        .collect();
    if !matches!(input.data, syn::Data::Struct(_)) || generics != ["E", "D"] {
        return TokenStream::new();
    }
    let core = paths::core();
    let dfdx = paths::dfdx();
    let name = &input.ident;
    quote! {
        impl<E: #dfdx::shapes::Dtype, D: #dfdx::tensor_ops::Device<E>> #core::processor::Processor for #name<E, D> {
            type State = #core::processor::Stored<E, D>;
        }
    }
}

fn expand(input: &syn::DeriveInput, a: &Attrs) -> TokenStream {
    let core = paths::core();
    let dfdx = paths::dfdx();
    let name = &input.ident;
    let k = a.outputs.0;
    let m = a.main.0;
    let ys: Vec<_> = (0..k).map(|i| format_ident!("__PaiY{}", i)).collect();
    let vs: Vec<_> = (0..k).map(|i| format_ident!("__pai_y{}", i)).collect();
    let (output, pattern) = if k == 1 {
        (quote!(__PaiY0), quote!(__pai_y0))
    } else {
        (quote!((#(#ys,)*)), quote!((#(#vs,)*)))
    };
    let main_ty = &ys[m];
    let main_v = &vs[m];
    let rest_tys = all_but(&ys, m);
    let rest_vs = all_but(&vs, m);
    let (input_ty, input_generics, input_bound, dendrite_input) = input_parts(a);
    let (state_bound, state_of) = state_parts(a, &ys, &vs, &pattern);
    quote! {
        #[automatically_derived]
        impl<E: #dfdx::shapes::Dtype, D: #dfdx::tensor_ops::Device<E>> #core::processor::Processor for #name<E, D> {
            type State = #core::processor::Stored<E, D>;
        }

        #[automatically_derived]
        impl<__PaiM, E: #dfdx::shapes::Dtype, D: #dfdx::tensor_ops::Device<E>, #input_generics, #(#ys),*>
            #core::processor::Route<__PaiM, #input_ty, E, D> for #name<E, D>
        where
            __PaiM: #dfdx::nn::Module<#input_ty, Output = #output>,
            #input_bound
            #state_bound
        {
            type Output = #output;
            type Main = #main_ty;
            type Rest = (#(#rest_tys,)*);
            type Joined = #output;
            fn split(output: Self::Output) -> (Self::Main, Self::Rest) {
                let #pattern = output;
                (#main_v, (#(#rest_vs,)*))
            }
            fn join(#main_v: Self::Main, rest: Self::Rest) -> Self::Joined {
                let (#(#rest_vs,)*) = rest;
                #pattern
            }
            fn dendrite_input(
                x: #input_ty,
                state: ::core::option::Option<&Self::State>,
            ) -> ::core::result::Result<#input_ty, <D as #dfdx::tensor::HasErr>::Err> {
                #dendrite_input
            }
            fn state_of(output: &Self::Output) -> ::core::option::Option<Self::State> {
                #state_of
            }
        }
    }
}

/// The input side of the route: its type, the impl's generics for it, their bound and the
/// body of `dendrite_input` (the dendrite's own state in place of the layer's).
fn input_parts(a: &Attrs) -> (TokenStream, TokenStream, TokenStream, TokenStream) {
    let core = paths::core();
    match a.state_input {
        Some(_) => (
            quote!((__PaiX0, __PaiX1)),
            quote!(__PaiX0, __PaiX1),
            quote!(__PaiX1: #core::processor::StateSlot<E, D>,),
            quote! {
                let (__pai_x0, __pai_x1) = x;
                Ok((__pai_x0, #core::processor::restore_state(&__pai_x1, state)?))
            },
        ),
        None => (
            quote!(__PaiX),
            quote!(__PaiX),
            quote!(),
            quote!(let _ = state; Ok(x)),
        ),
    }
}

/// The state side: the bound on the state's output element and the body of `state_of`.
fn state_parts(
    a: &Attrs,
    ys: &[syn::Ident],
    vs: &[syn::Ident],
    pattern: &TokenStream,
) -> (TokenStream, TokenStream) {
    let core = paths::core();
    match a.state {
        Some((s, _)) => {
            let y = &ys[s];
            let v = &vs[s];
            (
                quote!(#y: #core::processor::StateSlot<E, D>,),
                quote! {
                    let #pattern = output;
                    let _ = (#(&#vs,)*);
                    Some(#core::processor::store_state(#v))
                },
            )
        }
        None => (quote!(), quote!(let _ = output; None)),
    }
}

/// Every item but the one at `skip`, in order.
fn all_but<T>(items: &[T], skip: usize) -> Vec<&T> {
    let (before, after) = items.split_at(skip);
    before.iter().chain(after.iter().skip(1)).collect()
}
