//! The code's layers, checked: one engine with no terminal in it, two faces on top (the TUI:
//! `tui`, `app`, `ui`, `theme`; the headless CLI: `commands`, `cli`), and no import circle
//! between the top-level modules. README's "Code layout" draws the same picture.
#![allow(clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

const TUI: [&str; 4] = ["tui", "app", "ui", "theme"];
const CLI: [&str; 2] = ["commands", "cli"];

/// Top-level module → the top-level modules its production code names (`crate::X`), comments
/// and `#[cfg(test)]` modules left out.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules: BTreeSet<String> = std::fs::read_dir(&src)
        .expect("src/")
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            Some(name.strip_suffix(".rs").unwrap_or(&name).to_string())
        })
        .filter(|m| m != "main" && m != "lib")
        .collect();
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("read dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let rel = p.strip_prefix(&src).expect("under src");
            let top = rel
                .components()
                .next()
                .and_then(|c| c.as_os_str().to_str())
                .map(|s| s.trim_end_matches(".rs").to_string())
                .expect("a name");
            if !modules.contains(&top) || rel.ends_with("tests.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&p).expect("read");
            let code = production_part(&text);
            for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
                for (i, _) in line.match_indices("crate::") {
                    let name: String = line[i + 7..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if name != top && modules.contains(&name) {
                        out.entry(top.clone()).or_default().insert(name);
                    }
                }
            }
        }
    }
    out
}

/// The file up to its inline test module (`#[cfg(test)]` then `mod NAME {`); a `mod tests;`
/// declaration cuts nothing.
fn production_part(text: &str) -> &str {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        if line.trim() == "#[cfg(test)]" {
            let rest = &text[offset + line.len()..];
            let item = rest
                .lines()
                .map(str::trim)
                .find(|l| !l.starts_with("#["))
                .unwrap_or_default();
            if item.starts_with("mod ") && item.ends_with('{') {
                return &text[..offset];
            }
        }
        offset += line.len();
    }
    text
}

#[test]
fn the_engine_imports_neither_face_and_the_faces_not_each_other() {
    let imports = imports();
    let mut wrong = Vec::new();
    for (module, uses) in &imports {
        let is_tui = TUI.contains(&module.as_str());
        let is_cli = CLI.contains(&module.as_str());
        for u in uses {
            let bad = if is_tui {
                // The TUI's state holds no drawing: app does not import ui.
                CLI.contains(&u.as_str()) && u != "cli" || (module == "app" && u == "ui")
            } else if is_cli {
                TUI.contains(&u.as_str())
            } else {
                TUI.contains(&u.as_str()) || CLI.contains(&u.as_str())
            };
            if bad {
                wrong.push(format!("{module} imports {u}"));
            }
        }
    }
    assert!(wrong.is_empty(), "layering broken: {wrong:?}");
}

#[test]
fn no_two_modules_import_each_other_even_through_others() {
    let imports = imports();
    // Every module that can reach itself is on a circle.
    let mut circles = Vec::new();
    for start in imports.keys() {
        let mut seen = BTreeSet::new();
        let mut todo: Vec<&String> = imports[start].iter().collect();
        while let Some(m) = todo.pop() {
            if m == start {
                circles.push(start.clone());
                break;
            }
            if seen.insert(m.clone())
                && let Some(next) = imports.get(m)
            {
                todo.extend(next.iter());
            }
        }
    }
    assert!(
        circles.is_empty(),
        "modules on an import circle: {circles:?}\n{imports:#?}"
    );
}
