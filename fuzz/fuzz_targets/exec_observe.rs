//! What an exec router's observe command prints.
#![no_main]
use libfuzzer_sys::fuzz_target;

const ENV: &str = "[[environment]]\nname = \"shop\"\n[[environment.slot]]\nname = \"blue\"\n\
                   address = \"http://127.0.0.1:9001\"\n[[environment.slot]]\nname = \"green\"\n\
                   address = \"http://127.0.0.1:9002\"\n";

fuzz_target!(|out: &str| {
    if let Ok(mut c) = cutover::config::parse(ENV, std::path::Path::new("fuzz.toml")) {
        let env = c.environments.remove(0);
        let _ = cutover::router::exec::parse_observe(out, &env.slots);
    }
});
