//! Mistakes that must not compile, with the message a user sees (`tests/compile_fail/*.stderr`).
//! Regenerate the expected messages with `TRYBUILD=overwrite cargo test --test compile_fail`
//! after a deliberate change, and read the diff.

#[test]
fn mistakes_are_compile_errors() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/compile_fail/*.rs");
}
