//! The confirm dialog: from/to slots with versions and health, and the gate's verdict.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Wrap};

use crate::app::{App, Confirm, EnvView};
use crate::config::ConfirmMode;
use crate::keymap::Action;

/// How much a dialog shows: a short screen drops detail, least important first, so the key
/// line (and what the user must type or fix) always shows.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Detail {
    /// Only failing checks, warnings, the typed name and the keys.
    Least,
    /// Plus why the dialog asks.
    Why,
    /// Plus the from/to slots with their versions and health.
    Slots,
    /// Plus every passing check on its own line (else one line counts them).
    Checks,
    /// Everything, with the environment's name and blank lines between the parts.
    All,
}

pub fn draw(f: &mut Frame, area: Rect, app: &App, c: &Confirm) {
    let Some(env) = app.envs.get(c.env) else {
        return;
    };
    let w = 76.min(area.width);
    let inner_w = usize::from(w.saturating_sub(2)).max(1);
    let inner_h = usize::from(area.height.saturating_sub(2));
    let levels = [
        Detail::All,
        Detail::Checks,
        Detail::Slots,
        Detail::Why,
        Detail::Least,
    ];
    let mut chosen = None;
    for d in levels {
        let lines = lines(app, env, c, d);
        let rows = rows(&lines, inner_w);
        if rows <= inner_h || d == Detail::Least {
            chosen = Some((lines, rows));
            break;
        }
    }
    let Some((lines, rows)) = chosen else {
        return;
    };
    let r = super::centered(area, w, rows as u16 + 2);
    // Even the least detail may not fit a tiny screen: then the end (the keys) shows.
    let scroll = rows.saturating_sub(inner_h) as u16;
    let t = &app.theme;
    f.render_widget(Clear, r);
    f.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .scroll((scroll, 0))
            .block(
                Block::bordered()
                    .title(Span::styled(format!(" {} ", c.title), t.title))
                    .border_style(t.border_focus),
            ),
        r,
    );
}

/// What each step's analysis judges, in one line: the thresholds and the failed checks a
/// step tolerates, from the environment's `canary_*` settings and its queries.
fn analysis(c: &crate::config::Canary) -> String {
    let mut parts = vec![format!(
        "error rate ≤ {}",
        crate::ops::canary::pct(c.max_error_rate)
    )];
    if let Some(over) = c.max_error_rate_over_stable {
        parts.push(format!("≤ stable + {}", crate::ops::canary::pct(over)));
    }
    if let Some(l) = c.max_latency {
        parts.push(format!("probe ≤ {}", crate::timefmt::millis(l)));
    }
    parts.extend(c.queries.iter().map(|q| format!("`{}` {}", q.name, q.pass)));
    let tolerated = match c.failure_limit {
        0 => "no failed check tolerated".to_string(),
        1 => "1 failed check tolerated".to_string(),
        n => format!("{n} failed checks tolerated"),
    };
    format!("{}; {tolerated}", parts.join(" · "))
}

/// Rows the lines take when word-wrapped to `width` (as the paragraph wraps them: at spaces,
/// and inside a word longer than the line).
fn rows(lines: &[Line], width: usize) -> usize {
    lines
        .iter()
        .map(|l| {
            let text: String = l.spans.iter().map(|s| s.content.as_ref()).collect();
            wrapped_rows(&text, width)
        })
        .sum()
}

fn wrapped_rows(text: &str, width: usize) -> usize {
    let mut rows = 1;
    let mut col = 0;
    for word in text.split_inclusive(' ') {
        let n = word.chars().count();
        let bare = word.trim_end_matches(' ').chars().count();
        if col > 0 && col + bare > width {
            rows += 1;
            col = 0;
        }
        col += n;
        while col > width {
            rows += 1;
            col -= width;
        }
    }
    rows
}

fn lines<'a>(app: &'a App, env: &'a EnvView, c: &Confirm, detail: Detail) -> Vec<Line<'a>> {
    let t = &app.theme;
    let mut lines = Vec::new();
    if detail >= Detail::All {
        lines.push(Line::from(vec![
            Span::styled("environment ", t.dim),
            Span::styled(env.config.name.clone(), t.accent),
        ]));
    }
    if let Some(why) = &c.why
        && detail >= Detail::Why
    {
        lines.push(Line::styled(format!("asks because {why}"), t.warning));
    }
    let plan = app.confirm_plan(c);
    if let Some(p) = &plan {
        if detail >= Detail::Slots {
            for (label, slot, version) in [
                ("from", p.from.as_deref(), &p.versions.from_version),
                ("to", Some(p.to.as_str()), &p.versions.to_version),
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
        }
        if detail >= Detail::All {
            lines.push(Line::raw(""));
        }
        let passing = p.checks.iter().filter(|ch| ch.ok).count();
        if detail < Detail::Checks && passing > 0 {
            lines.push(Line::from(vec![
                Span::styled(" ✔ ", t.ok),
                Span::styled(
                    format!(
                        "{passing} check{} pass{}",
                        if passing > 1 { "s" } else { "" },
                        if passing > 1 { "" } else { "es" }
                    ),
                    t.dim,
                ),
            ]));
        }
        for ch in p
            .checks
            .iter()
            .filter(|ch| !ch.ok || detail >= Detail::Checks)
        {
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
    if let crate::app::Confirmed::Op(crate::ops::OpKind::Canary { to, .. }) = &c.what
        && detail >= Detail::Checks
    {
        lines.push(Line::from(vec![
            Span::styled("analysis ", t.dim),
            Span::styled(analysis(&env.config.canary), t.text),
        ]));
        lines.push(Line::styled(
            format!("another plan: :canary {to} STEPS INTERVAL (e.g. 10,pause,50,100 30s)"),
            t.dim,
        ));
    }
    if detail >= Detail::All {
        lines.push(Line::raw(""));
    }
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
    lines
}
