//! Parse and check on `syn::parse_str` input: every rule's message, on the right token, and
//! every mistake of a struct reported at once. (What needs rustc is in `ui-tests/`.)

use proc_macro2::TokenStream;

use crate::ast::Kind;
use crate::{analyse, processor, types};

/// The errors `#[perforated(args)]` reports for `src`, as messages.
fn errors(args: &str, src: &str) -> Vec<String> {
    let input: syn::DeriveInput = syn::parse_str(src).expect("test input parses");
    let args: TokenStream = args.parse().expect("test arguments lex");
    let (model, _, mut errors) = analyse(args, &input);
    if errors.is_empty() {
        crate::widths::chain(&model, &mut errors);
    }
    errors.iter().map(ToString::to_string).collect()
}

/// The one error `src` has, which must contain `expected`.
fn one_error(src: &str, expected: &str) {
    let found = errors("", src);
    assert_eq!(found.len(), 1, "{src}: {found:?}");
    assert!(found[0].contains(expected), "{src}: {found:?}");
}

fn kinds(src: &str) -> Vec<Kind> {
    let input: syn::DeriveInput = syn::parse_str(src).expect("test input parses");
    let (model, _, errors) = analyse(TokenStream::new(), &input);
    assert!(errors.is_empty(), "{errors:?}");
    model.fields.iter().map(|f| f.kind).collect()
}

#[test]
fn fields_are_classified_by_layer_name_and_attributes() {
    let found = kinds(
        "struct M {
            a: Linear<2, 3>,
            b: ReLU,
            #[pai(track)] c: BatchNorm1D<3>,
            d: Inner,
            #[pai(skip)] e: Linear<3, 3>,
            #[pai(convert, dims = (Batch, Neurons))] f: Block,
            g: PaiSequential<Linear<3, 3>, BatchNorm1D<3>>,
            #[pai(processor = GruState)] h: Gru<3, 4>,
        }",
    );
    use Kind::{Converted, Free, Nested, Skipped, Tracked};
    let want = [
        Converted, Free, Tracked, Nested, Skipped, Converted, Converted, Converted,
    ];
    assert_eq!(found, want);
}

#[test]
fn a_correct_model_has_no_errors() {
    assert!(errors("", "struct M<const H: usize> { a: Linear<2, H>, b: ReLU }").is_empty());
    assert!(errors("custom_forward", "struct M { a: Linear<2, 3> }").is_empty());
}

#[test]
fn the_struct_shape_rules() {
    one_error("enum M { A }", "`M` is an enum");
    one_error("union M { a: u32 }", "not unions");
    one_error("struct M(Linear<2, 3>);", "needs named fields: layer names");
    one_error("struct M;", "`M` has no layers");
    one_error(
        "struct M<T> { a: Linear<2, 3> }",
        "adds the dtype and device generics",
    );
    one_error(
        "struct M<const H: usize> where [(); H]: Sized { a: Linear<2, H> }",
        "take no where clause",
    );
}

#[test]
fn every_field_rule_reports_its_mistake() {
    let cases = [
        (
            "#[pai(track, convert)] a: Linear<2, 3>",
            "`track` and `convert` conflict",
        ),
        (
            "#[pai(skip, track)] a: Linear<2, 3>",
            "`skip` leaves the field out",
        ),
        (
            "#[pai(track, dims = (Batch, Neurons))] a: Linear<2, 3>",
            "`dims` only applies",
        ),
        (
            "#[pai(convert, dims = (Batch, Any))] a: Block",
            "`dims` has no `Neurons`",
        ),
        (
            "#[pai(convert, dims = (Neurons, Neurons))] a: Block",
            "`dims` has 2 `Neurons`",
        ),
        (
            "#[pai(convert, dims = (Batch, Neurons, Channel))] a: Block",
            "unknown axis tag `Channel`",
        ),
        (
            "#[pai(track, processor = FirstOutput)] a: Linear<2, 3>",
            "`processor` only applies",
        ),
        ("#[pai(convert)] a: Block", "needs its neuron axis"),
        (
            "#[pai(convert)] a: ReLU",
            "no parameters: there is nothing to convert",
        ),
        (
            "a: GruCell<2, 3>",
            "add a processor, `#[pai(processor = GruCellState)]`",
        ),
        ("a: LstmCell<2, 3>", "`#[pai(processor = LstmCellState)]`"),
        ("a: Gru<2, 3>", "`#[pai(processor = GruState)]`"),
        ("a: Lstm<2, 3>", "`#[pai(processor = LstmState)]`"),
        (
            "a: BatchNorm2D<3>",
            "a bare `BatchNorm2D` cannot get dendrites",
        ),
    ];
    for (field, expected) in cases {
        one_error(&format!("struct M {{ {field} }}"), expected);
    }
}

#[test]
fn attribute_syntax_errors_are_reported() {
    let cases = [
        (
            "#[pai(dendrites)] a: Linear<2, 3>",
            "unknown `pai` key `dendrites`",
        ),
        (
            "#[pai(track, track)] a: Linear<2, 3>",
            "duplicate `pai` key `track`",
        ),
        (
            "#[pai(convert, dims = Neurons)] a: Block",
            "`dims` takes a tuple of axis tags",
        ),
    ];
    for (field, expected) in cases {
        let found = errors("", &format!("struct M {{ {field} }}"));
        assert!(
            found.iter().any(|e| e.contains(expected)),
            "{field}: {found:?}"
        );
    }
    let found = errors("fast", "struct M { a: Linear<2, 3> }");
    assert!(
        found[0].contains("unknown `perforated` argument"),
        "{found:?}"
    );
    let found = errors(
        "custom_forward, custom_forward",
        "struct M { a: Linear<2, 3> }",
    );
    assert!(
        found[0].contains("duplicate `perforated` argument"),
        "{found:?}"
    );
}

