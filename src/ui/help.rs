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
    for &a in Action::ALL {
        if (a.is_demo() && !app.demo) || a.is_dialog() {
            continue;
        }
        let keys = app.keymap.keys(a).join(" ");
        lines.push(Line::from(vec![
            Span::styled(format!(" {keys:<12}"), t.accent),
            Span::styled(format!("{:<12}", a.name()), t.text),
            Span::styled(a.description(), t.dim),
        ]));
    }
    let k = |a: Action| app.keymap.keys(a).join("/");
    let dialog = format!(
        " {} confirm · {} cancel · {} force past a failed gate · {} take-over another cutover's \
         lock (after the name, if asked for; the gate is re-checked on every poll)",
        k(Action::Confirm),
        k(Action::Cancel),
        k(Action::Force),
        k(Action::TakeOver)
    );
    let sections: [(&str, Vec<String>); 2] = [
        ("In the confirm dialog", vec![dialog]),
        (
            "Reading the screen",
            vec![
                " ● LIVE  ◐ PREVIEW  ○ IDLE  ↓ DRAINING  ⚠ MAINTENANCE  ? UNKNOWN   (roles, read from the router)".into(),
                " ✔ up  ~ degraded (slow)  ✘ down  … unknown   (health, from cutover's own probes)".into(),
            ],
        ),
    ];
    for (title, rows) in sections {
        lines.push(Line::raw(""));
        lines.push(Line::styled(title, t.title));
        lines.extend(rows.into_iter().map(|r| Line::styled(r, t.text)));
    }
    lines.push(Line::raw(""));
    lines.push(Line::styled("any key closes this help", t.dim));
    // Height with wrapped lines counted, so the last section is never cut off.
    let inner = usize::from(104.min(area.width).saturating_sub(2)).max(1);
    let h = lines
        .iter()
        .map(|l| l.width().max(1).div_ceil(inner))
        .sum::<usize>() as u16
        + 2;
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
