//! The event pane: every health flip, version and role change, operator action and result.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph};

use crate::app::{App, Focus};
use crate::timefmt;

pub fn draw(f: &mut Frame, area: Rect, app: &App) {
    let t = &app.theme;
    let title = if app.event_scroll > 0 {
        format!(" Events (scrolled back {}) ", app.event_scroll)
    } else {
        " Events ".to_string()
    };
    let block = Block::bordered()
        .title(Span::styled(title, t.title))
        .border_style(if app.focus == Focus::Events {
            t.border_focus
        } else {
            t.border
        });
    let h = area.height.saturating_sub(2) as usize;
    let end = app.events.len().saturating_sub(app.event_scroll);
    let start = end.saturating_sub(h);
    let multi = app.envs.len() > 1;
    let lines: Vec<Line> = app
        .events
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
    let lines = if lines.is_empty() {
        vec![Line::styled("no events yet", t.dim)]
    } else {
        lines
    };
    f.render_widget(Paragraph::new(lines).block(block), area);
}
