//! The slots of the selected environment, side by side, one column each.

use std::ops::Range;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Sparkline};

use crate::app::{App, EnvView, Focus, SlotView};
use crate::model::{Health, Role};
use crate::timefmt;

/// Draw the slots in `shown`, one per area; when that is not all of them, say which are shown
/// and which way the others are, in the bottom border of the last column.
pub fn draw(f: &mut Frame, areas: &[Rect], shown: Range<usize>, app: &App) {
    let Some(env) = app.env() else {
        return;
    };
    let n = env.slots.len();
    let page = env.slots.get(shown.clone()).unwrap_or_default();
    for (i, (slot, area)) in page.iter().zip(areas).enumerate() {
        draw_slot(
            f,
            *area,
            app,
            env,
            slot,
            shown.start + i == app.selected_slot,
        );
    }
    if shown.len() < n
        && let Some(last) = areas.last()
    {
        let t = &app.theme;
        let which = if shown.len() == 1 {
            format!(" slot {} of {n} ", shown.start + 1)
        } else {
            format!(" slots {}–{} of {n} ", shown.start + 1, shown.end)
        };
        // An arrow only where there are more slots; ←/→ move the selection onto them.
        let arrow =
            |more: bool, s: &'static str| Span::styled(if more { s } else { " " }, t.accent);
        let pager = Line::from(vec![
            Span::styled(which, t.text),
            arrow(shown.start > 0, "◂"),
            Span::raw(" "),
            arrow(shown.end < n, "▸"),
            Span::raw(" "),
        ]);
        let w = (pager.width() as u16).min(last.width.saturating_sub(2));
        let at = Rect::new(
            last.x + last.width.saturating_sub(w + 1),
            last.y + last.height.saturating_sub(1),
            w,
            1.min(last.height),
        );
        f.render_widget(Paragraph::new(pager), at);
    }
}

/// A slot column this many rows high (inside its borders) or less is short: it keeps role,
/// health, version and traffic before anything else.
const SHORT_COLUMN: u16 = 6;

fn since(app: &App, t: Option<std::time::SystemTime>) -> String {
    t.map(|t| format!(" for {}", timefmt::ago(app.now, t)))
        .unwrap_or_default()
}

fn draw_slot(f: &mut Frame, area: Rect, app: &App, env: &EnvView, slot: &SlotView, selected: bool) {
    let t = &app.theme;
    let role = env.role_of(&slot.name);
    let health = slot.health();
    let focused = selected && app.focus == Focus::Slots;
    let block = Block::bordered()
        .title(Span::styled(
            format!(" {}{} ", if selected { "▸ " } else { "" }, slot.name),
            t.title,
        ))
        .border_style(if focused {
            t.border_focus
        } else if role == Role::Live {
            t.role(Role::Live)
        } else {
            t.border
        });
    let inner = block.inner(area);
    f.render_widget(block, area);
    let w = inner.width as usize;

    let mut lines = Vec::new();
    let mut role_line = vec![Span::styled(
        format!("{} {}", role.symbol(), role.label()),
        t.role(role),
    )];
    // The canary's share of the live traffic, on the canary slot, while a split is set.
    if let Some(w) = env.state().and_then(|s| s.weights.as_ref())
        && w.canary == slot.name
    {
        role_line.push(Span::styled(
            format!(" · canary {} %", w.canary_percent),
            t.accent,
        ));
    }
    role_line.push(Span::styled(since(app, slot.role_since), t.dim));
    lines.push(Line::from(role_line));
    // A short column keeps its lines for health, version and traffic (the role line has the
    // canary's share).
    if inner.height > SHORT_COLUMN
        && let Some(l) = split_line(app, env, slot, w)
    {
        lines.push(l);
    }
    let p = slot.last.as_ref();
    let mut hl = vec![Span::styled(
        format!("{} {}", health.symbol(), health.label()),
        t.health(health),
    )];
    if let Some(p) = p {
        if let Some(s) = p.status {
            hl.push(Span::styled(format!(" {s}"), t.text));
        }
        if let Some(l) = p.latency {
            hl.push(Span::styled(format!(" {}", timefmt::millis(l)), t.text));
        }
        if let Some(e) = &p.error
            && p.status.is_none()
        {
            hl.push(Span::styled(format!(" {e}"), t.health(Health::Down)));
        }
    }
    hl.push(Span::styled(since(app, slot.health_since), t.dim));
    lines.push(Line::from(hl));
    match p.and_then(|p| p.version.as_ref()) {
        Some(v) => {
            let mut vl = vec![Span::styled(
                format!("v{}", v.version.trim_start_matches('v')),
                t.accent,
            )];
            if let Some(c) = &v.commit {
                vl.push(Span::styled(format!(" {}", super::fit(c, 8)), t.dim));
            }
            lines.push(Line::from(vl));
            // The build time where the column has room for it: a short column (80x24) keeps
            // the traffic and its latency instead.
            if let Some(b) = &v.built
                && inner.height > SHORT_COLUMN
            {
                lines.push(Line::styled(super::fit(&format!("built {b}"), w), t.dim));
            }
        }
        None => {
            let why = p
                .and_then(|p| p.version_error.as_ref())
                .map_or("version unknown".to_string(), |e| {
                    format!("version ? ({e})")
                });
            lines.push(Line::styled(super::fit(&why, w), t.dim));
        }
    }
    // The user traffic right after the version: a short column (80x24, where the chart
    // folds away) keeps it before the router's details.
    if let Some(l) = traffic_line(app, env, slot, w) {
        lines.push(l);
        // And the router's recent p50/p99 beneath, where it keeps them (the embedded proxy),
        // while the slot has user traffic: without, they would be of cutover's own probes and
        // of requests from before a switch.
        if !slot.traffic.stale
            && slot.traffic.current().is_some_and(|c| c.rps > 0.0)
            && let Some(p) = super::traffic::percentiles(&slot.traffic)
        {
            lines.push(Line::styled(super::fit(&p, w), t.text));
        }
    }
    if let Some(r) = env.state().and_then(|s| s.slots.get(&slot.name)) {
        let mut first = vec![format!("router {}", r.admin.label())];
        if let Some(s) = r.sessions {
            first.push(format!("{s} in flight"));
        }
        lines.push(Line::styled(super::fit(&first.join(" · "), w), t.text));
        let mut second = Vec::new();
        if let Some(n) = r.requests {
            second.push(format!("{n} req"));
        }
        if let Some(e) = r.errors {
            second.push(format!("{e} err"));
        }
        if let Some(c) = &r.check {
            second.push(format!("check {c}"));
        }
        if !second.is_empty() {
            lines.push(Line::styled(super::fit(&second.join(" · "), w), t.dim));
        }
        for n in &r.nodes {
            let mut l = format!(" {} {}", n.name, n.admin.label());
            if let Some(s) = n.sessions {
                l.push_str(&format!(" · {s} busy"));
            }
            lines.push(Line::styled(super::fit(&l, w), t.dim));
        }
    }
    let cfg = env.config.slot(&slot.name);
    if let Some(c) = cfg {
        lines.push(Line::styled(super::fit(c.address.as_str(), w), t.dim));
    }

    // The text first (a short column drops the sparkline before any line of text), and a
    // row for the sparkline when there is one to spare.
    let text_h = (lines.len() as u16).min(if inner.height > 4 {
        inner.height - 1
    } else {
        inner.height
    });
    let spark_h = inner.height.saturating_sub(text_h).min(3);
    let [text_area, spark_area, _] = Layout::vertical([
        Constraint::Length(text_h),
        Constraint::Length(spark_h),
        Constraint::Min(0),
    ])
    .areas(inner);
    f.render_widget(Paragraph::new(lines), text_area);
    let data: Vec<u64> = slot
        .history
        .iter()
        .rev()
        .take(w)
        .rev()
        .map(|s| s.latency_ms.map_or(0, |l| l.max(1)))
        .collect();
    // Scale to at least 10 ms so a steady fast slot shows low bars, not a full block.
    let max = data.iter().copied().max().unwrap_or(0).max(10);
    f.render_widget(
        Sparkline::default()
            .data(&data)
            .max(max)
            .style(t.health(health)),
        spark_area,
    );
}

