//! Key names as a user writes them in `[keys]`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|key: &str| {
    let _ = cutover::keymap::parse_key(key);
    let table = std::collections::BTreeMap::from([("swap".to_string(), vec![key.to_string()])]);
    let _ = cutover::keymap::Keymap::with_overrides(&table);
});
