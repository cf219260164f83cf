use super::*;

#[test]
fn memory_survives_a_new_store_and_each_environment_has_its_own() {
    let d = tempfile::tempdir().expect("tempdir");
    let s = Store::new(d.path().to_path_buf());
    let g = s.lock("shop", &LockInfo::me("swap", "1")).expect("lock");
    s.update(&g, |m| m.previous_live = Some("blue".into()))
        .expect("write");
    let g2 = s.lock("api", &LockInfo::me("swap", "2")).expect("lock");
    s.update(&g2, |m| m.previous_live = Some("green".into()))
        .expect("write");
    let again = Store::new(d.path().to_path_buf());
    assert_eq!(again.env("shop").previous_live.as_deref(), Some("blue"));
    assert_eq!(again.env("api").previous_live.as_deref(), Some("green"));
    assert_eq!(again.load().environments.len(), 2);
}

#[test]
fn a_held_lock_names_its_holder_and_is_free_once_dropped() {
    let d = tempfile::tempdir().expect("tempdir");
    let s = Store::new(d.path().to_path_buf());
    let g = s
        .lock("shop", &LockInfo::me("swap", "a1"))
        .expect("first lock");
    let e = s
        .lock("shop", &LockInfo::me("rollback", "b2"))
        .expect_err("second lock must fail");
    assert!(
        matches!(&e, LockError::Held(h) if h.operation == "swap" && h.op_id == "a1"),
        "{e:?}"
    );
    assert_eq!(s.holder("shop").map(|h| h.op_id), Some("a1".into()));
    drop(g);
    assert_eq!(s.holder("shop"), None);
    // What a dead holder left in the file is not a lock.
    std::fs::write(
        d.path().join("shop.lock"),
        serde_json::to_vec(&LockInfo::me("swap", "dead")).expect("json"),
    )
    .expect("write");
    assert_eq!(s.holder("shop"), None);
    let _g = s.lock("shop", &LockInfo::me("swap", "c3")).expect("free");
}

#[test]
fn a_follower_is_shown_each_step_once_and_a_new_operation_from_its_start() {
    let mut a = Activity::of(&LockInfo::me("swap", "a1"));
    a.step("plan", None, "reading the routers");
    let first = a.clone();
    let l = a.lines_since(None);
    assert_eq!(l.len(), 2, "{l:?}");
    assert!(
        l[0].starts_with("swap #a1 by ") && l[0].contains(": started "),
        "{l:?}"
    );
    assert!(l[1].ends_with(": plan ... reading the routers"), "{l:?}");
    // A running step's line is replaced by its end: a follower that did not see the
    // running line in between sees only the end.
    a.step("plan", Some(true), "blue → green");
    a.step("apply", None, "switching");
    a.step("apply", Some(true), "switched");
    a.result = Some("done".into());
    a.message = Some("`green` is live".into());
    let l = a.lines_since(Some(&first));
    assert_eq!(l.len(), 3, "{l:?}");
    assert!(l[0].ends_with(": plan ok blue → green"), "{l:?}");
    assert!(l[1].ends_with(": apply ok switched"), "{l:?}");
    assert!(l[2].ends_with(": ended done: `green` is live"), "{l:?}");
    assert_eq!(a.lines_since(Some(&a)), Vec::<String>::new());
    // Another operation: shown from its start.
    let b = Activity::of(&LockInfo::me("rollback", "b2"));
    assert!(b.lines_since(Some(&a))[0].contains("rollback #b2"));
    // The steps kept are capped; the counter goes on.
    for i in 0..100 {
        a.step("watch", Some(true), &format!("tick {i}"));
    }
    assert_eq!(a.steps.len(), crate::records::ACTIVITY_STEPS);
}

#[test]
fn names_stay_inside_the_state_dir() {
    let s = Store::new(PathBuf::from("/state"));
    for name in ["../../evil", "..", ".hidden", "a/b"] {
        let p = s.file(name, ".lock");
        assert_eq!(p.parent(), Some(Path::new("/state")), "{name}: {p:?}");
    }
}

#[test]
fn a_journal_reads_and_writes_its_slots_as_from_and_to() {
    let text = r#"{"op_id":"0badf00d","operation":"swap","action":"swap blue → green","environment":"shop","user":"bob@bastion","pid":77,"started":"t0","from":"blue","to":"green","target":null,"routers":[{"name":"edge","before":"blue","result":"changed"}]}"#;
    let j: Journal = serde_json::from_str(text).expect("journal");
    assert_eq!(j.slots.from.as_deref(), Some("blue"));
    assert_eq!(j.slots.to.as_deref(), Some("green"));
    assert_eq!(j.pid, 77);
    assert_eq!(serde_json::to_string(&j).expect("json"), text);
}
