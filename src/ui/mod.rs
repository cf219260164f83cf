//! Views: one file per panel. Every function takes `&App` and changes nothing.

use std::ops::Range;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};

use crossterm::event::{MouseButton, MouseEvent, MouseEventKind};
use ratatui::layout::Position;

use ratatui::text::{Line, Span};
use ratatui::widgets::Block;

use crate::app::{App, Event, Focus, Hit, Overlay};
pub use crate::text::fit;

pub mod confirm;
pub mod drill;
pub mod envs;
pub mod events;
pub mod help;
pub mod info;
pub mod slots;
pub mod status;
pub mod traffic;

/// Where each panel goes; shared by drawing and mouse hit-testing.
pub struct Areas {
    pub header: Rect,
    pub envs: Option<Rect>,
    /// One column per slot on screen: `slots[i]` shows slot `shown.start + i`.
    pub slots: Vec<Rect>,
    /// The slots on screen: all of them, or the page holding the selection (see [`slot_page`]).
    pub shown: Range<usize>,
    pub info: Rect,
    /// The traffic chart, where there is room for it beside the event pane (see
    /// [`traffic::has_data`]); at 80x24 the slot columns' figures stand in for it.
    pub chart: Option<Rect>,
    pub events: Rect,
    pub keybar: Rect,
}

/// Below this width the environment list is folded into the header.
pub const ENV_LIST_MIN_WIDTH: u16 = 100;

/// A slot column is never narrower than this (borders included) while another column could be
/// paged away instead: enough for "✔ up 200 12ms for 3m" and "v1.6.0-rc1 3f9a2c1", and three
/// columns still fit an 80-column terminal.
pub const SLOT_MIN_WIDTH: u16 = 26;

/// The slots shown in `width` columns: all of them when they fit at [`SLOT_MIN_WIDTH`],
/// otherwise a page of as many as fit, the one holding `selected`. Pages are whole: the last
/// one ends at the last slot (so it may share slots with the page before it).
pub fn slot_page(width: u16, n: usize, selected: usize) -> Range<usize> {
    let per = usize::from(width / SLOT_MIN_WIDTH).max(1);
    if n <= per {
        return 0..n;
    }
    let selected = selected.min(n - 1);
    let start = (selected / per * per).min(n - per);
    start..start + per
}

pub fn layout(area: Rect, app: &App) -> Areas {
    let slot_h = if area.height >= 36 {
        12
    } else if area.height >= 28 {
        10
    } else {
        8
    };
    // Below the header and key bar: the slots come first (at least role, health and version),
    // then the event pane (one line at least); the Traffic pane only where both still fit.
    let rest = area.height.saturating_sub(2);
    let slot_h = slot_h.min(rest.saturating_sub(3)).max(5.min(rest));
    let below = rest - slot_h;
    let info_h = if below >= 4 + 3 {
        info::height(app)
            .clamp(4, (area.height / 3).max(4))
            .min(below - 3)
    } else {
        0
    };
    let [header, main, info, events, keybar] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(slot_h),
        Constraint::Length(info_h),
        Constraint::Min(0),
        Constraint::Length(1),
    ])
    .areas(area);
    let (envs, slots_area) = if area.width >= ENV_LIST_MIN_WIDTH {
        let [l, r] = Layout::horizontal([Constraint::Length(24), Constraint::Min(10)]).areas(main);
        (Some(l), r)
    } else {
        (None, main)
    };
    // The chart shares the event pane's area, when the event pane keeps 6 rows beside it.
    let charted = app
        .env()
        .is_some_and(|e| e.drill.is_none() && traffic::has_data(e));
    let (chart, events) = if charted && events.height >= traffic::MIN_HEIGHT + 6 {
        let h = (events.height / 2).clamp(traffic::MIN_HEIGHT, 14);
        let [c, ev] = Layout::vertical([Constraint::Length(h), Constraint::Min(0)]).areas(events);
        (Some(c), ev)
    } else {
        (None, events)
    };
    let n = app.env().map_or(0, |e| e.slots.len());
    let shown = slot_page(slots_area.width, n, app.selected_slot);
    let cols = shown.len().max(1);
    let slots = Layout::horizontal(vec![Constraint::Ratio(1, cols as u32); cols])
        .split(slots_area)
        .to_vec();
    Areas {
        header,
        envs,
        slots,
        shown,
        info,
        chart,
        events,
        keybar,
    }
}

/// What a mouse event means to the App: a left click on a panel, hit-tested against the
/// layout of a screen of `app.size`; `None` for anything else.
pub fn click(app: &App, m: MouseEvent) -> Option<Event> {
    if !matches!(m.kind, MouseEventKind::Down(MouseButton::Left)) {
        return None;
    }
    let areas = layout(Rect::new(0, 0, app.size.0, app.size.1), app);
    let p = Position::new(m.column, m.row);
    if let Some(list) = areas.envs
        && list.contains(p)
    {
        return Some(Event::Click(Hit::EnvRow(
            m.row.saturating_sub(list.y + 1) as usize
        )));
    }
    if let Some(i) = areas.slots.iter().position(|r| r.contains(p)) {
        return Some(Event::Click(Hit::Slot(areas.shown.start + i)));
    }
    areas
        .events
        .contains(p)
        .then_some(Event::Click(Hit::Events))
}

/// Draw the whole screen.
pub fn draw(f: &mut Frame, app: &App) {
    let a = layout(f.area(), app);
    status::header(f, a.header, app);
    if let Some(r) = a.envs {
        envs::draw(f, r, app);
    }
    slots::draw(f, &a.slots, a.shown.clone(), app);
    info::draw(f, a.info, app);
    if let Some(r) = a.chart {
        traffic::draw(f, r, app);
    }
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

/// A bordered pane titled `title`, its border highlighted while `pane` has the focus.
pub fn pane_block(app: &App, title: String, pane: Focus) -> Block<'static> {
    let t = &app.theme;
    Block::bordered()
        .title(Span::styled(title, t.title))
        .border_style(if app.focus == pane {
            t.border_focus
        } else {
            t.border
        })
}

/// A pane's `lines`, or the dimmed `empty` when there are none.
pub fn or_placeholder<'a>(lines: Vec<Line<'a>>, empty: &'a str, app: &App) -> Vec<Line<'a>> {
    if lines.is_empty() {
        vec![Line::styled(empty, app.theme.dim)]
    } else {
        lines
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