/// While a canary splits the live traffic, on its two slots: the weight each is configured
/// with and the share of the split's traffic it served (from the routers' counters, cutover's
/// own probes taken off).
fn split_line<'a>(app: &App, env: &EnvView, slot: &SlotView, w: usize) -> Option<Line<'a>> {
    let t = &app.theme;
    let split = env.state()?.weights.as_ref()?;
    let weight = if slot.name == split.canary {
        split.canary_percent
    } else if slot.name == split.live {
        100 - split.canary_percent.min(100)
    } else {
        return None;
    };
    let rps = |name: &str| {
        env.slots
            .iter()
            .find(|s| s.name == name)
            .and_then(|s| s.traffic.current())
            .map_or(0.0, |c| c.rps)
    };
    let all = rps(&split.live) + rps(&split.canary);
    let served = if all > 0.0 {
        format!("{:.0} %", rps(&slot.name) * 100.0 / all)
    } else {
        "-".into()
    };
    Some(Line::styled(
        super::fit(&format!("weight {weight} % · served {served}"), w),
        t.accent,
    ))
}

/// The slot's user traffic in one line: requests/s, error rate, the router's latency. Where the
/// router counts no requests per slot it says so, rather than showing a zero.
fn traffic_line<'a>(app: &App, env: &EnvView, slot: &SlotView, w: usize) -> Option<Line<'a>> {
    let t = &app.theme;
    if let Some(r) = env.uncounted_router() {
        return Some(Line::styled(
            super::fit(&format!("no per-slot counters ({})", r.kind), w),
            t.dim,
        ));
    }
    let tr = &slot.traffic;
    if !tr.counted {
        return None;
    }
    if tr.stale {
        return Some(Line::styled("req/s ? (router not read)", t.dim));
    }
    let role = env.role_of(&slot.name);
    // Rates need two readings; until the second, the counters above are all there is.
    let now = tr.current()?;
    let mut spans = vec![Span::styled(
        format!("{} req/s", super::traffic::rate(now.rps)),
        t.role(role),
    )];
    let err = super::traffic::error_rate(tr);
    spans.push(Span::styled(
        format!(" · {err} err"),
        if now.eps > 0.0 { t.error } else { t.text },
    ));
    // The router's latency where it has one, when the column has room for it.
    if let Some(ms) = tr.latency_ms.filter(|_| tr.percentiles.is_none()) {
        let ms = if ms == 0 {
            "<1ms".to_string()
        } else {
            format!("{ms}ms")
        };
        let with = Line::from(
            [
                spans.clone(),
                vec![Span::styled(format!(" · {ms}"), t.text)],
            ]
            .concat(),
        );
        if with.width() <= w {
            return Some(with);
        }
    }
    let line = Line::from(spans);
    Some(if line.width() > w {
        Line::styled(
            super::fit(&format!("{} req/s {err}", super::traffic::rate(now.rps)), w),
            t.role(role),
        )
    } else {
        line
    })
}
