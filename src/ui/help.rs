//! The help overlay, generated from the keymap.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Wrap};

use crate::app::App;
use crate::keymap::Action;

pub fn draw(f: &mut Frame, area: Rect, app: &App) {
    let t = &app.theme;
    let mut lines = vec![Line::styled("Keys", t.title)];
    for a in Action::ALL {
        if a.is_demo() && !app.demo {
            continue;
        }
        let keys = app.keymap.keys(a).join(" ");
        lines.push(Line::from(vec![
            Span::styled(format!(" {keys:<12}"), t.accent),
            Span::styled(format!("{:<12}", a.name()), t.text),
            Span::styled(a.description(), t.dim),
        ]));
    }
    let sections: [(&str, &[&str]); 2] = [
        (
            "In the confirm dialog",
            &[
                " y / Enter confirm · n / Esc cancel · F force past a failed gate (after the name, if asked for)",
            ],
        ),
        (
            "Reading the screen",
            &[
                " ● LIVE  ◐ PREVIEW  ○ IDLE  ↓ DRAINING  ⚠ MAINTENANCE  ? UNKNOWN   (roles, read from the router)",
                " ✔ up  ~ degraded (slow)  ✘ down  … unknown   (health, from cutover's own probes)",
            ],
        ),
    ];
    for (title, rows) in sections {
        lines.push(Line::raw(""));
        lines.push(Line::styled(title, t.title));
        lines.extend(rows.iter().map(|r| Line::styled(*r, t.text)));
    }
    lines.push(Line::raw(""));
    lines.push(Line::styled("any key closes this help", t.dim));
    let h = lines.len() as u16 + 2;
    let r = super::centered(area, 104, h);
    f.render_widget(Clear, r);
    f.render_widget(
        Paragraph::new(lines).wrap(Wrap { trim: false }).block(
            Block::bordered()
                .title(Span::styled(" Help ", t.title))
                .border_style(t.border_focus),
        ),
        r,
    );
}
