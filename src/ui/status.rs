//! The header line (environment, warnings, clock) and the key bar (generated from the keymap).

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use crate::app::App;
use crate::keymap::Action;
use crate::timefmt;

pub fn header(f: &mut Frame, area: Rect, app: &App) {
    let t = &app.theme;
    let mut spans = vec![Span::styled(" cutover ", t.title.patch(t.bar))];
    if let Some(e) = app.env() {
        spans.push(Span::styled(format!(" {} ", e.config.name), t.accent));
        if app.envs.len() > 1 {
            spans.push(Span::styled(
                format!("({}/{}) ", app.selected_env + 1, app.envs.len()),
                t.dim,
            ));
        }
        if e.config.production {
            spans.push(Span::styled("PRODUCTION ", t.warning));
        }
        if app.read_only || e.config.read_only {
            spans.push(Span::styled("READ-ONLY ", t.warning));
        }
        if app.demo {
            spans.push(Span::styled("DEMO ", t.dim));
        }
        let warns = e.warnings().len();
        if warns > 0 {
            spans.push(Span::styled(
                format!("⚠ {warns} warning{} ", if warns > 1 { "s" } else { "" }),
                t.warning,
            ));
        }
    }
    let clock = format!("{} UTC ", timefmt::clock(app.now));
    let used: usize = spans.iter().map(|s| s.content.chars().count()).sum();
    let pad = (area.width as usize).saturating_sub(used + clock.len());
    spans.push(Span::raw(" ".repeat(pad)));
    spans.push(Span::styled(clock, t.dim));
    f.render_widget(Paragraph::new(Line::from(spans)).style(t.bar), area);
}

pub fn keybar(f: &mut Frame, area: Rect, app: &App) {
    let t = &app.theme;
    if let Some(line) = &app.command {
        let mut spans = vec![Span::styled(format!(":{line}▏"), t.accent)];
        if !app.completions.is_empty() {
            spans.push(Span::styled(
                format!("   {}", app.completions.join("  ")),
                t.dim,
            ));
        }
        f.render_widget(Paragraph::new(Line::from(spans)).style(t.bar), area);
        return;
    }
    if let Some((level, msg)) = &app.status {
        f.render_widget(
            Paragraph::new(Line::styled(format!(" {msg}"), t.level(*level))).style(t.bar),
            area,
        );
        return;
    }
    // The essentials always fit; the rest is added while there is room.
    let essential = [
        Action::Swap,
        Action::Rollback,
        Action::Drain,
        Action::Maintenance,
        Action::Help,
        Action::Quit,
    ];
    let mut optional = vec![Action::Command, Action::Filter];
    if app.demo {
        optional.splice(0..0, [Action::DemoBreak, Action::DemoSlow]);
    }
    let label = |a: Action| match a {
        Action::DemoBreak => "break/heal",
        Action::DemoSlow => "slow",
        Action::Maintenance => "maint",
        Action::Command => "cmd",
        other => other.name(),
    };
    let cost = |a: Action| app.keymap.first_key(a).chars().count() + label(a).chars().count() + 3;
    let mut room = (area.width as usize).saturating_sub(essential.iter().map(|a| cost(*a)).sum());
    let mut shown: Vec<Action> = essential[..4].to_vec();
    for a in optional {
        if cost(a) <= room {
            room -= cost(a);
            shown.push(a);
        }
    }
    shown.extend([Action::Help, Action::Quit]);
    let mut spans = Vec::new();
    // During a watch and the rollback window, `r` rolls back at once: say so, loudly.
    let hint = app
        .env()
        .and_then(|e| e.one_key_hint(&app.keymap.first_key(Action::Rollback), app.now));
    if let Some(h) = &hint {
        spans.push(Span::styled(format!(" {h} "), t.alarm()));
        spans.push(Span::raw(" "));
    }
    for a in shown {
        if a == Action::Rollback && hint.is_some() {
            continue;
        }
        spans.push(Span::styled(
            format!(" {} ", app.keymap.first_key(a)),
            t.accent,
        ));
        spans.push(Span::styled(format!("{} ", label(a)), t.dim));
    }
    f.render_widget(Paragraph::new(Line::from(spans)).style(t.bar), area);
}
