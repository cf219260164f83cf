//! The confirm dialog: from/to slots with versions and health, and the gate's verdict.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Wrap};

use crate::app::{App, Confirm};
use crate::config::ConfirmMode;

pub fn draw(f: &mut Frame, area: Rect, app: &App, c: &Confirm) {
    let t = &app.theme;
    let Some(env) = app.envs.get(c.env) else {
        return;
    };
    let mut lines = vec![Line::from(vec![
        Span::styled("environment ", t.dim),
        Span::styled(env.config.name.clone(), t.accent),
    ])];
    if let Some(p) = &c.plan {
        for (label, slot, version) in [
            ("from", p.from.as_deref(), &p.from_version),
            ("to", Some(p.to.as_str()), &p.to_version),
        ] {
            let Some(slot) = slot else { continue };
            let health = env
                .slots
                .iter()
                .find(|s| s.name == slot)
                .map(|s| s.health())
                .unwrap_or_default();
            lines.push(Line::from(vec![
                Span::styled(format!("{label:<5}"), t.dim),
                Span::styled(format!("{slot:<10}"), t.title),
                Span::styled(
                    format!(
                        "{:<14}",
                        version.as_deref().map_or("v?".to_string(), |v| format!(
                            "v{}",
                            v.trim_start_matches('v')
                        ))
                    ),
                    t.accent,
                ),
                Span::styled(
                    format!("{} {}", health.symbol(), health.label()),
                    t.health(health),
                ),
            ]));
        }
        lines.push(Line::raw(""));
        for ch in &p.checks {
            lines.push(Line::from(vec![
                Span::styled(
                    if ch.ok { " ✔ " } else { " ✘ " },
                    if ch.ok { t.ok } else { t.error },
                ),
                Span::styled(format!("{}: ", ch.name), t.text),
                Span::styled(
                    crate::redact::redact(&ch.detail),
                    if ch.ok { t.dim } else { t.error },
                ),
            ]));
        }
    }
    lines.push(Line::raw(""));
    let gate_ok = c.plan.as_ref().is_none_or(|p| p.passes());
    if c.mode == ConfirmMode::TypeName {
        lines.push(Line::from(vec![
            Span::styled("type the environment's name: ", t.text),
            Span::styled(format!("{}▏", c.typed), t.accent),
        ]));
    }
    let keys = match (gate_ok, c.mode) {
        (true, ConfirmMode::YesNo) => "y confirm · n / Esc cancel",
        (true, ConfirmMode::TypeName) => "Enter confirm · Esc cancel",
        (false, ConfirmMode::YesNo) => {
            "gate refuses · F forces it (logged as FORCED) · Esc cancels"
        }
        // F counts only once the name is typed (before that it is a letter of the name).
        (false, ConfirmMode::TypeName) => {
            "gate refuses · type the name, then F forces it (logged as FORCED) · Esc cancels"
        }
    };
    lines.push(Line::styled(keys, if gate_ok { t.ok } else { t.warning }));
    let r = super::centered(area, 76, lines.len() as u16 + 2);
    f.render_widget(Clear, r);
    f.render_widget(
        Paragraph::new(lines).wrap(Wrap { trim: false }).block(
            Block::bordered()
                .title(Span::styled(format!(" {} ", c.title), t.title))
                .border_style(t.border_focus),
        ),
        r,
    );
}
