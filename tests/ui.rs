//! Compile-time behaviour of `#[perforated]`: what must compile, and every mistake it reports.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("ui-tests/pass/*.rs");
    t.compile_fail("ui-tests/fail/*/*.rs");
}
