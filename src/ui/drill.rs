//! A drill's live chart: answers per second per slot, and the counters.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Sparkline};

use crate::app::{App, DrillView};
use crate::drill::DrillReport;

pub fn draw(f: &mut Frame, area: Rect, app: &App, d: &DrillView) {
    let t = &app.theme;
    let title = if d.done.is_some() {
        format!(
            " Drill (done; {} closes) ",
            app.keymap.first_key(crate::keymap::Action::Drill)
        )
    } else {
        " Drill (running) ".to_string()
    };
    let block = Block::bordered()
        .title(Span::styled(title, t.title))
        .border_style(t.border_focus);
    let inner = block.inner(area);
    f.render_widget(block, area);

    let last = d.ticks.last();
    let ok: u64 = last.map_or(0, |l| l.by_slot.values().sum());
    let failed = last.map_or(0, |l| l.failed);
    let mut head = vec![
        Span::styled(format!("{ok} answered"), t.text),
        Span::styled(" · ", t.dim),
        Span::styled(
            format!("{failed} failed"),
            if failed == 0 { t.ok } else { t.error },
        ),
        Span::styled(" · ", t.dim),
        Span::styled(
            format!(
                "{}/{} switches",
                last.map_or(0, |l| l.switches),
                crate::app::DRILL_PAIRS * 2
            ),
            t.text,
        ),
        Span::styled(
            format!(" · {:.1}s", last.map_or(0.0, |l| l.elapsed.as_secs_f64())),
            t.dim,
        ),
    ];
    match &d.done {
        Some(Ok(r)) => head.push(Span::styled(format!("   {}", summary(r)), t.accent)),
        Some(Err(e)) => head.push(Span::styled(format!("   refused: {e}"), t.error)),
        None => {}
    }
    let rates = d.rates();
    let mut rows = vec![Constraint::Length(1)];
    rows.extend(rates.keys().map(|_| Constraint::Length(3)));
    rows.push(Constraint::Min(0));
    let areas = Layout::vertical(rows).split(inner);
    f.render_widget(Paragraph::new(Line::from(head)), areas[0]);
    let width = inner.width.saturating_sub(16) as usize;
    let max = rates.values().flatten().copied().max().unwrap_or(1).max(1);
    for (i, (slot, series)) in rates.iter().enumerate() {
        let Some(row) = areas.get(i + 1) else { break };
        let [label, chart] =
            Layout::horizontal([Constraint::Length(16), Constraint::Min(1)]).areas(*row);
        let now = series.last().copied().unwrap_or(0);
        let role = app
            .env()
            .map_or(crate::model::Role::Unknown, |e| e.role_of(slot));
        f.render_widget(
            Paragraph::new(vec![
                Line::styled(format!("{} {slot}", role.symbol()), t.role(role)),
                Line::styled(format!("{now}/s"), t.dim),
            ]),
            label,
        );
        let data: Vec<u64> = series.iter().rev().take(width).rev().copied().collect();
        f.render_widget(
            Sparkline::default()
                .data(&data)
                .max(max)
                .style(t.role(role)),
            chart,
        );
    }
}

fn summary(r: &DrillReport) -> String {
    let mut first: Vec<u64> = r.switches.iter().filter_map(|s| s.first_new_ms).collect();
    format!(
        "{} requests, {} failed; new slot answering {} ms after the command (p50)",
        r.sent,
        r.failed,
        DrillReport::percentile(&mut first, 0.5).map_or("-".into(), |v| v.to_string())
    )
}
