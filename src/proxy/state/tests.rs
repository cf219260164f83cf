use super::*;

#[test]
fn every_hundred_requests_carry_the_canary_share_exactly() {
    for percent in [0u8, 1, 5, 25, 50, 99, 100] {
        for start in [0u64, 7, 1_000_003] {
            let to_canary = (start..start + 100)
                .filter(|&n| goes_to_canary(n, percent))
                .count();
            assert_eq!(to_canary, usize::from(percent), "{percent} % from {start}");
        }
        // Spread out: no 20 requests in a row are all on one side at 25 % and more.
        if (25..=75).contains(&percent) {
            let longest = (0..200u64)
                .collect::<Vec<_>>()
                .windows(20)
                .filter(|w| {
                    let c = w.iter().filter(|&&n| goes_to_canary(n, percent)).count();
                    c == 0 || c == 20
                })
                .count();
            assert_eq!(longest, 0, "{percent} %");
        }
    }
    assert_eq!(unpack_canary(pack_canary(3, 25)), Some((3, 25)));
    assert_eq!(unpack_canary(0), None);
}

#[test]
fn a_nodes_latency_is_a_moving_average_of_its_answers() {
    let address = crate::model::Address::parse("http://127.0.0.1:1").expect("an address");
    let node = parse_upstream("n", &address).expect("a node");
    node.record_latency(std::time::Duration::from_millis(1));
    assert_eq!(node.latency_us.load(Ordering::Relaxed), 1_000);
    node.record_latency(std::time::Duration::from_millis(17));
    assert_eq!(node.latency_us.load(Ordering::Relaxed), 2_000);
    for _ in 0..200 {
        node.record_latency(std::time::Duration::from_millis(5));
    }
    let settled = node.latency_us.load(Ordering::Relaxed);
    assert!((4_900..=5_000).contains(&settled), "{settled}");
}
