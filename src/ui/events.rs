//! The event pane: every health flip, version and role change, operator action and result.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use crate::app::{App, Focus};
use crate::timefmt;

pub fn draw(f: &mut Frame, area: Rect, app: &App) {
    let t = &app.theme;
    let title = if app.log.scroll > 0 {
        format!(" Events (scrolled back {}) ", app.log.scroll)
    } else {
        " Events ".to_string()
    };
    let block = super::pane_block(app, title, Focus::Events);
    let h = area.height.saturating_sub(2) as usize;
    let end = app.log.lines.len().saturating_sub(app.log.scroll);
    let start = end.saturating_sub(h);
    let multi = app.envs.len() > 1;
    let lines: Vec<Line> = app
        .log
        .lines
        .range(start..end)
        .map(|l| {
            let mut spans = vec![Span::styled(format!("{} ", timefmt::clock(l.at)), t.dim)];
            if multi {
                spans.push(Span::styled(format!("{} ", l.env), t.accent));
            }
            spans.push(Span::styled(
                crate::redact::redact(&l.text),
                t.level(l.level),
            ));
            Line::from(spans)
        })
        .collect();
    let lines = super::or_placeholder(lines, "no events yet", app);
    f.render_widget(Paragraph::new(lines).block(block), area);
}
