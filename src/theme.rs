//! Themes: named styles that widgets ask for (`theme.role(Role::Live)`); widgets never use a
//! raw colour.
//!
//! The built-in themes are the files in themes/, compiled in. A user theme (a name found in
//! `$XDG_CONFIG_HOME/cutover/themes/NAME.toml`, or a path) is laid over the dark theme, so it
//! sets only the fields it wants. `NO_COLOR` gives a monochrome theme; roles and health still
//! carry labels and symbols.

use std::path::{Path, PathBuf};

use ratatui::style::{Color, Modifier, Style};
use serde::Deserialize;

use crate::envview::Level;
use crate::model::{Health, Role};

const BUILTIN: [(&str, &str); 4] = [
    ("dark", include_str!("../themes/dark.toml")),
    ("light", include_str!("../themes/light.toml")),
    (
        "high-contrast",
        include_str!("../themes/high-contrast.toml"),
    ),
    ("colorblind", include_str!("../themes/colorblind.toml")),
];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleColors {
    live: String,
    preview: String,
    idle: String,
    draining: String,
    maintenance: String,
    unknown: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct HealthColors {
    up: String,
    degraded: String,
    down: String,
    unknown: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct UiColors {
    text: String,
    dim: String,
    title: String,
    border: String,
    border_focus: String,
    selected_bg: String,
    ok: String,
    warning: String,
    error: String,
    accent: String,
    bar_bg: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ThemeFile {
    roles: RoleColors,
    health: HealthColors,
    ui: UiColors,
}

/// Resolved styles.
#[derive(Debug, Clone, PartialEq)]
pub struct Theme {
    pub name: String,
    roles: [Style; 6],
    healths: [Style; 4],
    pub text: Style,
    pub dim: Style,
    pub title: Style,
    pub border: Style,
    pub border_focus: Style,
    pub selected: Style,
    pub ok: Style,
    pub warning: Style,
    pub error: Style,
    pub accent: Style,
    pub bar: Style,
}

impl Theme {
    /// The alarm style: the error colour, reversed and bold (the one-key rollback hint).
    pub fn alarm(&self) -> Style {
        self.error
            .add_modifier(ratatui::style::Modifier::BOLD | ratatui::style::Modifier::REVERSED)
    }

    pub fn role(&self, r: Role) -> Style {
        let i = match r {
            Role::Live => 0,
            Role::Preview => 1,
            Role::Idle => 2,
            Role::Draining => 3,
            Role::Maintenance => 4,
            Role::Unknown => 5,
        };
        self.roles[i]
    }

    pub fn health(&self, h: Health) -> Style {
        let i = match h {
            Health::Up => 0,
            Health::Degraded => 1,
            Health::Down => 2,
            Health::Unknown => 3,
        };
        self.healths[i]
    }

    /// The style of a message of this level (status line, event pane).
    pub fn level(&self, l: Level) -> Style {
        match l {
            Level::Info => self.text,
            Level::Good => self.ok,
            Level::Warn => self.warning,
            Level::Bad => self.error,
        }
    }

    /// The names of the built-in themes.
    pub fn builtin_names() -> Vec<&'static str> {
        BUILTIN.iter().map(|(n, _)| *n).collect()
    }

    /// The default dark theme (always valid).
    pub fn dark() -> Theme {
        match Theme::load("dark") {
            Ok(t) => t,
            Err(_) => Theme::monochrome(),
        }
    }

    /// No colours at all (for `NO_COLOR`): emphasis by bold, reverse and symbols.
    pub fn monochrome() -> Theme {
        let s = Style::default();
        let b = s.add_modifier(Modifier::BOLD);
        Theme {
            name: "monochrome".into(),
            roles: [b, b, s, b, b.add_modifier(Modifier::ITALIC), s],
            healths: [s, b, b.add_modifier(Modifier::REVERSED), s],
            text: s,
            dim: s,
            title: b,
            border: s,
            border_focus: b,
            selected: s.add_modifier(Modifier::REVERSED),
            ok: s,
            warning: b,
            error: b.add_modifier(Modifier::REVERSED),
            accent: b,
            bar: s,
        }
    }

    /// Load a theme by built-in name, user theme name, or path. Errors say what is wrong and
    /// what themes exist.
    pub fn load(name_or_path: &str) -> Result<Theme, String> {
        let base = BUILTIN[0].1;
        if let Some((n, src)) = BUILTIN.iter().find(|(n, _)| *n == name_or_path) {
            return parse(n, src, base, Path::new(&format!("themes/{n}.toml")));
        }
        let path = if name_or_path.ends_with(".toml") || name_or_path.contains('/') {
            PathBuf::from(name_or_path)
        } else {
            crate::paths::config_dir()
                .join("themes")
                .join(format!("{name_or_path}.toml"))
        };
        match std::fs::read_to_string(&path) {
            Ok(src) => parse(name_or_path, &src, base, &path),
            Err(e) => Err(format!(
                "unknown theme `{name_or_path}` ({}: {e}); built-in themes: {}",
                path.display(),
                Theme::builtin_names().join(", ")
            )),
        }
    }
}

/// Lay `src` over `base` (table by table) and resolve every colour.
fn parse(name: &str, src: &str, base: &str, path: &Path) -> Result<Theme, String> {
    let locate = |e: toml::de::Error, s: &str| {
        let (l, c) = crate::config::line_col(s, e.span().map_or(0, |r| r.start));
        format!("{}:{l}:{c}: {}", path.display(), e.message().trim())
    };
    let mut merged: toml::Table = toml::from_str(base).map_err(|e| locate(e, base))?;
    let user: toml::Table = toml::from_str(src).map_err(|e| locate(e, src))?;
    for (k, v) in user {
        match (merged.get_mut(&k), v) {
            (Some(toml::Value::Table(into)), toml::Value::Table(from)) => {
                for (k2, v2) in from {
                    into.insert(k2, v2);
                }
            }
            (_, v) => {
                merged.insert(k, v);
            }
        }
    }
    // Where `table.key` is in the user's file, as `path:line:column`.
    let at = |table: &str, key: &str| {
        let pos = crate::config::table_value(src, table, key)
            .map(|r| crate::config::line_col(src, r.start));
        match pos {
            Some((l, c)) => format!("{}:{l}:{c}", path.display()),
            None => path.display().to_string(),
        }
    };
    let f: ThemeFile = merged.try_into().map_err(|e: toml::de::Error| {
        let m = e.message().trim().to_string();
        // serde names the unknown key but not its table; find the first table that has it.
        let key = m
            .split_once("unknown field `")
            .and_then(|(_, r)| r.split('`').next())
            .unwrap_or_default()
            .to_string();
        let place = ["roles", "health", "ui"]
            .iter()
            .map(|t| at(t, &key))
            .find(|p| p.contains(':'))
            .unwrap_or_else(|| path.display().to_string());
        format!("{place}: {m}")
    })?;
    let c = |field: &str, v: &str| -> Result<Color, String> {
        v.parse::<Color>().map_err(|_| {
            let (table, key) = field.split_once('.').unwrap_or(("", field));
            format!(
                "{}: field `{field}`: \"{v}\" is not a colour (use a name like \"red\", \"#rrggbb\" or 0-255)",
                at(table, key)
            )
        })
    };
    let fg = |field: &str, v: &str| c(field, v).map(|col| Style::default().fg(col));
    let bold = |field: &str, v: &str| fg(field, v).map(|s| s.add_modifier(Modifier::BOLD));
    let r = &f.roles;
    let h = &f.health;
    let u = &f.ui;
    Ok(Theme {
        name: name.to_string(),
        roles: [
            bold("roles.live", &r.live)?,
            bold("roles.preview", &r.preview)?,
            fg("roles.idle", &r.idle)?,
            bold("roles.draining", &r.draining)?,
            bold("roles.maintenance", &r.maintenance)?,
            fg("roles.unknown", &r.unknown)?,
        ],
        healths: [
            fg("health.up", &h.up)?,
            fg("health.degraded", &h.degraded)?,
            bold("health.down", &h.down)?,
            fg("health.unknown", &h.unknown)?,
        ],
        text: fg("ui.text", &u.text)?,
        dim: fg("ui.dim", &u.dim)?,
        title: bold("ui.title", &u.title)?,
        border: fg("ui.border", &u.border)?,
        border_focus: fg("ui.border_focus", &u.border_focus)?,
        selected: Style::default().bg(c("ui.selected_bg", &u.selected_bg)?),
        ok: fg("ui.ok", &u.ok)?,
        warning: bold("ui.warning", &u.warning)?,
        error: bold("ui.error", &u.error)?,
        accent: fg("ui.accent", &u.accent)?,
        bar: Style::default().bg(c("ui.bar_bg", &u.bar_bg)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_theme_loads() {
        for n in Theme::builtin_names() {
            let t = Theme::load(n).unwrap_or_else(|e| panic!("{n}: {e}"));
            assert_eq!(t.name, n);
        }
    }

    #[test]
    fn a_user_theme_overrides_only_what_it_sets() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("mine.toml");
        std::fs::write(&p, "[roles]\nlive = \"#ff0000\"\n").expect("write");
        let t = Theme::load(p.to_str().expect("utf8")).expect("loads");
        assert_eq!(t.role(Role::Live).fg, Some(Color::Rgb(255, 0, 0)));
        assert_eq!(t.role(Role::Preview), Theme::dark().role(Role::Preview));
    }

    #[test]
    fn bad_themes_are_clear_errors() {
        let e = Theme::load("no-such-theme").expect_err("unknown");
        assert!(e.contains("built-in themes: dark, light"), "{e}");
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("bad.toml");
        std::fs::write(&p, "[roles]\nlive = \"notacolour\"\n").expect("write");
        let e = Theme::load(p.to_str().expect("utf8")).expect_err("bad colour");
        assert!(
            e.contains("roles.live") && e.contains("not a colour"),
            "{e}"
        );
        assert!(e.contains("bad.toml:2:8: field `roles.live`"), "{e}");
        std::fs::write(&p, "[ui]\ntext = \"red\"\nborderr = \"red\"\n").expect("write");
        let e = Theme::load(p.to_str().expect("utf8")).expect_err("unknown field");
        assert!(e.contains("bad.toml:3:11: unknown field `borderr`"), "{e}");
        std::fs::write(&p, "[roles\nlive = 1\n").expect("write");
        let e = Theme::load(p.to_str().expect("utf8")).expect_err("malformed");
        assert!(e.contains("bad.toml:1:"), "{e}");
    }
}