#[test]
fn every_mistake_is_reported_at_once() {
    let found = errors(
        "",
        "struct M<T> {
            #[pai(track, convert)] a: Linear<2, 3>,
            b: BatchNorm1D<3>,
            c: Gru<3, 4>,
        }",
    );
    assert_eq!(found.len(), 4, "{found:?}");
}

#[test]
fn field_types_get_the_models_dtype_and_device() {
    let input: syn::DeriveInput = syn::parse_str(
        "struct M {
            a: Linear<2, 3>,
            #[pai(processor = GruState)] b: Gru<3, 4>,
            #[pai(convert, dims = (Batch, Neurons))] c: Block,
        }",
    )
    .expect("parses");
    let (model, _, _) = analyse(TokenStream::new(), &input);
    let ty = |i: usize, plain: bool| {
        types::field_type(&model.fields[i], plain)
            .to_string()
            .replace(' ', "")
    };
    assert!(
        ty(0, false)
            .ends_with("Dendritic<::perforated::__private::dfdx::nn::modules::Linear<2,3,E,D>>"),
        "{}",
        ty(0, false)
    );
    assert!(
        ty(1, false).contains("layers::GruState<4,E,D>"),
        "{}",
        ty(1, false)
    );
    assert!(
        !ty(1, true).contains("GruState"),
        "after field errors: {}",
        ty(1, true)
    );
    assert!(ty(2, false).contains("(::perforated::__private::pai_core::axis::Batch,::perforated::__private::pai_core::axis::Neurons,)"), "{}", ty(2, false));
}

#[test]
fn processor_derive_rules() {
    let derive = |src: &str| {
        let input: syn::DeriveInput = syn::parse_str(src).expect("parses");
        processor::derive(&input).to_string()
    };
    let cases = [
        ("struct P<E, D>(E, D);", "impl"),
        (
            "#[processor(outputs = 0)] struct P<E, D>(E, D);",
            "at least 1",
        ),
        (
            "#[processor(outputs = 2, main = 2)] struct P<E, D>(E, D);",
            "`main = 2` does not fit",
        ),
        (
            "#[processor(outputs = 2, state = 1)] struct P<E, D>(E, D);",
            "`state` needs `state_input = 1`",
        ),
        (
            "#[processor(state_input = 1)] struct P<E, D>(E, D);",
            "`state_input` needs `state = i`",
        ),
        (
            "#[processor(outputs = 2, state = 1, state_input = 2)] struct P<E, D>(E, D);",
            "`state_input` must be 1",
        ),
        (
            "#[processor(outputs = 2, outputs = 3)] struct P<E, D>(E, D);",
            "duplicate `processor` key",
        ),
        (
            "#[processor(inputs = 2)] struct P<E, D>(E, D);",
            "unknown `processor` key `inputs`",
        ),
        ("struct P<T>(T);", "generic over exactly `<E, D>`"),
        (
            "enum P<E, D> { A(E, D) }",
            "describes a layer with a struct",
        ),
    ];
    for (src, expected) in cases {
        let out = derive(src);
        assert!(out.contains(expected), "{src}: {out}");
        assert_eq!(
            out.contains("compile_error"),
            expected != "impl",
            "{src}: {out}"
        );
    }
}

#[test]
fn consecutive_widths_must_agree_where_they_are_literals() {
    let found = errors(
        "",
        "struct M { fc1: Linear<64, 16>, act: ReLU, drop: Dropout, fc2: Linear<32, 10> }",
    );
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(
        found[0].starts_with("`fc2` takes 32 inputs, but `fc1` before it gives 16"),
        "{found:?}"
    );
    assert_eq!(found[1], "`fc1` gives 16 outputs here, and `fc2` takes 32");
    // through groups and norms, by their first layer
    let found = errors(
        "",
        "struct M { a: PaiSequential<Conv2d<1, 4, 3>, BatchNorm2D<4>>, p: MaxPool2d<2>, \
         b: Conv2d<8, 8, 3> }",
    );
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found[0].contains("`b` takes 8 inputs, but `a` before it gives 4"));
    // what the macro cannot decide is left to rustc: const parameters, a flatten between,
    // nested models, skipped fields, a forward pass of the user's own
    for ok in [
        "struct M<const H: usize> { a: Linear<2, H>, b: Linear<H, 3> }",
        "struct M<const H: usize> { a: Linear<2, H>, b: Linear<5, 3> }",
        "struct M { a: Conv2d<1, 4, 3>, f: Flatten2D, b: Linear<100, 3> }",
        "struct M { a: Linear<2, 4>, n: Inner, b: Linear<7, 3> }",
        "struct M { a: Linear<2, 4>, #[pai(skip)] s: Linear<9, 9>, b: Linear<4, 3> }",
        "struct M { a: Linear<2, 4>, b: Linear<4, 3>, c: Linear<3, 1> }",
    ] {
        assert!(errors("", ok).is_empty(), "{ok}: {:?}", errors("", ok));
    }
    assert!(errors(
        "custom_forward",
        "struct M { a: Linear<2, 4>, b: Linear<7, 3> }"
    )
    .is_empty());
}
