//! The confirm dialog: from/to slots with versions and health, and the gate's verdict.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Wrap};

use crate::app::{App, Confirm};
use crate::config::ConfirmMode;
use crate::keymap::Action;

pub fn draw(f: &mut Frame, area: Rect, app: &App, c: &Confirm) {
    let t = &app.theme;
    let Some(env) = app.envs.get(c.env) else {
        return;
    };
    let mut lines = vec![Line::from(vec![
        Span::styled("environment ", t.dim),
        Span::styled(env.config.name.clone(), t.accent),
    ])];
    if let Some(why) = &c.why {
        lines.push(Line::styled(format!("asks because {why}"), t.warning));
    }
    let plan = app.confirm_plan(c);
    if let Some(p) = &plan {
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
    let gate_ok = plan.as_ref().is_none_or(|p| p.passes());
    if let Some(h) = env.locked_by_other() {
        lines.push(Line::styled(
            format!("⚠ locked by {}", h.describe()),
            t.warning,
        ));
    }
    if c.mode == ConfirmMode::TypeName {
        lines.push(Line::from(vec![
            Span::styled("type the environment's name: ", t.text),
            Span::styled(format!("{}▏", c.typed), t.accent),
        ]));
    }
    let k = |a: Action| app.keymap.first_key(a);
    let all = |a: Action| app.keymap.keys(a).join("/");
    let (go, cancel) = (all(Action::Confirm), all(Action::Cancel));
    // Bound letters count only once the name is typed (before that they are letters of it).
    let then = if c.mode == ConfirmMode::TypeName {
        "type the name, then "
    } else {
        ""
    };
    let past_warmup = matches!(
        c.what,
        crate::app::Confirmed::Op(crate::ops::OpKind::Swap { .. })
    ) && env.warmup_refused();
    let mut keys = match gate_ok {
        true if past_warmup => format!(
            "{then}{go} confirm · {} forces past the failed warm-up (logged as FORCED) · \
             {cancel} cancel",
            k(Action::Force)
        ),
        true => format!("{then}{go} confirm · {cancel} cancel"),
        false => format!(
            "gate refuses (re-checked on every poll) · {then}{} forces it (logged as FORCED) · \
             {cancel} cancels",
            k(Action::Force)
        ),
    };
    if env.locked_by_other().is_some() {
        keys.push_str(&format!(
            " · {} takes the lock over (their watch ends)",
            k(Action::TakeOver)
        ));
    }
    lines.push(Line::styled(keys, if gate_ok { t.ok } else { t.warning }));
    // Height with wrapped lines counted, so the key hint is never cut off.
    let inner = usize::from(76.min(area.width).saturating_sub(2)).max(1);
    let rows: usize = lines.iter().map(|l| l.width().max(1).div_ceil(inner)).sum();
    let r = super::centered(area, 76, rows as u16 + 2);
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
