//! The config loader: any text is a config or a located error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = cutover::config::parse(text, std::path::Path::new("fuzz.toml"));
});
