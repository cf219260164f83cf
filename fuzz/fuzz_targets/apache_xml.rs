//! Apache's balancer-manager XML.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|xml: &str| {
    let _ = cutover::router::apache::parse_balancer_manager(xml);
});
