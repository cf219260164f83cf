//! Canary weights in `mode = "map"`: the public frontend sends `rand(100) < weight` of its
//! requests to the backend under `canary_key`, and the rest to the live key's backend.
//!
//! Both values live in the same map as the live key: `<canary_key>` holds the canary's
//! backend and `<canary_key>.weight` its share (read as text with `map()`, 0 when absent,
//! and cast to an integer by `sub`: `map_str_int` would parse every value of the map as an
//! integer when HAProxy loads it, and the live key's values are backend names). A
//! change of share is one `set map` on the weight key, which HAProxy applies atomically and
//! without a reload; 0 % is that one command. Why not `set server be/srv weight N`: in the
//! map setup each slot is its own backend (so each slot keeps its own health checks and its
//! own request and error counters, which the canary analysis reads), and server weights only
//! balance servers *within* one backend.

use color_eyre::eyre::{Result, bail};

use super::Haproxy;
use super::map::MapSetup;
use super::stats::map_get;
use crate::model::Weights;

impl MapSetup {
    /// `<canary_key>.weight`, when canary weights are configured.
    pub(super) fn weight_key(&self) -> Option<&str> {
        self.canary_weight_key.as_deref()
    }

    /// The canary's share as the map holds it (0 when the key is absent or not a number).
    fn weight_in(&self, entries: &[(String, String)]) -> u8 {
        self.weight_key()
            .and_then(|k| map_get(entries, k))
            .and_then(|v| v.trim().parse::<u8>().ok())
            .map_or(0, |w| w.min(100))
    }

    /// The split the map describes, for `observe()`: absent at 0 %.
    pub(super) fn split(
        &self,
        entries: &[(String, String)],
        live: Option<&str>,
    ) -> Option<Weights> {
        let percent = self.weight_in(entries);
        if percent == 0 {
            return None;
        }
        let backend = map_get(entries, self.canary_key.as_deref()?)?;
        Some(Weights {
            live: live?.to_string(),
            canary: self.slot_of(backend)?,
            canary_percent: percent,
        })
    }

    /// A drain of the backend that has a canary share would answer that share with 503.
    pub(super) fn refuse_canary_drain(
        &self,
        entries: &[(String, String)],
        backend: &str,
        slot: &str,
    ) -> Result<()> {
        let canary = self.canary_key.as_deref().and_then(|k| map_get(entries, k));
        let percent = self.weight_in(entries);
        if percent > 0 && canary == Some(backend) {
            bail!(
                "slot `{slot}` is the canary with {percent} % of the live traffic: set its weight \
                 to 0 first; nothing was changed"
            );
        }
        Ok(())
    }

    /// Maintenance takes all the live traffic; the canary rule would keep sending its share
    /// to the canary, so maintenance waits until the split is back at 0 %.
    pub(super) fn refuse_during_split(&self, entries: &[(String, String)]) -> Result<()> {
        let percent = self.weight_in(entries);
        if percent > 0 {
            bail!(
                "a canary has {percent} % of the live traffic: set its weight to 0 (abort the \
                 canary) before maintenance; nothing was changed"
            );
        }
        Ok(())
    }
}

impl Haproxy {
    /// After a swap: the new live slot takes everything, so a leftover share goes to 0.
    pub(super) async fn end_split(&self, m: &MapSetup, entries: &[(String, String)]) -> Result<()> {
        if let Some(k) = m.weight_key()
            && m.weight_in(entries) > 0
        {
            self.set_key(m, k, "0").await?;
        }
        Ok(())
    }

    pub(super) async fn weights_map(
        &self,
        m: &MapSetup,
        live: &str,
        canary: &str,
        percent: u8,
    ) -> Result<()> {
        let (Some(canary_key), Some(weight_key)) = (m.canary_key.as_deref(), m.weight_key()) else {
            bail!(
                "this haproxy router has no `canary_key`: add the canary rule to the public \
                 frontend (docs/haproxy.md, \"Canary\") and set `canary_key`"
            );
        };
        let entries = self.map_entries(m).await?;
        let live_backend = m.backend_of(live)?;
        let live_now = map_get(&entries, &m.live_key);
        if percent == 0 {
            // The abort: one `set map`, whatever else the map says.
            if m.weight_in(&entries) > 0 {
                self.set_key(m, weight_key, "0").await?;
            }
            return self.persist_map(m).await;
        }
        if m.maintenance_on(&entries) {
            bail!("maintenance is on: turn it off before a canary; nothing was changed");
        }
        if live_now != Some(live_backend) {
            bail!(
                "`{live}` is not the live slot (the map's `{}` -> {}); a split is between the \
                 live slot and a canary; nothing was changed",
                m.live_key,
                live_now.unwrap_or("(nothing)")
            );
        }
        if canary == live {
            bail!("`{canary}` is the live slot; a canary is another slot");
        }
        let backend = m.backend_of(canary)?;
        self.require_backend(backend, canary).await?;
        self.ensure_serving(backend, canary).await?;
        let before = m.weight_in(&entries);
        let moved = map_get(&entries, canary_key) != Some(backend);
        if moved {
            // Another canary first loses its share, then the key moves.
            if before > 0 {
                self.set_key(m, weight_key, "0").await?;
            }
            self.set_key(m, canary_key, backend).await?;
        }
        self.set_key(m, weight_key, &percent.to_string()).await?;
        if let Err(e) = self.persist_map(m).await {
            // A share that a reload would lose is not kept: the one before it comes back (a
            // canary that moved keeps 0 %). The abort (0 %) above is kept either way.
            let back = if moved { 0 } else { before };
            let put_back = match self.set_key(m, weight_key, &back.to_string()).await {
                Ok(()) => format!("the share was put back to {back} %"),
                Err(b) => format!("putting the share back to {back} % failed too: {b:#}"),
            };
            return Err(e.wrap_err(format!(
                "{percent} % to `{canary}` was not kept; {put_back}"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::config::tests::{MAP, cfg};
    use super::*;

    #[test]
    fn the_split_is_read_from_the_canary_keys() {
        let mut c = cfg(MAP);
        c.canary_key = Some("canary".into());
        let m = MapSetup::from(&c);
        let e = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let green = m.backends.get("green").cloned().unwrap_or_default();
        let with = e(&[("canary", &green), ("canary.weight", "25")]);
        assert_eq!(
            m.split(&with, Some("blue")),
            Some(Weights {
                live: "blue".into(),
                canary: "green".into(),
                canary_percent: 25
            })
        );
        assert_eq!(m.split(&e(&[("canary", &green)]), Some("blue")), None);
        let zero = e(&[("canary", &green), ("canary.weight", "0")]);
        assert_eq!(m.split(&zero, Some("blue")), None);
        let junk = e(&[("canary", &green), ("canary.weight", "lots")]);
        assert_eq!(m.split(&junk, Some("blue")), None);
        assert!(m.refuse_during_split(&with).is_err());
        assert!(m.refuse_during_split(&zero).is_ok());
        assert!(m.refuse_canary_drain(&with, &green, "green").is_err());
        assert!(m.refuse_canary_drain(&zero, &green, "green").is_ok());
    }
}
