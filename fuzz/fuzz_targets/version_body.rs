//! A version endpoint's body, read as JSON (with and without a pointer) or plain text.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    for pointer in [None, Some("/version"), Some("/build/v")] {
        let _ = cutover::probe::parse_version(body, pointer);
    }
});
