//! Canary weights in api mode (file mode: split.rs, no config change). Caddy 2.6 has no
//! `weighted_round_robin` (it came in 2.7): the live route's `reverse_proxy` handler lists
//! the upstreams N times, live and canary entries
//! in the ratio of the shares, and Caddy's selection policy picks among the entries.
//!
//! For `p` % the list holds `(100 - p) / g` entries per live server for every `p / g` per
//! canary server (`g = gcd(p, 100)`, then multiplied out over each slot's servers): 5 % is
//! 19 live entries and 1 canary entry, 25 % is 3 and 1, 50 % is 1 and 1; any whole
//! percentage is exact in at most 100 entries per server. With the default `random` policy
//! the share is statistical; `round_robin` makes it exact over each turn of the list.
//!
//! The first canary entry carries an `@id` naming the live slot
//! (`cutover_<env>_canary_from_<live>`; Caddy strips `@id`s before it loads a config), so the
//! split reads back even at 100 %, when the list holds only canary entries. One PATCH of the
//! handler's upstreams (with the config's ETag in `If-Match`) changes the share; in Caddy 2.6
//! every such change is a config reload, which resets requests under keep-alive load (the
//! api mode's caveat). It changes the handler named by `live_id`.

use super::*;
use crate::model::Weights;

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// How many entries each live and each canary server gets for `percent` % with `k` live and
/// `m` canary servers.
pub(super) fn entries(percent: u8, k: usize, m: usize) -> (usize, usize) {
    let p = usize::from(percent.min(100));
    let g = gcd(p, 100).max(1);
    let (l, c) = ((100 - p) / g * m, p / g * k);
    let g2 = gcd(l, c).max(1);
    (l / g2, c / g2)
}

impl Caddy {
    fn marker_prefix(&self) -> String {
        format!("cutover_{}_canary_from_", self.env)
    }

    /// The split an upstreams list describes: the marker names the live slot, the other
    /// slot's entries are the canary's.
    pub(super) fn split_in(&self, upstreams: &Value) -> Option<Weights> {
        let list = upstreams.as_array()?;
        let prefix = self.marker_prefix();
        let live = list.iter().find_map(|u| {
            u.get("@id")?
                .as_str()?
                .strip_prefix(&prefix)
                .map(str::to_string)
        })?;
        let live_slot = self.slot(&live).ok()?;
        let dials = dials_of(upstreams);
        let canary = self
            .slots
            .iter()
            .find(|s| s.name != live && dials.iter().any(|d| s.owns(d)))?;
        let n = dials.iter().filter(|d| canary.owns(d)).count();
        let total = dials
            .iter()
            .filter(|d| canary.owns(d) || live_slot.owns(d))
            .count();
        Some(Weights {
            live,
            canary: canary.name.clone(),
            canary_percent: ((n * 100) as f64 / total.max(1) as f64).round() as u8,
        })
    }

    /// api mode: the path of the handler that carries the live traffic (`live_id`).
    pub(super) fn live_handler(&self, config: &Value) -> Result<Vec<String>> {
        let id = self.id_for(Pointer::Live)?;
        find_id(config, id)
            .ok_or_else(|| eyre!("Caddy's config has no object with @id `{id}` (the live_id)"))
    }

    /// api mode: the live slot and the live handler's upstreams as Caddy holds them.
    fn live_now(&self, config: &Value) -> Result<(String, Vec<String>, Value)> {
        let path = self.live_handler(config)?;
        let ups = get_path(config, &path)
            .map(|h| h["upstreams"].clone())
            .unwrap_or(Value::Null);
        let live = self
            .split_in(&ups)
            .map(|w| w.live)
            .or_else(|| self.slot_of(&dials_of(&ups)).map(|s| s.name.clone()));
        let Some(live) = live else {
            bail!("Caddy's live route names no single slot; switch live to a slot first");
        };
        Ok((live, path, ups))
    }

