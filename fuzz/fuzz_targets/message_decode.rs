//! Arbitrary bytes as a protocol message and as a hello: decoded or refused, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let _ = cohort_core::__private::decode_message(input);
    let _ = cohort_core::__private::decode_hello(input);
});
