use super::*;

#[test]
fn upstream_blocks_are_read_back_with_down_flags() {
    let t = "# c\nupstream a { server 127.0.0.1:1; server 127.0.0.1:2 down max_fails=3; }\n\
             upstream b {\n server \"h:3\" weight=2;  # node x\n}\nmap $x $y { default \"\"; }";
    let u = parse_upstreams(t);
    assert_eq!(
        u["a"],
        vec![
            ServerLine {
                addr: "127.0.0.1:1".into(),
                down: false
            },
            ServerLine {
                addr: "127.0.0.1:2".into(),
                down: true
            }
        ]
    );
    assert_eq!(u["b"][0].addr, "h:3");
    assert_eq!(u.len(), 2);
}

#[test]
fn tokens_skip_comments_and_unquote() {
    assert_eq!(
        tokenize("return 503 \"a \\\"b\\\" # c\"; # gone\nproxy_pass x;"),
        vec!["return", "503", "a \"b\" # c", ";", "proxy_pass", "x", ";"]
    );
}

/// A driver of environment `shop` (slots blue and green) with `method` over `dir`.
fn shop(method: Method, dir: &Path) -> Nginx {
    let slots = ["blue", "green"].map(|n| {
        Slot::new(
            n,
            crate::model::Address::parse(&format!("http://127.0.0.1:{}", 9000 + n.len())).unwrap(),
        )
    });
    let cfg: Config = toml::from_str(&format!(
        "dir = \"{}\"\nmethod = \"{}\"",
        dir.display(),
        method.name()
    ))
    .unwrap();
    let env = EnvSlots {
        name: "shop",
        slots: &slots,
    };
    Nginx::new("nginx", env, &cfg).unwrap()
}

fn blue_to_green(percent: u8) -> Option<Weights> {
    (percent > 0).then(|| Weights {
        live: "blue".into(),
        canary: "green".into(),
        canary_percent: percent,
    })
}

#[test]
fn a_split_is_read_back_from_the_blocks_it_writes() {
    let n = shop(Method::Include, Path::new("/srv/cutover/shop"));
    for percent in [1u8, 5, 25, 50, 99, 100] {
        let w = blue_to_green(percent).unwrap();
        let text = n.render_split(&w).unwrap();
        assert_eq!(n.parse_split(&text).unwrap(), w, "{text}");
    }
    assert_eq!(n.parse_split("upstream a { server 127.0.0.1:1; }"), None);
}

#[test]
fn a_bucket_split_is_read_back_from_the_links_it_writes() {
    let dir = tempfile::tempdir().unwrap();
    let n = shop(Method::Realpath, dir.path());
    for c in n.bucket_dirs() {
        c.perform().unwrap();
    }
    for percent in [1u8, 5, 25, 50, 99, 100, 30, 0] {
        let split = blue_to_green(percent);
        for c in n.bucket_changes(split.as_ref()) {
            c.perform().unwrap();
        }
        let mut disk = Disk {
            live: Some("blue".into()),
            ..Disk::default()
        };
        n.read_buckets(&mut disk);
        assert_eq!(disk.split, split, "{:?}", disk.notes);
        assert_eq!(disk.notes, Vec::<String>::new());
        let marker = std::fs::symlink_metadata(dir.path().join("_canary"));
        assert_eq!(marker.is_ok(), split.is_some());
    }
    // A bucket moved by hand: the share read back counts it, and a note says so.
    std::os::unix::fs::symlink("../green", dir.path().join("_split/.b50")).unwrap();
    std::fs::rename(
        dir.path().join("_split/.b50"),
        dir.path().join("_split/b50"),
    )
    .unwrap();
    let mut disk = Disk {
        live: Some("blue".into()),
        ..Disk::default()
    };
    n.read_buckets(&mut disk);
    assert_eq!(disk.split, blue_to_green(1));
    assert!(
        disk.notes[0].contains("differ from what cutover writes"),
        "{:?}",
        disk.notes
    );
}

/// A step whose link cannot be renamed (a directory is in its way) fails, names the link and
/// puts back every link it had moved: the split read back is the one before.
#[tokio::test]
async fn a_step_that_cannot_move_a_link_leaves_the_split_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let n = shop(Method::Realpath, dir.path());
    n.install("blue", Some("green")).await.unwrap();
    n.set_split("blue", "green", 25).await.unwrap();
    let blocked = dir.path().join("_split/b30");
    std::fs::remove_file(&blocked).unwrap();
    std::fs::create_dir_all(blocked.join("in-the-way")).unwrap();
    let e = format!("{:#}", n.set_split("blue", "green", 50).await.unwrap_err());
    assert!(e.contains("_split/b30"), "{e}");
    assert!(e.contains("restored"), "{e}");
    let disk = n.read_disk();
    assert_eq!(disk.split, blue_to_green(25), "{:?}", disk.notes);
    assert_eq!(
        std::fs::read_link(dir.path().join("_split/b29")).unwrap(),
        Path::new("../live")
    );
}
