//! Where a request on the live or preview listener goes: the preview header or cookie, the
//! canary's sticky cookie and split, maintenance (its page, the bypass, a redirect and its loop
//! guard).

use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::REDIRECTED_HEADER;
use crate::proxy::state::{Listener, Shared};

/// The value of the request's cookie `name`, if it carries one.
pub(super) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| k.trim() == name)
        .map(|(_, v)| v.trim())
}

/// Whether the request carries `header` (any value but empty or `0`) or `cookie` set to `1`.
pub(super) fn flagged(
    headers: &HeaderMap,
    header: Option<&HeaderName>,
    cookie_name: Option<&str>,
) -> bool {
    let header_on = header
        .and_then(|h| headers.get(h))
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| !v.trim().is_empty() && v.trim() != "0");
    header_on || cookie_name.is_some_and(|c| cookie(headers, c) == Some("1"))
}

/// Whether the request carries the bypass cookie (`NAME=1`) or the bypass header.
pub(super) fn bypasses(shared: &Shared, headers: &HeaderMap) -> bool {
    let o = &shared.opts;
    flagged(headers, Some(&o.bypass_header), Some(&o.bypass_cookie))
}

/// What the answer says about the canary's sticky cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sticky {
    Keep,
    /// Pin the client to this slot.
    Set(usize),
    /// No split any more: forget the pin.
    Clear,
}

pub(super) enum Route {
    Slot {
        slot: usize,
        redirected: bool,
        pin: Sticky,
    },
    Page(&'static str),
    NoPreview,
}

/// A live request outside maintenance: the preview slot when it asks for it (the preview
/// header or cookie), else the slot its sticky cookie names while a canary splits the traffic
/// (the live or the canary slot), else the split's choice, pinned from now on.
pub(super) fn live_route(shared: &Shared, headers: &HeaderMap) -> (usize, Sticky) {
    let o = &shared.opts;
    if flagged(
        headers,
        o.preview_header.as_ref(),
        o.preview_cookie.as_deref(),
    ) && let Some(slot) = shared.preview()
    {
        return (slot, Sticky::Keep);
    }
    let Some(name) = o.sticky_cookie.as_deref() else {
        return (shared.live_or_canary(), Sticky::Keep);
    };
    let pinned = cookie(headers, name);
    match shared.canary() {
        Some((canary, _)) => {
            let live = shared.live();
            let named = [live, canary]
                .into_iter()
                .find(|&i| pinned.is_some_and(|p| shared.slots[i].name == p));
            match named {
                Some(slot) => (slot, Sticky::Keep),
                None => {
                    let slot = shared.live_or_canary();
                    (slot, Sticky::Set(slot))
                }
            }
        }
        None if pinned.is_some() => (shared.live(), Sticky::Clear),
        None => (shared.live(), Sticky::Keep),
    }
}

/// The `Set-Cookie` that carries `pin` out, if any.
pub(super) fn pin_cookie(shared: &Shared, pin: Sticky) -> Option<HeaderValue> {
    let name = shared.opts.sticky_cookie.as_deref()?;
    let text = match pin {
        Sticky::Keep => return None,
        Sticky::Set(slot) => format!(
            "{name}={}; Path=/; HttpOnly; SameSite=Lax",
            shared.slots.get(slot)?.name
        ),
        Sticky::Clear => format!("{name}=; Path=/; Max-Age=0"),
    };
    HeaderValue::from_str(&text).ok()
}

pub(super) fn route(shared: &Shared, listener: Listener, headers: &HeaderMap) -> Route {
    if listener == Listener::Preview {
        return match shared.preview() {
            Some(slot) => Route::Slot {
                slot,
                redirected: false,
                pin: Sticky::Keep,
            },
            None => Route::NoPreview,
        };
    }
    let live = shared.live();
    let Some(mode) = shared.maint() else {
        let (slot, pin) = live_route(shared, headers);
        return Route::Slot {
            slot,
            redirected: false,
            pin,
        };
    };
    if bypasses(shared, headers) {
        return Route::Slot {
            slot: live,
            redirected: false,
            pin: Sticky::Keep,
        };
    }
    match mode {
        None => Route::Page("page"),
        // The loop guard: a request some cutover proxy already redirected stays here.
        Some(_) if headers.contains_key(REDIRECTED_HEADER) => Route::Page("loop-guard"),
        Some(to) => Route::Slot {
            slot: to,
            redirected: true,
            pin: Sticky::Keep,
        },
    }
}
