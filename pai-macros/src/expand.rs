//! IR -> tokens, one function per generated piece (struct, summary, build, registry walks,
//! forward). Infallible: `check` has already reported every problem.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;

use crate::ast::{Field, Kind, Model};
use crate::paths;
use crate::types::{field_type, module_type};

fn strip_pai(attrs: &[syn::Attribute]) -> Vec<&syn::Attribute> {
    attrs.iter().filter(|a| !a.path().is_ident("pai")).collect()
}

/// The struct as written, `#[pai]` attributes removed: what a failed expansion still emits,
/// so that one mistake gives one error.
pub fn stub(input: &syn::DeriveInput) -> TokenStream {
    let mut input = input.clone();
    if let syn::Data::Struct(s) = &mut input.data {
        for f in &mut s.fields {
            f.attrs.retain(|a| !a.path().is_ident("pai"));
        }
    }
    quote!(#input)
}

/// The struct's own const generics: `(declarations, names)`.
fn consts(m: &Model<'_>) -> (Vec<TokenStream>, Vec<TokenStream>) {
    m.input
        .generics
        .params
        .iter()
        .filter_map(|p| match p {
            syn::GenericParam::Const(c) => {
                let ident = &c.ident;
                let ty = &c.ty;
                Some((quote!(const #ident: #ty), quote!(#ident)))
            }
            _ => None,
        })
        .unzip()
}

/// The generated struct. With `plain_fields` (after field errors) converted layers get no
/// tags or processor, so a mistake there reports once.
pub fn item(m: &Model<'_>, plain_fields: bool) -> TokenStream {
    let core = paths::core();
    let dfdx = paths::dfdx();
    let input = m.input;
    let name = &input.ident;
    let vis = &input.vis;
    let attrs = &input.attrs;
    let defs = m.fields.iter().map(|f| {
        let fattrs = strip_pai(&f.field.attrs);
        let fvis = &f.field.vis;
        let ident = f.ident;
        let ty = field_type(f, plain_fields);
        quote!(#(#fattrs)* #fvis #ident: #ty)
    });
    let (decls, _) = consts(m);
    // after errors no field may use `E` or `D`: a marker keeps rustc from adding its own
    let marker = plain_fields
        .then(|| quote!(#[doc(hidden)] __pai_types: ::core::marker::PhantomData<(E, D)>,));
    quote! {
        #(#attrs)*
        #vis struct #name<#(#decls,)* E = f32, D = #dfdx::tensor::Cpu>
        where
            E: #core::Float,
            D: #dfdx::tensor_ops::Device<E>,
        {
            #(#defs,)*
            #marker
        }
    }
}

/// Everything `#[perforated]` generates for a model that passed every check; without
/// `with_forward`, all but the forward pass.
pub fn model(m: &Model<'_>, with_forward: bool) -> TokenStream {
    let core = paths::core();
    let dfdx = paths::dfdx();
    let name = &m.input.ident;
    let (decls, names) = consts(m);
    let generics = quote!(#(#decls,)* E: #core::Float, D: #dfdx::tensor_ops::Device<E>);
    let ty = quote!(#name<#(#names,)* E, D>);
    let item = item(m, false);
    let summary = summary(m);
    let build = build(m);
    let registry = registry(m);
    let forward = if m.attrs.custom_forward || !with_forward {
        quote!()
    } else {
        forward(m, &decls, &ty)
    };
    quote! {
        #item

        #[automatically_derived]
        impl<#generics> #ty {
            /// What `#[perforated]` made of each field.
            pub const PERFORATED_SUMMARY: &'static str = #summary;
        }

        #[automatically_derived]
        impl<#generics> #core::BuildDendritic for #ty {
            #build
        }

        #[automatically_derived]
        impl<#generics> #core::DendriticModel for #ty {
            type Dtype = E;
            type Device = D;
            #registry
        }

        #forward
    }
}

/// `BuildDendritic::build_with`: each field built on the device, converted ones wrapped.
fn build(m: &Model<'_>) -> TokenStream {
    let core = paths::core();
    let dfdx = paths::dfdx();
    let builds = m.fields.iter().map(|f| {
        let ident = f.ident;
        let span = f.field.ty.span();
        let value = match f.kind {
            Kind::Converted => quote_spanned! {span=>
                #core::Dendritic::new(dev, #dfdx::nn::BuildModule::try_build(dev).map_err(#core::Error::device)?, config.clone())?
            },
            Kind::Tracked => quote_spanned! {span=>
                #dfdx::nn::BuildModule::try_build(dev).map_err(#core::Error::device)?
            },
            Kind::Nested => {
                let ty = module_type(&f.field.ty);
                quote_spanned! {span=> <#ty as #core::BuildDendritic>::build_with(dev, config)? }
            }
            Kind::Free | Kind::Skipped => quote_spanned! {span=> ::core::default::Default::default() },
        };
        quote!(#ident: #value)
    });
    quote! {
        fn build_with(dev: &D, config: &#core::DendriteConfig) -> #core::Result<Self> {
            Ok(Self { #(#builds,)* })
        }
    }
}

/// The three walks of `DendriticModel`: tensors, layers, layers mutably.
fn registry(m: &Model<'_>) -> TokenStream {
    let core = paths::core();
    let visit_params = m.fields.iter().filter_map(|f| {
        let ident = f.ident;
        let lit = ident.to_string();
        match f.kind {
            Kind::Converted | Kind::Nested => Some(quote! {
                #core::DendriticModel::visit_params(&mut self.#ident, &#core::params::join(path, #lit), visitor)?;
            }),
            Kind::Tracked => Some(quote! {
                #core::params::visit_module(
                    &mut self.#ident,
                    #core::params::ModuleParams::new(&#core::params::join(path, #lit), #core::Role::Tracked, __pai_trains),
                    visitor,
                )?;
            }),
            Kind::Free | Kind::Skipped => None,
        }
    });
    let layered: Vec<&Field<'_>> = m
        .fields
        .iter()
        .filter(|f| matches!(f.kind, Kind::Converted | Kind::Nested))
        .collect();
    let visit_layers = layered.iter().map(|f| {
        let ident = f.ident;
        let lit = ident.to_string();
        quote!(#core::DendriticModel::visit_layers(&self.#ident, &#core::params::join(path, #lit), f);)
    });
    let visit_layers_mut = layered.iter().map(|f| {
        let ident = f.ident;
        let lit = ident.to_string();
        quote!(#core::DendriticModel::visit_layers_mut(&mut self.#ident, &#core::params::join(path, #lit), f)?;)
    });
    quote! {
        fn visit_params<V: #core::params::ParamVisitor<E, D>>(&mut self, path: &str, visitor: &mut V) -> #core::Result<()> {
            let __pai_trains = #core::DendriticModel::phase(self) == #core::Phase::Neuron;
            let _ = __pai_trains;
            #(#visit_params)*
            Ok(())
        }
        fn visit_layers(&self, path: &str, f: &mut dyn FnMut(&str, &dyn #core::DendriteLayer)) {
            let _ = (&path, &f);
            #(#visit_layers)*
        }
        fn visit_layers_mut(
            &mut self,
            path: &str,
            f: &mut dyn FnMut(&str, &mut dyn #core::DendriteLayer) -> #core::Result<()>,
        ) -> #core::Result<()> {
            let _ = (&path, &f);
            #(#visit_layers_mut)*
            Ok(())
        }
    }
}

/// `PERFORATED_SUMMARY`: one line per field, what the macro made of it.
fn summary(m: &Model<'_>) -> String {
    let lines: Vec<String> = m
        .fields
        .iter()
        .map(|f| {
            let ty = &f.field.ty;
            let what = match f.kind {
                Kind::Converted => "converted",
                Kind::Tracked => "tracked (trains without dendrites)",
                Kind::Nested => "nested model",
                Kind::Free => "no parameters",
                Kind::Skipped => "skipped",
            };
            format!(
                "{}: {} — {}",
                f.ident,
                quote!(#ty).to_string().replace(' ', ""),
                what
            )
        })
        .collect();
    format!("{}\n  {}", m.input.ident, lines.join("\n  "))
}

/// `Module` and `ModuleMut` for any input, returning it: what a model whose widths do not
/// chain gets (see `fallback::widths`); never called, since that crate does not compile.
pub fn stub_forward(m: &Model<'_>) -> TokenStream {
    let core = paths::core();
    let dfdx = paths::dfdx();
    let name = &m.input.ident;
    let (decls, names) = consts(m);
    let ty = quote!(#name<#(#names,)* E, D>);
    let one = |module: TokenStream, method: TokenStream, recv: TokenStream| {
        quote! {
            #[automatically_derived]
            impl<#(#decls,)* E: #core::Float, D: #dfdx::tensor_ops::Device<E>, __PaiX> #dfdx::nn::#module<__PaiX> for #ty {
                type Output = __PaiX;
                type Error = <D as #dfdx::tensor::HasErr>::Err;
                fn #method(#recv self, x: __PaiX) -> ::core::result::Result<Self::Output, Self::Error> {
                    ::core::result::Result::Ok(x)
                }
            }
        }
    };
    let module = one(quote!(Module), quote!(try_forward), quote!(&));
    let module_mut = one(quote!(ModuleMut), quote!(try_forward_mut), quote!(&mut));
    quote!(#module #module_mut)
}

/// `Module` and `ModuleMut`: the fields in order, skipped ones left out.
fn forward(m: &Model<'_>, decls: &[TokenStream], ty: &TokenStream) -> TokenStream {
    let core = paths::core();
    let dfdx = paths::dfdx();
    let steps: Vec<(&Field<'_>, TokenStream)> = m
        .fields
        .iter()
        .filter(|f| !matches!(f.kind, Kind::Skipped))
        .map(|f| (f, field_type(f, false)))
        .collect();
    if steps.is_empty() {
        return quote!();
    }
    let impl_for = |module: TokenStream, method: TokenStream, recv: TokenStream| {
        // every intermediate output is an impl parameter bound by `Output = __PaiYk`, so the
        // projections stay rigid instead of being normalised through the layers' impls.
        let mut bounds = Vec::new();
        let mut outputs = Vec::new();
        let mut input = quote!(__PaiX);
        let mut calls = Vec::new();
        for (k, (f, ty)) in steps.iter().enumerate() {
            let ident = f.ident;
            let y = format_ident!("__PaiY{}", k);
            bounds.push(quote!(#ty: #dfdx::nn::#module<#input, Output = #y, Error = <D as #dfdx::tensor::HasErr>::Err>));
            calls.push(quote!(let x = #dfdx::nn::#module::#method(#recv self.#ident, x)?;));
            input = quote!(#y);
            outputs.push(y);
        }
        let output = input;
        quote! {
            #[automatically_derived]
            impl<#(#decls,)* E: #core::Float, D: #dfdx::tensor_ops::Device<E>, __PaiX, #(#outputs),*> #dfdx::nn::#module<__PaiX> for #ty
            where
                #(#bounds,)*
            {
                type Output = #output;
                type Error = <D as #dfdx::tensor::HasErr>::Err;
                fn #method(#recv self, x: __PaiX) -> ::core::result::Result<Self::Output, Self::Error> {
                    #(#calls)*
                    Ok(x)
                }
            }
        }
    };
    let module = impl_for(quote!(Module), quote!(try_forward), quote!(&));
    let module_mut = impl_for(quote!(ModuleMut), quote!(try_forward_mut), quote!(&mut));
    quote!(#module #module_mut)
}
