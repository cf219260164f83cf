//! The README's config examples are the tested ones: every block in its Routers section is a
//! block of a docs/<kind>.md file (which the driver tests start real proxies with), and the
//! README's general config example parses.

mod common;

const README: &str = include_str!("../README.md");

#[test]
fn every_router_example_in_the_readme_is_a_tested_doc_block() {
    let start = README.find("<!-- ROUTERS -->").expect("routers marker");
    let end = README.find("<!-- /ROUTERS -->").expect("end marker");
    let section = &README[start..end];
    let docs: String = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/docs"))
        .expect("docs/")
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "md"))
        .map(|e| std::fs::read_to_string(e.path()).expect("read doc"))
        .collect();
    let found = common::fenced_blocks(section);
    assert!(found.len() >= 6, "the Routers section lost its examples");
    for (lang, body) in found {
        assert!(
            docs.contains(&body),
            "this ```{lang} block of README.md is in no docs/*.md:\n{body}"
        );
    }
    for kind in ["embedded", "haproxy", "nginx", "apache", "caddy", "exec"] {
        assert!(
            section.contains(&format!("kind = \"{kind}\"")),
            "README has no {kind} example"
        );
    }
}

#[test]
fn the_readme_config_reference_parses() {
    let (_, toml) = common::fenced_blocks(README)
        .into_iter()
        .find(|(l, b)| {
            l == "toml" && b.contains("[settings]") && b.contains("[[environment.slot]]")
        })
        .expect("the config reference block");
    let c = cutover::config::parse(&toml, std::path::Path::new("README.md"));
    assert!(c.is_ok(), "{:?}", c.err());
}

#[test]
fn every_picture_the_readme_shows_exists() {
    let mut n = 0;
    for part in README.split("](screenshots/").skip(1) {
        let name = part.split(')').next().expect("a file name");
        let path = format!("{}/screenshots/{name}", env!("CARGO_MANIFEST_DIR"));
        assert!(
            std::path::Path::new(&path).is_file(),
            "README shows {name}, which is missing: run scripts/screenshots"
        );
        n += 1;
    }
    assert!(n >= 8, "the README should show the screenshots (found {n})");
}

#[test]
fn the_readme_hooks_example_is_complete_and_parses() {
    let (_, toml) = common::fenced_blocks(README)
        .into_iter()
        .find(|(l, b)| l == "toml" && b.contains("warmup_paths = [") && b.contains("kind = "))
        .expect("the hooks example in Operations");
    let c = cutover::config::parse(&toml, std::path::Path::new("README.md"))
        .unwrap_or_else(|e| panic!("{e}\n{toml}"));
    let h = &c.environments[0].hooks;
    assert!(h.has_warmup() && h.has_smoke());
    assert!(!h.warmup.paths.is_empty() && !h.smoke.paths.is_empty());
    let keys: Vec<&str> = h.commands().into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        keys,
        [
            "warmup_command",
            "smoke",
            "on_done",
            "on_rollback",
            "on_failed"
        ]
    );
    assert!(!h.pass_env.is_empty());
}
