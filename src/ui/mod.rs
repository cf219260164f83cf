//! Views: one file per panel. Every function takes `&App` and changes nothing.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};

use crate::app::{App, Overlay};

pub mod confirm;
pub mod drill;
pub mod envs;
pub mod events;
pub mod help;
pub mod info;
pub mod slots;
pub mod status;
pub mod theme;

/// Where each panel goes; shared by drawing and mouse hit-testing.
pub struct Areas {
    pub header: Rect,
    pub envs: Option<Rect>,
    pub slots: Vec<Rect>,
    pub info: Rect,
    pub events: Rect,
    pub keybar: Rect,
}

/// Below this width the environment list is folded into the header.
pub const ENV_LIST_MIN_WIDTH: u16 = 100;

pub fn layout(area: Rect, app: &App) -> Areas {
    let slot_h = if area.height >= 36 {
        12
    } else if area.height >= 28 {
        10
    } else {
        8
    };
    let info_h = info::height(app).clamp(4, (area.height / 3).max(4));
    let [header, main, info, events, keybar] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(slot_h),
        Constraint::Length(info_h),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(area);
    let (envs, slots_area) = if area.width >= ENV_LIST_MIN_WIDTH {
        let [l, r] = Layout::horizontal([Constraint::Length(24), Constraint::Min(10)]).areas(main);
        (Some(l), r)
    } else {
        (None, main)
    };
    let n = app.env().map_or(1, |e| e.slots.len().max(1));
    let slots = Layout::horizontal(vec![Constraint::Ratio(1, n as u32); n])
        .split(slots_area)
        .to_vec();
    Areas {
        header,
        envs,
        slots,
        info,
        events,
        keybar,
    }
}

/// Draw the whole screen.
pub fn draw(f: &mut Frame, app: &App) {
    let a = layout(f.area(), app);
    status::header(f, a.header, app);
    if let Some(r) = a.envs {
        envs::draw(f, r, app);
    }
    slots::draw(f, &a.slots, app);
    info::draw(f, a.info, app);
    match app.env().and_then(|e| e.drill.as_ref()) {
        Some(d) => drill::draw(f, a.events, app, d),
        None => events::draw(f, a.events, app),
    }
    status::keybar(f, a.keybar, app);
    match &app.overlay {
        Overlay::None => {}
        Overlay::Help => help::draw(f, f.area(), app),
        Overlay::Confirm(c) => confirm::draw(f, f.area(), app, c),
    }
}

/// A centered rectangle of at most `w` x `h`.
pub fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    )
}

/// Cut a string to `n` characters, marking the cut with `…`.
pub fn fit(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else if n == 0 {
        String::new()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
}
