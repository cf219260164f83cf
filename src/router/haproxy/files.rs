//! The files HAProxy reads when it starts or reloads: the map file and the server-state
//! file. Runtime changes through the socket are lost on a reload unless these are written
//! too, so the driver rewrites them (atomically) after each change, and reports when the
//! runtime state and the files differ.

use std::collections::BTreeMap;
use std::path::Path;

use color_eyre::eyre::{Result, eyre};

use super::stats::{ServerState, parse_servers_state_file};
use crate::model::AdminState;

/// Write a file atomically ([`crate::router::write_atomic`]: a temp file beside it, fsync,
/// rename over the old one, keeping its permissions), off the async runtime.
pub async fn atomic_write(path: &Path, contents: String) -> Result<()> {
    let path = path.to_path_buf();
    let p = path.clone();
    tokio::task::spawn_blocking(move || crate::router::write_atomic(&p, contents.as_bytes(), None))
        .await
        .map_err(|e| eyre!("writing {} did not finish: {e}", path.display()))?
        .map_err(|e| {
            eyre!("{e:#}; check that cutover's user may write that file and its directory")
        })
}

/// The key and value of a map-file line, or None for blank lines and comments.
fn map_line(line: &str) -> Option<(&str, &str)> {
    let t = line.trim();
    if t.is_empty() || t.starts_with('#') {
        return None;
    }
    let (k, v) = t.split_once(char::is_whitespace).unwrap_or((t, ""));
    Some((k, v.trim()))
}

/// Read a map file's entries (missing file: none).
pub fn read_map(text: &str) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for (k, v) in text.lines().filter_map(map_line) {
        m.entry(k.to_string()).or_insert_with(|| v.to_string());
    }
    m
}

