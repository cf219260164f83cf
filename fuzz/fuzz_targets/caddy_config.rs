//! A Caddy config document as the admin API returns it.
#![no_main]
use libfuzzer_sys::fuzz_target;

const ENV: &str = "[[environment]]\nname = \"shop\"\n[[environment.slot]]\nname = \"blue\"\n\
                   address = \"http://127.0.0.1:9001\"\n[[environment.slot]]\nname = \"green\"\n\
                   address = \"http://127.0.0.1:9002\"\n[[environment.router]]\nkind = \"caddy\"\n\
                   mode = \"api\"\nlive_id = \"shop_live\"\npreview_id = \"shop_preview\"\n";

fuzz_target!(|doc: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(doc) else {
        return;
    };
    let Ok(mut c) = cutover::config::parse(ENV, std::path::Path::new("fuzz.toml")) else {
        return;
    };
    let env = c.environments.remove(0);
    let Some(cutover::router::RouterConfig::Caddy(rc)) = env.routers.first() else {
        return;
    };
    if let Ok(d) = cutover::router::caddy::Driver::new("caddy".into(), &env, rc) {
        let _ = d.read_config(&value);
    }
});
