//! The width rule: in a generated forward pass each field feeds the next, so a layer's output
//! width must be the next layer's input width. Checked where the macro can decide it, on the
//! written types: two integer literals that differ are an error at the struct (dfdx would
//! report it only at the `forward` call, as a `TryMatMul` bound).

use syn::spanned::Spanned;
use syn::{Expr, GenericArgument, Lit, Type};

use crate::ast::{segment, Field, Kind, Model};

/// One end of a layer: its width as written (a const argument).
#[derive(Clone)]
struct End<'a> {
    field: &'a syn::Ident,
    arg: &'a GenericArgument,
}

/// What a field does to the width the chain carries.
enum Step<'a> {
    /// Takes `input` and gives `output`.
    Layer { input: End<'a>, output: End<'a> },
    /// Leaves the width as it is (activations, dropout, pooling).
    Keep,
    /// The width after it is unknown to the macro (flatten, recurrent or nested layers).
    Break,
}

fn const_args(ty: &Type) -> Vec<&GenericArgument> {
    match segment(ty).map(|s| &s.arguments) {
        Some(syn::PathArguments::AngleBracketed(a)) => a.args.iter().collect(),
        _ => Vec::new(),
    }
}

/// The widths of a written layer type: `(input index, output index)` among its arguments.
fn ends(ty: &Type) -> Option<(&GenericArgument, &GenericArgument)> {
    let name = segment(ty)?.ident.to_string();
    let args = const_args(ty);
    let (i, o) = match name.as_str() {
        "Linear" | "UnbiasedLinear" | "Conv1d" | "Conv2d" | "Conv3d" => (0, 1),
        "BatchNorm1D" | "BatchNorm2D" | "LayerNorm1D" => (0, 0),
        "PaiSequential" => {
            // the group's first layer sets both ends (its norm must match, and is checked by
            // dfdx's own bounds)
            let GenericArgument::Type(first) = args.first()? else {
                return None;
            };
            return ends(first);
        }
        _ => return None,
    };
    Some((args.get(i)?, args.get(o)?))
}

fn step<'a>(f: &'a Field<'a>) -> Step<'a> {
    match f.kind {
        Kind::Skipped => return Step::Keep,
        Kind::Nested => return Step::Break,
        _ => {}
    }
    if let Some((input, output)) = ends(&f.field.ty) {
        let end = |arg| End {
            field: f.ident,
            arg,
        };
        return Step::Layer {
            input: end(input),
            output: end(output),
        };
    }
    match f.name.as_deref() {
        Some(
            "ReLU" | "LeakyReLU" | "GeLU" | "FastGeLU" | "AccurateGeLU" | "Sigmoid" | "Tanh"
            | "Softmax" | "Square" | "Sqrt" | "Abs" | "Exp" | "Ln" | "Sin" | "Cos" | "Dropout"
            | "DropoutOneIn" | "MaxPool2d" | "AvgPool2d",
        ) => Step::Keep,
        _ => Step::Break,
    }
}

/// An integer literal argument's value.
fn literal(arg: &GenericArgument) -> Option<u128> {
    let GenericArgument::Const(expr) = arg else {
        return None;
    };
    let mut e = expr;
    while let Expr::Block(b) = e {
        match b.block.stmts.as_slice() {
            [syn::Stmt::Expr(inner, None)] => e = inner,
            _ => return None,
        }
    }
    match e {
        Expr::Lit(l) => match &l.lit {
            Lit::Int(i) => i.base10_parse().ok(),
            _ => None,
        },
        _ => None,
    }
}

/// Every pair of consecutive layers (activations and pooling between them) whose widths are
/// literals that differ: an error at the second layer's input width, and one at the first
/// layer's output width, naming each other.
pub fn chain(model: &Model<'_>, errors: &mut Vec<syn::Error>) {
    if model.attrs.custom_forward {
        return;
    }
    let mut carried: Option<End<'_>> = None;
    for f in &model.fields {
        match step(f) {
            Step::Keep => {}
            Step::Break => carried = None,
            Step::Layer { input, output } => {
                if let Some(before) = &carried {
                    mismatch(before, &input, errors);
                }
                carried = Some(output);
            }
        }
    }
}

fn mismatch(before: &End<'_>, next: &End<'_>, errors: &mut Vec<syn::Error>) {
    let (Some(gives), Some(takes)) = (literal(before.arg), literal(next.arg)) else {
        return;
    };
    if gives == takes {
        return;
    }
    let (a, b) = (before.field, next.field);
    errors.push(syn::Error::new(
        next.arg.span(),
        format!(
            "`{b}` takes {takes} inputs, but `{a}` before it gives {gives}: the generated \
             forward pass feeds `{a}` into `{b}`, so make these widths equal (or write the \
             forward pass yourself with `#[perforated(custom_forward)]`)"
        ),
    ));
    errors.push(syn::Error::new(
        before.arg.span(),
        format!("`{a}` gives {gives} outputs here, and `{b}` takes {takes}"),
    ));
}
