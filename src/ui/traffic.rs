//! The traffic chart: requests per second per slot over the last minutes, from the router's
//! own counters, with the moments operations started marked on the time axis, and beside it
//! each slot's figures and, during a watch, the inputs of its verdict.
//!
//! Where the router counts no requests per slot (nginx OSS, Caddy without metrics), the chart
//! says so and shows cutover's own probes of the public URL instead: which slot answered them.

use std::time::SystemTime;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Axis, Block, Chart, Dataset, GraphType, Paragraph};

use crate::app::{App, EnvView, SlotTraffic, TRAFFIC_WINDOW};
use crate::ops::WATCH_ERROR_BUDGET;
use crate::timefmt;

/// The chart needs this many rows (borders included) to be worth drawing.
pub const MIN_HEIGHT: u16 = 8;
/// The figures beside the chart.
const SIDE_WIDTH: u16 = 38;
/// The same with each slot's p50 and p99 (where the router gives them).
const SIDE_WIDTH_PERCENTILES: u16 = 50;
/// The y axis' labels are padded to this width.
const Y_LABEL_WIDTH: u16 = 6;
/// The shortest time span the chart spreads over, in seconds.
const MIN_SPAN: f64 = 60.0;

/// One slot's line: its legend, its role's style, its points.
type Series = (String, ratatui::style::Style, Vec<(f64, f64)>);

/// Whether the environment has anything to chart: a rate computed from two router readings,
/// or a router that has no per-slot counters (which the chart then says).
pub fn has_data(env: &EnvView) -> bool {
    env.uncounted_router().is_some() || env.slots.iter().any(|s| s.traffic.current().is_some())
}

