//! The environment list (with its filter).

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use crate::app::{App, Focus};
use crate::model::Health;

pub fn draw(f: &mut Frame, area: Rect, app: &App) {
    let t = &app.theme;
    let title = if app.filter.shown() {
        let cursor = if app.filter.typing { "▏" } else { "" };
        format!(" /{}{cursor} ", app.filter.text)
    } else {
        format!(" Environments ({}) ", app.envs.len())
    };
    let block = super::pane_block(app, title, Focus::Environments);
    let width = area.width.saturating_sub(4) as usize;
    let lines: Vec<Line> = app
        .visible_envs()
        .into_iter()
        .map(|i| {
            let e = &app.envs[i];
            let live = e.live().unwrap_or("?");
            let worst = e
                .slots
                .iter()
                .find(|s| Some(s.name.as_str()) == e.live())
                .map_or(Health::Unknown, |s| s.health());
            let warn = !e.warnings().is_empty();
            let mark = if i == app.selected_env { "›" } else { " " };
            let name = super::fit(&e.config.name, width.saturating_sub(live.len() + 4));
            let mut spans = vec![
                Span::styled(
                    format!("{mark}{name} "),
                    if i == app.selected_env {
                        t.title
                    } else {
                        t.text
                    },
                ),
                Span::styled(worst.symbol(), t.health(worst)),
                Span::styled(format!(" {live}"), t.dim),
            ];
            if warn {
                spans.push(Span::styled(" !", t.warning));
            }
            let line = Line::from(spans);
            if i == app.selected_env {
                line.style(t.selected)
            } else {
                line
            }
        })
        .collect();
    let lines = super::or_placeholder(lines, " no match", app);
    f.render_widget(Paragraph::new(lines).block(block), area);
}
