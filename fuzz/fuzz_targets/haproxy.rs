//! HAProxy's answers: `show stat`, `show servers state`, map output and map files.
#![no_main]
use cutover::router::haproxy;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = haproxy::parse_stat(text);
    let _ = haproxy::parse_servers_state(text);
    let _ = haproxy::parse_map(text);
    let _ = haproxy::parse_backends(text);
    let _ = haproxy::read_map(text);
});
