//! What users get: the public and preview URLs, each router's view, warnings, and the
//! timeline of the running (or last) operation.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph};

use crate::app::App;
use crate::keymap::Action;
use crate::ops::Step;
use crate::probe::UrlProbe;
use crate::redact::redact;
use crate::timefmt;

fn url_line<'a>(
    app: &'a App,
    label: &'a str,
    url: Option<&str>,
    p: Option<&UrlProbe>,
) -> Option<Line<'a>> {
    let t = &app.theme;
    let url = url?;
    let mut spans = vec![
        Span::styled(format!("{label:<8}"), t.title),
        Span::styled(url.to_string(), t.text),
    ];
    match p {
        None => spans.push(Span::styled("  … waiting for the first answer", t.dim)),
        Some(p) => match (&p.version, &p.error) {
            (Some(v), _) => {
                spans.push(Span::styled(
                    format!("  → v{}", v.version.trim_start_matches('v')),
                    t.accent,
                ));
                if let Some(s) = &p.slot_header {
                    spans.push(Span::styled(format!(" ({s})"), t.dim));
                }
            }
            (None, Some(e)) => spans.push(Span::styled(format!("  ✘ {e}"), t.error)),
            (None, None) => spans.push(Span::styled("  ?", t.dim)),
        },
    }
    Some(Line::from(spans))
}

/// Lines the panel needs for the selected environment.
pub fn height(app: &App) -> u16 {
    lines(app).len() as u16 + 2
}

pub fn draw(f: &mut Frame, area: Rect, app: &App) {
    let t = &app.theme;
    let block = Block::bordered()
        .title(Span::styled(" Traffic ", t.title))
        .border_style(t.border);
    f.render_widget(Paragraph::new(lines(app)).block(block), area);
}

fn lines(app: &App) -> Vec<Line<'_>> {
    let t = &app.theme;
    let Some(env) = app.env() else { return vec![] };
    let mut lines: Vec<Line> = Vec::new();
    lines.extend(url_line(
        app,
        "Public",
        env.config.public_url.as_deref(),
        env.public.as_ref(),
    ));
    lines.extend(url_line(
        app,
        "Preview",
        env.config.preview_url.as_deref(),
        env.preview.as_ref(),
    ));
    for w in env.warnings() {
        lines.push(Line::styled(format!("⚠ {w}"), t.warning));
    }
    if let Some(hint) = env.one_key_hint(&app.keymap.first_key(Action::Rollback), app.now) {
        lines.push(Line::styled(hint, t.alarm()));
    }
    if let Some(m) = env.state().and_then(|s| s.maintenance.as_ref()) {
        lines.push(Line::styled(
            format!(
                "⚠ MAINTENANCE is on ({m}); {} turns it off",
                app.keymap.first_key(Action::Maintenance)
            ),
            t.warning,
        ));
    }
    if let Some(p) = env.state().and_then(|s| s.pause)
        && (p.paused || p.refused > 0)
    {
        let key = app.keymap.first_key(Action::Hold);
        let text = if p.paused {
            format!("⏸ PAUSED: {} requests held; {key} resumes", p.held)
        } else {
            format!("resumed; {} requests got 503 during the pause", p.refused)
        };
        lines.push(Line::styled(text, t.warning));
        if p.paused && p.refused > 0 {
            lines.push(Line::styled(
                format!("⚠ {} requests got 503: over the pause's bound", p.refused),
                t.warning,
            ));
        }
    }
    for r in &env.routers {
        let mut spans = vec![
            Span::styled(format!("{:<8}", "Router"), t.title),
            Span::styled(format!("{} ({})", r.name, r.kind), t.text),
        ];
        match (&r.state, &r.error) {
            (_, Some(e)) => spans.push(Span::styled(
                format!("  ✘ {}", super::fit(&redact(e), 80)),
                t.error,
            )),
            (Some(s), None) => {
                spans.push(Span::styled(
                    format!(
                        "  live={} preview={}",
                        s.live.as_deref().unwrap_or("-"),
                        s.preview.as_deref().unwrap_or("-")
                    ),
                    t.ok,
                ));
                if let Some(w) = &s.weights {
                    spans.push(Span::styled(format!("  canary: {w}"), t.accent));
                }
                if let Some(p) = &s.preview_route {
                    spans.push(Span::styled(
                        format!("  preview route armed: {p}"),
                        t.accent,
                    ));
                }
                if let Some(at) = r.at {
                    spans.push(Span::styled(
                        format!("  read {} ago", timefmt::ago(app.now, at)),
                        t.dim,
                    ));
                }
                for n in &s.notes {
                    spans.push(Span::styled(format!("  {}", redact(n)), t.warning));
                }
            }
            (None, None) => spans.push(Span::styled("  … connecting", t.dim)),
        }
        lines.push(Line::from(spans));
    }
    if let Some(r) = env.uncounted_router() {
        lines.push(Line::styled(
            format!(
                "ⓘ no per-slot counters from {}: showing cutover's own probes of the public URL",
                r.kind
            ),
            t.warning,
        ));
    }
    // A fleet where some routers count and others do not: the figures are the counting
    // routers' sum, and leave the others' share out.
    let without = env.routers_without_counters();
    if env.uncounted_router().is_none() && !without.is_empty() {
        let names: Vec<String> = without
            .iter()
            .map(|r| format!("`{}` ({})", r.name, r.kind))
            .collect();
        lines.push(Line::styled(
            format!(
                "ⓘ no per-slot counters from {}: requests/s are {}, without {} share",
                names.join(", "),
                match env.counting_routers() {
                    1 => "the other router's".to_string(),
                    n => format!("the sum of the other {n} routers"),
                },
                if without.len() == 1 { "its" } else { "their" }
            ),
            t.warning,
        ));
    }
    if env.routers.is_empty() {
        lines.push(Line::styled(
            "no router configured: cutover only watches this environment",
            t.dim,
        ));
    }
    if let Some(l) = &env.lock
        && !env.op_running()
    {
        lines.push(Line::styled(
            format!(
                "⚠ LOCKED by {} (pid {}, {} since {})",
                l.holder, l.pid, l.operation, l.since
            ),
            t.warning,
        ));
    }
    if let Some(op) = &env.op {
        let mut spans = vec![
            Span::styled(format!("{:<8}", "Op"), t.title),
            Span::styled(op.title.clone(), t.text),
            Span::raw("  "),
        ];
        for step in Step::ALL {
            let Some((_, ok, _)) = op.steps.iter().find(|(s, _, _)| *s == step) else {
                continue;
            };
            if step == Step::Watch && ok.is_none() && op.watching.is_some() {
                continue; // the countdown below says it
            }
            let (sym, style) = match ok {
                Some(true) => ("✔", t.ok),
                Some(false) => ("✘", t.error),
                None => ("…", t.accent),
            };
            spans.push(Span::styled(format!("{} {sym} ", step.label()), style));
        }
        if let Some((rem, detail)) = &op.watching {
            spans.push(Span::styled(
                format!("watch {}s left: {} ", rem.as_secs(), redact(detail)),
                t.accent,
            ));
        }
        match op.verdict {
            Some(v) => spans.push(Span::styled(
                format!("{} {}", v.label().to_uppercase(), redact(&op.message)),
                if v.is_success() { t.ok } else { t.error },
            )),
            None if op.watching.is_none() => {
                if let Some((_, None, m)) = op.steps.last() {
                    spans.push(Span::styled(redact(m), t.dim));
                }
            }
            None => {}
        }
        lines.push(Line::from(spans));
    }
    lines
}