    /// The split on the live route now, if any (for the verbs that refuse during one).
    pub(super) fn current_split(&self, config: &Value) -> Option<Weights> {
        match self.cfg.mode {
            Mode::File => self.file_split().ok().flatten(),
            Mode::Api => self.split_in(&self.live_now(config).ok()?.2),
        }
    }

    /// Refuse a change that a split would break (drains edit the slots' own upstreams;
    /// maintenance takes the live route).
    pub(super) fn refuse_during_split(&self, config: &Value, what: &str) -> Result<()> {
        if let Some(w) = self.current_split(config) {
            bail!(
                "a canary has {} % of the live traffic: set its weight to 0 (abort the canary) \
                 before {what}; nothing was changed",
                w.canary_percent
            );
        }
        Ok(())
    }

    pub(super) async fn set_split(&self, live: &str, canary: &str, percent: u8) -> Result<()> {
        if self.cfg.mode == Mode::File {
            return self.set_file_split(live, canary, percent).await;
        }
        let live_slot = self.slot(live)?.clone();
        let canary_slot = self.slot(canary)?.clone();
        let (config, tag) = self.get_config().await?;
        let (now_live, path, ups) = self.live_now(&config)?;
        let split = self.split_in(&ups);
        // The live servers as the handler has them (a drained node stays out).
        let mut live_dials: Vec<String> = Vec::new();
        for d in dials_of(&ups) {
            if live_slot.owns(&d) && !live_dials.contains(&d) {
                live_dials.push(d);
            }
        }
        if live_dials.is_empty() {
            live_dials = live_slot.addrs();
        }
        let list: Vec<Value> = if percent == 0 {
            if split.is_none() {
                return Ok(());
            }
            live_dials.iter().map(|d| json!({ "dial": d })).collect()
        } else {
            crate::router::check_split(live, &now_live, canary)?;
            if find_id(&config, &self.maintenance_id()).is_some() {
                bail!("maintenance is on: turn it off before a canary; nothing was changed");
            }
            let canary_dials = canary_slot.addrs();
            let (l, c) = entries(percent, live_dials.len(), canary_dials.len());
            let mut list = Vec::new();
            for d in &live_dials {
                list.extend(std::iter::repeat_n(json!({ "dial": d }), l));
            }
            for d in &canary_dials {
                list.extend(std::iter::repeat_n(json!({ "dial": d }), c));
            }
            if let Some(first) = list
                .iter_mut()
                .find(|u| canary_slot.owns(u["dial"].as_str().unwrap_or_default()))
            {
                first["@id"] = json!(format!("{}{live}", self.marker_prefix()));
            }
            list
        };
        let want = Value::Array(list);
        let at = format!("{}/upstreams", config_path(&path));
        self.call_ok(&Call::change(hyper::Method::PATCH, &at, Some(&want), &tag))
            .await?;
        let (after, _) = self.get_config().await?;
        let got = get_path(&after, &path).map(|h| h["upstreams"].clone());
        let read = got.as_ref().and_then(|u| self.split_in(u));
        let expect = (percent > 0).then(|| (live.to_string(), canary.to_string(), percent));
        if read.map(|w| (w.live, w.canary, w.canary_percent)) != expect {
            bail!(
                "Caddy accepted the change but its live handler now proxies to {:?}",
                got.as_ref().map(dials_of).unwrap_or_default()
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::entries;

    #[test]
    fn entries_keep_the_ratio_in_few_upstreams() {
        assert_eq!(entries(5, 1, 1), (19, 1));
        assert_eq!(entries(25, 1, 1), (3, 1));
        assert_eq!(entries(50, 2, 1), (1, 2), "2 live servers, 1 canary");
        assert_eq!(entries(5, 2, 1), (19, 2));
        assert_eq!(entries(100, 1, 1), (0, 1));
        assert_eq!(entries(33, 1, 1), (67, 33));
    }
}
