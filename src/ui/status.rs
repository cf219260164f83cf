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
    // Each part with its rank: a narrow screen drops the lowest first, so the environment's
    // name, PRODUCTION, READ-ONLY and the warnings stay longest.
    let mut parts = vec![(0, Span::styled(" cutover ", t.title.patch(t.bar)))];
    if let Some(e) = app.env() {
        parts.push((5, Span::styled(format!(" {} ", e.config.name), t.accent)));
        if app.envs.len() > 1 {
            parts.push((
                1,
                Span::styled(
                    format!("({}/{}) ", app.selected_env + 1, app.envs.len()),
                    t.dim,
                ),
            ));
        }
        if e.config.production {
            parts.push((3, Span::styled("PRODUCTION ", t.warning)));
        }
        if app.read_only || e.config.read_only {
            parts.push((3, Span::styled("READ-ONLY ", t.warning)));
        }
        if app.demo {
            parts.push((2, Span::styled("DEMO ", t.dim)));
        }
        match e.store_up {
            Some(true) => parts.push((2, Span::styled("etcd ✔ ", t.dim))),
            Some(false) => parts.push((4, Span::styled("etcd ✘ unreachable ", t.error))),
            None => {}
        }
        let warns = e.warnings().len();
        if warns > 0 {
            parts.push((
                4,
                Span::styled(
                    format!("⚠ {warns} warning{} ", if warns > 1 { "s" } else { "" }),
                    t.warning,
                ),
            ));
        }
    }
    let width = |parts: &[(u8, Span)]| -> usize {
        parts.iter().map(|(_, s)| s.content.chars().count()).sum()
    };
    while parts.len() > 1 && width(&parts) > area.width as usize {
        let lowest = parts.iter().map(|(r, _)| *r).min().unwrap_or_default();
        parts.retain(|(r, _)| *r != lowest);
    }
    let used = width(&parts);
    let mut spans: Vec<Span> = parts.into_iter().map(|(_, s)| s).collect();
    let clock = format!("{} UTC ", timefmt::clock(app.now));
    // The clock goes where it fits whole; a narrow screen keeps the warnings instead.
    if used + clock.len() <= area.width as usize {
        spans.push(Span::raw(
            " ".repeat(area.width as usize - used - clock.len()),
        ));
        spans.push(Span::styled(clock, t.dim));
    }
    f.render_widget(Paragraph::new(Line::from(spans)).style(t.bar), area);
}

pub fn keybar(f: &mut Frame, area: Rect, app: &App) {
    let t = &app.theme;
    if let Some(line) = &app.command.text {
        let mut spans = vec![Span::styled(format!(":{line}▏"), t.accent)];
        if !app.command.completions.is_empty() {
            spans.push(Span::styled(
                format!("   {}", app.command.completions.join("  ")),
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
    // The essentials come first, help and quit before all (help lists every key), then the
    // rest while there is room.
    let essential = [
        Action::Swap,
        Action::Rollback,
        Action::Drain,
        Action::Maintenance,
        Action::Help,
        Action::Quit,
    ];
    let by_priority = [
        Action::Help,
        Action::Quit,
        Action::Swap,
        Action::Rollback,
        Action::Drain,
        Action::Maintenance,
    ];
    let mut optional = vec![Action::Command, Action::Filter];
    // While a canary runs, its steering keys come first.
    if let Some(op) = app
        .env()
        .and_then(|e| e.op.as_ref())
        .filter(|o| o.canary_in_steps())
    {
        let steer = if op.canary_waiting() {
            [Action::Pause, Action::Promote]
        } else {
            [Action::Promote, Action::Pause]
        };
        optional.splice(0..0, steer);
    }
    if app.demo {
        optional.splice(0..0, [Action::DemoBreak, Action::DemoSlow]);
    }
    let label = |a: Action| match a {
        Action::DemoBreak => "break/heal",
        Action::DemoSlow => "slow",
        Action::Maintenance => "maint",
        Action::Command => "cmd",
        Action::Pause
            if app
                .env()
                .and_then(|e| e.op.as_ref())
                .is_some_and(|o| o.canary_waiting()) =>
        {
            "resume"
        }
        Action::Pause => "pause",
        other => other.name(),
    };
    let cost = |a: Action| app.keymap.first_key(a).chars().count() + label(a).chars().count() + 3;
    // During a watch and the rollback window, `r` rolls back at once: say so, loudly.
    let hint = app
        .env()
        .and_then(|e| e.one_key_hint(&app.keymap.first_key(Action::Rollback), app.now));
    let mut room =
        (area.width as usize).saturating_sub(hint.as_ref().map_or(0, |h| h.chars().count() + 3));
    let mut fits = Vec::new();
    for a in by_priority {
        if a == Action::Rollback && hint.is_some() {
            continue;
        }
        if cost(a) <= room {
            room -= cost(a);
            fits.push(a);
        }
    }
    let mut shown: Vec<Action> = essential[..4]
        .iter()
        .copied()
        .filter(|a| fits.contains(a))
        .collect();
    for a in optional {
        if cost(a) <= room {
            room -= cost(a);
            shown.push(a);
        }
    }
    shown.extend(
        [Action::Help, Action::Quit]
            .into_iter()
            .filter(|a| fits.contains(a)),
    );
    let mut spans = Vec::new();
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
