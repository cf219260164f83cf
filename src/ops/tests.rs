use super::gate::gate_passed;
use super::simple::check_simple;
use super::*;

fn input(h: &[(&str, &[Health], Option<&str>)]) -> GateInput {
    let mut i = GateInput::default();
    for (s, hs, v) in h {
        i.health.insert(s.to_string(), hs.to_vec());
        i.versions.insert(s.to_string(), v.map(str::to_string));
    }
    i
}

#[test]
fn gate_needs_n_healthy_checks_a_known_and_new_version() {
    use Health::*;
    let ok = input(&[
        ("blue", &[Up, Up, Up], Some("1")),
        ("green", &[Down, Up, Up, Up], Some("2")),
    ]);
    assert!(gate(3, Some("blue"), "green", &ok, true).passes());

    let flappy = input(&[
        ("blue", &[Up], Some("1")),
        ("green", &[Up, Down, Up], Some("2")),
    ]);
    let p = gate(3, Some("blue"), "green", &flappy, true);
    assert_eq!(p.failed_checks()[0].name, "health");
    assert!(
        p.failed_checks()[0].detail.contains("✔ ✘ ✔"),
        "{:?}",
        p.checks
    );

    let too_few = input(&[("green", &[Up, Up], Some("2"))]);
    assert!(!gate(3, None, "green", &too_few, true).passes());

    let unknown = input(&[("green", &[Up, Up, Up], None)]);
    assert_eq!(
        gate(3, None, "green", &unknown, true).failed_checks()[0].name,
        "version"
    );

    let same = input(&[
        ("blue", &[Up; 3], Some("1")),
        ("green", &[Up; 3], Some("1")),
    ]);
    let p = gate(3, Some("blue"), "green", &same, true);
    assert_eq!(p.failed_checks()[0].name, "new version");
    // Rollback does not check for a new version.
    assert!(gate(3, Some("blue"), "green", &same, false).passes());
}

#[test]
fn a_router_vouching_for_the_slot_lets_one_healthy_check_stand_for_the_streak() {
    use Health::*;
    let mut one = input(&[("blue", &[Up], Some("1")), ("green", &[Up], Some("2"))]);
    let p = gate(3, Some("blue"), "green", &one, false);
    assert_eq!(
        p.failed_checks()[0].name,
        "health",
        "one check is not three"
    );
    one.vouched.insert(
        "green".into(),
        "haproxy `lb`'s own checks say UP (L7OK)".into(),
    );
    let p = gate(3, Some("blue"), "green", &one, false);
    assert!(p.passes(), "{:?}", p.checks);
    assert_eq!(
        gate_passed(&p),
        "all checks passed (healthy now, and haproxy `lb`'s own checks say UP (L7OK))"
    );
    // The router's word does not overrule cutover's own check of the slot now.
    let mut down_now = input(&[("blue", &[Up], Some("1")), ("green", &[Down], Some("2"))]);
    down_now.vouched = one.vouched.clone();
    assert!(!gate(3, Some("blue"), "green", &down_now, false).passes());
}

#[test]
fn checks_read_naturally_and_say_when_they_cannot_compare() {
    use Health::*;
    let live_unknown = input(&[("blue", &[Up], None), ("green", &[Up; 3], Some("2"))]);
    let p = gate(3, Some("blue"), "green", &live_unknown, true);
    let new = p.checks.iter().find(|c| c.name == "new version");
    assert_eq!(
        new.map(|c| (c.ok, c.detail.as_str())),
        Some((true, "live slot's version unknown: cannot compare"))
    );
    let p = gate(3, None, "green", &live_unknown, true);
    assert!(p.passes(), "{:?}", p.checks);
    assert!(
        p.checks[2].detail.contains("no live slot known"),
        "{:?}",
        p.checks
    );

    let mut s = RouterState::default();
    for (name, admin) in [("blue", AdminState::Drain), ("green", AdminState::Maint)] {
        s.slots.insert(
            name.into(),
            crate::model::SlotRoute {
                admin,
                ..Default::default()
            },
        );
    }
    let drain = |t: &str| OpKind::Drain(Target::slot(t));
    let (ok, msg) = check_simple(&drain("blue"), std::slice::from_ref(&s));
    assert!(ok && msg.ends_with("is drained"), "{msg}");
    let (_, msg) = check_simple(&drain("green"), std::slice::from_ref(&s));
    assert!(msg.ends_with("is in maintenance"), "{msg}");
    let (ok, msg) = check_simple(&OpKind::Undrain(Target::slot("blue")), &[s]);
    assert!(!ok && msg.ends_with("is drained"), "{msg}");
}