/// A rate as it reads in a column: `0`, `0.4`, `42`, `1.3k`.
pub fn rate(x: f64) -> String {
    if x >= 999.5 {
        format!("{:.1}k", x / 1000.0)
    } else if x >= 9.95 || x == 0.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

/// The newest error rate, `0.4%`; `?` where the router counts no errors (Apache).
pub fn error_rate(tr: &SlotTraffic) -> String {
    if tr.errors_counted {
        format!("{:.1}%", tr.error_rate().unwrap_or(0.0) * 100.0)
    } else {
        "?".to_string()
    }
}

/// A router's latency figure, from microseconds: `85µs`, `0.4ms`... `12ms`, `1.2s`.
pub fn micros(us: u64) -> String {
    if us < 100 {
        format!("{us}µs")
    } else if us < 9_950 {
        format!("{:.1}ms", us as f64 / 1000.0)
    } else if us < 999_500 {
        format!("{:.0}ms", us as f64 / 1000.0)
    } else {
        format!("{:.1}s", us as f64 / 1e6)
    }
}

/// `p50 2.0ms p99 229ms`, of the slot's recent answers where the router keeps percentiles.
pub fn percentiles(tr: &SlotTraffic) -> Option<String> {
    let p = tr.percentiles?;
    Some(format!("p50 {} p99 {}", micros(p.p50_us), micros(p.p99_us)))
}

/// Seconds before `now` (negative), as the chart's x axis counts them.
fn x_of(now: SystemTime, at: SystemTime) -> f64 {
    match now.duration_since(at) {
        Ok(d) => -d.as_secs_f64(),
        Err(e) => e.duration().as_secs_f64(),
    }
}

pub fn draw(f: &mut Frame, area: Rect, app: &App) {
    let Some(env) = app.env() else { return };
    let t = &app.theme;
    let uncounted = env.uncounted_router();
    // In a fleet, whose counters the figures are: all the routers', or some of them.
    let (counting, routers) = (env.counting_routers(), env.routers.len());
    let last = timefmt::short_secs(TRAFFIC_WINDOW.as_secs());
    let title = match uncounted {
        Some(_) => " Public URL by slot (cutover's probes) ".to_string(),
        None if routers > 1 && counting == routers => format!(
            " Requests/s by slot · last {last} · sum of {counting} routers, latency of the slowest "
        ),
        None if routers > 1 => format!(
            " Requests/s by slot · last {last} · {counting} of {routers} routers (the others not read or without counters) "
        ),
        None => format!(" Requests/s by slot · last {last} "),
    };
    let block = Block::bordered()
        .title(Span::styled(title, t.title))
        .border_style(t.border);
    let inner = block.inner(area);
    f.render_widget(block, area);
    let side_w = if uncounted.is_none()
        && env.slots.iter().any(|s| {
            s.traffic.percentiles.is_some() && s.traffic.current().is_some_and(|c| c.rps > 0.0)
        }) {
        SIDE_WIDTH_PERCENTILES
    } else {
        SIDE_WIDTH
    }
    .min(inner.width / 2);
    let [plot_area, side] = Layout::horizontal([Constraint::Min(10), Constraint::Length(side_w)])
        .spacing(1)
        .areas(inner);
    // The error rate beneath the chart, on the same time axis (where the router counts them).
    let err_h = u16::from(uncounted.is_none() && plot_area.height > MIN_HEIGHT - 2);
    let [chart_area, err_area] =
        Layout::vertical([Constraint::Min(0), Constraint::Length(err_h)]).areas(plot_area);

    let now = app.now;
    // Series per slot: (legend, style, points).
    let mut series: Vec<Series> = Vec::new();
    let mut oldest = 0.0f64;
    for s in &env.slots {
        let role = env.role_of(&s.name);
        let points: Vec<(f64, f64)> = match uncounted {
            Some(_) => env
                .public_answers
                .iter()
                .map(|(at, who)| (x_of(now, *at), if *who == s.name { 1.0 } else { 0.0 }))
                .collect(),
            None => s
                .traffic
                .history
                .iter()
                .map(|p| (x_of(now, p.at), p.rps))
                .collect(),
        };
        if let Some((x, _)) = points.first() {
            oldest = oldest.min(*x);
        }
        series.push((
            format!("{} {}", role.symbol(), s.name),
            t.role(role),
            points,
        ));
    }
    let span = (-oldest).clamp(MIN_SPAN, TRAFFIC_WINDOW.as_secs_f64());
    let top = series
        .iter()
        .flat_map(|(_, _, p)| p.iter().map(|(_, y)| *y))
        .fold(0.0f64, f64::max)
        .max(1.0)
        * 1.1;
    let markers: Vec<(f64, &str, SystemTime)> = env
        .markers
        .iter()
        .map(|(at, label)| (x_of(now, *at), *label, *at))
        .filter(|(x, _, _)| *x >= -span && *x <= 0.0)
        .collect();
    let marker_lines: Vec<[(f64, f64); 2]> = markers
        .iter()
        .map(|(x, _, _)| [(*x, 0.0), (*x, top)])
        .collect();
    let mut datasets: Vec<Dataset> = Vec::new();
    for line in &marker_lines {
        datasets.push(
            Dataset::default()
                .marker(Marker::Braille)
                .graph_type(GraphType::Line)
                .style(t.accent)
                .data(line),
        );
    }
    // The figures beside the chart are its legend (symbol, name, rate, in the role's style).
    for (_, style, points) in &series {
        datasets.push(
            Dataset::default()
                .marker(Marker::Braille)
                .graph_type(GraphType::Line)
                .style(*style)
                .data(points),
        );
    }
    // Labels padded to one width, so the plot starts at a known column (for the markers).
    let pad = |s: String| Span::styled(format!("{s:>w$}", w = Y_LABEL_WIDTH as usize), t.dim);
    let y_labels = match uncounted {
        Some(_) => vec![pad("other".into()), pad("answer".into())],
        None => vec![pad("0".into()), pad(format!("{}/s", rate(top)))],
    };
    let chart = Chart::new(datasets)
        .x_axis(
            Axis::default()
                .style(t.dim)
                .bounds([-span, 0.0])
                .labels(vec![
                    Span::styled(format!("-{}", timefmt::short_secs(span as u64)), t.dim),
                    Span::styled("now", t.dim),
                ]),
        )
        .y_axis(
            Axis::default()
                .style(t.dim)
                .bounds([0.0, top])
                .labels(y_labels),
        )
        .legend_position(None);
    f.render_widget(chart, chart_area);
    if err_h > 0 {
        errors_strip(f, err_area, app, env, span);
    }
    // Each marker's name at the top of its line: the plot starts after the y labels and the
    // axis, and ends at the area's right edge.
    let plot_x = chart_area.x + Y_LABEL_WIDTH + 1;
    let plot_w = chart_area.right().saturating_sub(plot_x);
    if plot_w > 1 && chart_area.height > 2 {
        let mut free_from = plot_x;
        for (x, label, _) in &markers {
            let col = plot_x + (((x + span) / span) * f64::from(plot_w - 1)).round() as u16;
            // The name to the right of its line, or to the left where the plot ends ("now").
            let right = format!("┊{label}");
            let n = right.chars().count() as u16;
            let (text, col, w) = if col + n <= chart_area.right() {
                (right, col, n)
            } else {
                let start = (col + 1).saturating_sub(n).max(plot_x);
                (format!("{label}┊"), start, col + 1 - start)
            };
            if col < free_from || w == 0 {
                continue; // it would cover the previous marker's name
            }
            f.render_widget(
                Paragraph::new(Line::styled(text, t.accent).right_aligned()),
                Rect::new(col, chart_area.y, w, 1),
            );
            free_from = col + w + 1;
        }
    }
    f.render_widget(Paragraph::new(side_lines(app, env, side_w as usize)), side);
}

/// One row beneath the chart: at each of its columns, the highest error rate of any slot
/// there, as a bar in the style of that slot's role (blank where there were none).
fn errors_strip(f: &mut Frame, area: Rect, app: &App, env: &EnvView, span: f64) {
    let t = &app.theme;
    let plot_x = area.x + Y_LABEL_WIDTH + 1;
    let plot_w = area.right().saturating_sub(plot_x);
    if plot_w < 2 {
        return;
    }
    // Per column: (errors/s, role) of the worst slot.
    let mut cols: Vec<Option<(f64, crate::model::Role)>> = vec![None; usize::from(plot_w)];
    let mut top = 0.0f64;
    for s in &env.slots {
        let role = env.role_of(&s.name);
        for p in s.traffic.history.iter().filter(|p| p.eps > 0.0) {
            let x = x_of(app.now, p.at);
            if x < -span || x > 0.0 {
                continue;
            }
            let c = (((x + span) / span) * f64::from(plot_w - 1)).round() as usize;
            if let Some(slot) = cols.get_mut(c)
                && slot.is_none_or(|(e, _)| p.eps > e)
            {
                *slot = Some((p.eps, role));
            }
            top = top.max(p.eps);
        }
    }
    const BARS: [&str; 8] = ["▁", "▂", "▃", "▄", "▅", "▆", "▇", "█"];
    let mut spans = vec![Span::styled(
        format!("{:>w$} ", "err/s", w = usize::from(Y_LABEL_WIDTH)),
        t.dim,
    )];
    if top == 0.0 {
        spans.push(Span::styled("none", t.dim));
    } else {
        for c in &cols {
            spans.push(match c {
                None => Span::raw(" "),
                Some((e, role)) => {
                    let i = ((e / top) * 7.0).round() as usize;
                    Span::styled(BARS[i.min(7)], t.role(*role))
                }
            });
        }
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

/// Beside the chart: each slot's figures, what was marked, and the watch's inputs.
fn side_lines<'a>(app: &'a App, env: &'a EnvView, w: usize) -> Vec<Line<'a>> {
    let t = &app.theme;
    let mut lines = Vec::new();
    if let Some(r) = env.uncounted_router() {
        let says = format!("{} counts no requests per slot", r.kind);
        for l in wrap(&says, w) {
            lines.push(Line::styled(l, t.warning));
        }
        if let Some((_, who)) = env.public_answers.back() {
            lines.push(Line::styled(
                super::fit(&format!("public URL answered by `{who}`"), w),
                t.text,
            ));
        }
    } else {
        for s in &env.slots {
            let role = env.role_of(&s.name);
            let tr = &s.traffic;
            let mut spans = vec![Span::styled(
                format!("{} {:<8} ", role.symbol(), super::fit(&s.name, 8)),
                t.role(role),
            )];
            match tr.current() {
                Some(_) if tr.stale => spans.push(Span::styled("? (router not read)", t.dim)),
                Some(c) => {
                    spans.push(Span::styled(format!("{:>5}/s ", rate(c.rps)), t.text));
                    spans.push(Span::styled(
                        format!("{:>5} err", error_rate(tr)),
                        if c.eps > 0.0 { t.error } else { t.dim },
                    ));
                    // The router's percentiles where it keeps them and they fit: both, or p99.
                    // (Only with user traffic: see the slot column's.)
                    if let Some(p) = tr.percentiles.filter(|_| c.rps > 0.0) {
                        let used: usize = spans.iter().map(|s| s.width()).sum();
                        let both = format!("  {}", percentiles(tr).unwrap_or_default());
                        let p99 = format!("  p99 {}", micros(p.p99_us));
                        if let Some(l) = [both, p99]
                            .into_iter()
                            .find(|l| used + l.chars().count() <= w)
                        {
                            spans.push(Span::styled(l, t.text));
                        }
                    }
                }
                None if tr.counted => spans.push(Span::styled("…", t.dim)),
                None => spans.push(Span::styled("not counted", t.dim)),
            }
            lines.push(Line::from(spans));
        }
    }
    if let Some(op) = env.op.as_ref()
        && let Some((remaining, _)) = &op.watching
    {
        let mut left = if op.canary_in_steps() && op.canary_waiting() {
            "paused, waiting for the operator".to_string()
        } else {
            format!("{}s left", remaining.as_secs())
        };
        if op.canary_in_steps() {
            left.push_str(&format!(
                " · aborts > {:.1} % err",
                env.config.canary.max_error_rate * 100.0
            ));
        }
        lines.push(Line::styled(format!("Watch {} · {left}", op.kind), t.title));
        // A canary's step is judged on its error rate, not on the swap's budget: its last
        // step (the swap) is watched like any swap.
        // (As the rollback key tells them apart: the swap's apply step says it switches.)
        if op.watch_inputs.is_some() && op.canary_in_steps() {
            // The step timeline: done ✔, current ▶, next ·.
            if let Some((plan, current)) = op.canary_timeline() {
                let mut spans = Vec::new();
                for (i, s) in plan.iter().enumerate() {
                    let (mark, style) = match i.cmp(&current) {
                        std::cmp::Ordering::Less => ("✔", t.ok),
                        std::cmp::Ordering::Equal => ("▶", t.title),
                        std::cmp::Ordering::Greater => ("·", t.dim),
                    };
                    spans.push(Span::styled(format!("{mark} {s}  "), style));
                }
                lines.push(Line::from(spans));
            }
            // The analysis as its last check saw it, one part a line (the step's label left
            // off): the canary's probe, its errors against the stable slot's, failed checks,
            // and what failed.
            if let Some((_, detail)) = &op.watching {
                let warn = detail.contains("error rate") || detail.contains("failed its");
                for (i, part) in detail.split(" · ").skip(1).enumerate() {
                    let text = if i == 0 {
                        format!("analysis: {part}")
                    } else {
                        format!("  {part}")
                    };
                    let style = if warn && i > 0 { t.warning } else { t.text };
                    lines.push(Line::styled(super::fit(&text, w), style));
                }
            }
        } else if let Some((errors, checks, passed)) = op.watch_inputs {
            lines.push(Line::styled(
                format!("errors since switch: {errors} of {WATCH_ERROR_BUDGET} allowed"),
                if errors > WATCH_ERROR_BUDGET {
                    t.error
                } else if errors > 0 {
                    t.warning
                } else {
                    t.ok
                },
            ));
            lines.push(Line::styled(
                format!("health checks passed {passed} of {checks}"),
                if passed == checks { t.ok } else { t.warning },
            ));
        }
    } else if let Some((at, label)) = env.markers.back() {
        lines.push(Line::styled(
            super::fit(
                &format!(
                    "┊ {label} at {} ({} ago)",
                    timefmt::clock(*at),
                    timefmt::ago(app.now, *at)
                ),
                w,
            ),
            t.accent,
        ));
    }
    lines
}

/// Break `s` into lines of at most `w` characters at spaces.
fn wrap(s: &str, w: usize) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut cur = String::new();
    for word in s.split(' ') {
        if !cur.is_empty() && cur.chars().count() + 1 + word.chars().count() > w {
            out.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push(' ');
        }
        cur.push_str(word);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out.into_iter().map(|l| super::fit(&l, w)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `show` turns each case's value into its text.
    fn assert_shown<T: Copy + std::fmt::Debug>(show: fn(T) -> String, cases: &[(T, &str)]) {
        for &(value, text) in cases {
            assert_eq!(show(value), text, "{value:?}");
        }
    }

    #[test]
    fn rates_read_short() {
        assert_shown(
            rate,
            &[
                (0.0, "0"),
                (0.4, "0.4"),
                (9.94, "9.9"),
                (42.3, "42"),
                (1290.0, "1.3k"),
            ],
        );
    }

    #[test]
    fn latencies_read_short_and_never_as_zero() {
        assert_shown(
            micros,
            &[
                (41, "41µs"),
                (99, "99µs"),
                (100, "0.1ms"),
                (2_047, "2.0ms"),
                (14_335, "14ms"),
                (425_983, "426ms"),
                (1_234_567, "1.2s"),
            ],
        );
    }

    #[test]
    fn wrap_breaks_at_spaces_within_the_width() {
        assert_eq!(
            wrap("no per-slot counters from nginx", 12),
            ["no per-slot", "counters", "from nginx"]
        );
    }
}
