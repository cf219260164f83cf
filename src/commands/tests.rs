use super::*;

fn world(settings: &str, env: &str, state: &std::path::Path) -> World {
    let src = format!(
        "[settings]\nstate_dir = \"{}\"\n{settings}\n\n[[environment]]\nname = \"shop\"\n{env}\n\n\
         [[environment.slot]]\nname = \"blue\"\naddress = \"http://127.0.0.1:9\"\n",
        state.display()
    );
    let config = crate::config::parse(&src, std::path::Path::new("c.toml")).expect("valid");
    World::build(config, None).expect("world")
}

#[test]
fn read_only_names_where_it_is_set_for_operations_and_drills_alike() {
    let d = tempfile::tempdir().expect("tempdir");
    let w = world("", "", d.path());
    let e = &w.engines[0];
    assert_eq!(read_only_reason(&w, e, false), None);
    let why = read_only_reason(&w, e, true).expect("the flag");
    assert!(why.contains("--read-only"), "{why}");

    let w = world("read_only = true", "", d.path());
    let why = read_only_reason(&w, &w.engines[0], false).expect("settings");
    assert!(
        why.contains("[settings]") && why.contains("c.toml"),
        "{why}"
    );

    let w = world("", "read_only = true", d.path());
    let why = read_only_reason(&w, &w.engines[0], false).expect("environment");
    assert!(why.contains("environment `shop`"), "{why}");
}