/// The map file's new text: every line kept as it is, except the lines of the `managed` keys,
/// which get the runtime value (or go, when the runtime map no longer has the key); managed
/// keys the file lacks are appended.
pub fn merge_map(old: &str, runtime: &[(String, String)], managed: &[&str]) -> String {
    let value = |k: &str| runtime.iter().find(|(rk, _)| rk == k).map(|(_, v)| v);
    let mut written: Vec<&str> = Vec::new();
    let mut out = String::new();
    for line in old.lines() {
        match map_line(line) {
            Some((k, _)) if managed.contains(&k) => {
                if let Some(v) = value(k)
                    && !written.contains(&k)
                {
                    out.push_str(&format!("{k} {v}\n"));
                    written.push(k);
                }
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    for k in managed {
        if !written.contains(k)
            && let Some(v) = value(k)
        {
            out.push_str(&format!("{k} {v}\n"));
        }
    }
    out
}

/// Notes for managed keys whose value in the file differs from the runtime map.
pub fn map_drift(
    file: &Path,
    text: &str,
    runtime: &[(String, String)],
    managed: &[&str],
) -> Vec<String> {
    let disk = read_map(text);
    let mut notes = Vec::new();
    for k in managed {
        let run = runtime
            .iter()
            .find(|(rk, _)| rk == k)
            .map(|(_, v)| v.as_str());
        let on_disk = disk.get(*k).map(String::as_str);
        if run != on_disk {
            notes.push(format!(
                "drift: the map file {} says `{k}` -> {} but HAProxy runs `{k}` -> {}; a reload \
                 would bring back the file's value (a change through cutover rewrites the file)",
                file.display(),
                on_disk.unwrap_or("(nothing)"),
                run.unwrap_or("(nothing)"),
            ));
        }
    }
    notes
}

/// Notes for servers whose admin state in the server-state file differs from HAProxy's.
pub fn state_drift(
    file: &Path,
    text: &str,
    runtime: &[ServerState],
    managed: &[(String, String)],
) -> Vec<String> {
    if text.trim().is_empty() {
        return vec![format!(
            "the server-state file {} is empty: a reload would start every server in the \
             state haproxy.cfg gives it (cutover writes the file at its next change of a \
             server's state: a drain, an undrain...)",
            file.display()
        )];
    }
    let disk = match parse_servers_state_file(text) {
        Ok(d) => d,
        Err(e) => {
            return vec![format!(
                "the server-state file {} cannot be read ({e}); a reload would not keep the \
                 servers' states",
                file.display()
            )];
        }
    };
    let find = |rows: &[ServerState], b: &str, s: &str| {
        rows.iter()
            .find(|r| r.backend == b && r.server == s)
            .map(|r| r.admin())
    };
    let mut notes = Vec::new();
    for (b, s) in managed {
        let (run, on_disk) = (find(runtime, b, s), find(&disk, b, s));
        if let Some(run) = run
            && on_disk != Some(run)
        {
            notes.push(format!(
                "drift: the server-state file {} says {b}/{s} is {} but HAProxy has it {run}; a \
                 reload would bring back the file's state (a change through cutover rewrites the \
                 file)",
                file.display(),
                on_disk.map_or("absent", AdminState::label),
            ));
        }
    }
    notes
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    fn rt(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn merge_keeps_comments_and_other_keys_and_updates_managed_ones() {
        let old = "# slots\nlive be_blue\nother x y\npreview   be_green\nlive.resume be_blue\n";
        let new = merge_map(
            old,
            &rt(&[
                ("live", "be_green"),
                ("preview", "be_green"),
                ("other", "z"),
            ]),
            &["live", "preview", "live.resume"],
        );
        assert_eq!(new, "# slots\nlive be_green\nother x y\npreview be_green\n");
        let appended = merge_map("", &rt(&[("live", "be_blue")]), &["live", "preview"]);
        assert_eq!(appended, "live be_blue\n");
    }

    #[test]
    fn an_empty_or_foreign_state_file_is_named_as_the_file() {
        let f = Path::new("/var/lib/haproxy/server-state");
        let notes = state_drift(f, "", &[], &[]);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].contains("server-state is empty"), "{notes:?}");
        assert!(!notes[0].contains("show servers state"), "{notes:?}");
        let notes = state_drift(f, "2\n", &[], &[]);
        assert!(notes[0].contains("it holds \"2\""), "{notes:?}");
        assert!(!notes[0].contains("answered"), "{notes:?}");
    }

    #[test]
    fn drift_is_reported_per_key() {
        let f = Path::new("/etc/haproxy/slots.map");
        let notes = map_drift(
            f,
            "live be_blue\npreview be_green\n",
            &rt(&[("live", "be_green"), ("preview", "be_green")]),
            &["live", "preview"],
        );
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].contains("`live` -> be_blue"), "{notes:?}");
        assert!(
            notes[0].contains("HAProxy runs `live` -> be_green"),
            "{notes:?}"
        );
        assert!(
            map_drift(
                f,
                "live be_green\n",
                &rt(&[("live", "be_green")]),
                &["live"]
            )
            .is_empty()
        );
    }

    #[test]
    fn server_state_drift_compares_admin_states() {
        let file = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state\n3 be_app 1 blue 127.0.0.1 2 0\n3 be_app 2 green 127.0.0.1 2 8\n";
        let runtime = vec![
            ServerState {
                backend: "be_app".into(),
                server: "blue".into(),
                op_state: 2,
                admin_state: 8,
                since: 0,
                weight: None,
            },
            ServerState {
                backend: "be_app".into(),
                server: "green".into(),
                op_state: 2,
                admin_state: 8,
                since: 0,
                weight: None,
            },
        ];
        let managed = vec![
            ("be_app".to_string(), "blue".to_string()),
            ("be_app".to_string(), "green".to_string()),
        ];
        let notes = state_drift(
            Path::new("/var/lib/haproxy/state"),
            file,
            &runtime,
            &managed,
        );
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].contains("be_app/blue is ready but HAProxy has it drain"));
    }

    #[tokio::test]
    async fn atomic_write_replaces_and_keeps_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::TempDir::new().expect("tempdir");
        let p = dir.path().join("slots.map");
        std::fs::write(&p, "live be_blue\n").expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        atomic_write(&p, "live be_green\n".into())
            .await
            .expect("written");
        assert_eq!(
            std::fs::read_to_string(&p).expect("read"),
            "live be_green\n"
        );
        let mode = std::fs::metadata(&p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 1);
        let err = atomic_write(&dir.path().join("no/such/dir/x"), String::new())
            .await
            .expect_err("no dir");
        assert!(format!("{err:#}").contains("cannot write"), "{err:#}");
    }
}
