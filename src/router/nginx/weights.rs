//! Canary weights: `split_clients` over the request id in `upstreams.conf`, then the checked
//! reload (open-source nginx 1.22 has no runtime weights).
//!
//! While a split is on, `upstreams.conf` ends with
//!
//! ```nginx
//! split_clients "${request_id}" $cutover_shop_canary {
//!     25% "canary";
//!     * "";
//! }
//! map $cutover_shop_canary $cutover_shop_split {
//!     "canary" "http://cutover_shop_green";
//!     default "http://cutover_shop_blue";   # realpath method: $cutover_shop_route
//! }
//! ```
//!
//! and the live route proxies to `$cutover_shop_split` (the include method rewrites
//! `live.conf`; the realpath method's static `live.conf` changes its `proxy_pass`). nginx
//! hashes each request's random id (MurmurHash2) into the percentages, so the share is
//! statistical, in steps of 1 %. 0 % writes the files back as they are without a split.
//! The symlink method keeps its route in per-slot directories and offers no weights.

use super::*;

impl Nginx {
    fn pick_var(&self) -> String {
        format!("{}_canary", self.var_base)
    }
    pub(super) fn split_var(&self) -> String {
        format!("{}_split", self.var_base)
    }

    /// Whether this method can split (the symlink method cannot).
    pub(super) fn can_split(&self) -> bool {
        self.cfg.method != Method::Symlink
    }

    /// The `split_clients` and `map` blocks of a split, for the end of `upstreams.conf`.
    pub(super) fn render_split(&self, w: &Weights) -> Result<String> {
        let canary = self.upstream_url(self.slot(&w.canary)?);
        let live = match self.cfg.method {
            Method::Realpath => format!("${}", self.route_var),
            _ => format!("\"{}\"", self.upstream_url(self.slot(&w.live)?)),
        };
        let shares = if w.canary_percent >= 100 {
            "    * \"canary\";\n".to_string()
        } else {
            format!("    {}% \"canary\";\n    * \"\";\n", w.canary_percent)
        };
        Ok(format!(
            "# canary: {} % of the live traffic of {} to {}, split over the request id\n\
             split_clients \"${{request_id}}\" ${pick} {{\n{shares}}}\n\
             map ${pick} ${split} {{\n    \"canary\" \"{canary}\";\n    default {live};\n}}\n",
            w.canary_percent,
            w.live,
            w.canary,
            pick = self.pick_var(),
            split = self.split_var(),
        ))
    }

    /// The include method's live route while a split is on.
    pub(super) fn render_split_route(&self, live: &str) -> Result<String> {
        self.slot(live)?;
        Ok(format!(
            "# cutover: route={live} split=on\n{}proxy_pass ${};\n",
            self.header("a route"),
            self.split_var()
        ))
    }

    /// The split `upstreams.conf` describes, read from its `split_clients` and `map` blocks.
    /// The realpath method's map default follows the live link: its `live` is left empty
    /// for [`Nginx::read_disk`] to fill in.
    pub(super) fn parse_split(&self, text: &str) -> Option<Weights> {
        let t = tokenize(text);
        let pick = format!("${}", self.pick_var());
        let block = |head: &[&str]| -> Option<Vec<Vec<String>>> {
            let at = t.windows(head.len() + 1).position(|w| {
                w[..head.len()].iter().zip(head).all(|(a, b)| a == b) && w[head.len()] == "{"
            })?;
            let mut stmts = Vec::new();
            let mut cur = Vec::new();
            for tok in &t[at + head.len() + 1..] {
                match tok.as_str() {
                    "}" => return Some(stmts),
                    ";" => stmts.push(std::mem::take(&mut cur)),
                    w => cur.push(w.to_string()),
                }
            }
            None
        };
        let shares = block(&["split_clients", "${request_id}", &pick])?;
        let percent = shares.iter().find_map(|s| match s.as_slice() {
            [p, v] if v == "canary" => match p.as_str() {
                "*" => Some(100),
                p => p.strip_suffix('%')?.parse::<u8>().ok(),
            },
            _ => None,
        })?;
        let map = block(&["map", &pick, &format!("${}", self.split_var())])?;
        let to_slot = |url: &str| {
            self.slots
                .iter()
                .find(|s| self.upstream_url(s) == url)
                .map(|s| s.name.clone())
        };
        let canary = map.iter().find_map(|s| match s.as_slice() {
            [k, v] if k == "canary" => to_slot(v),
            _ => None,
        })?;
        let live = match self.cfg.method {
            Method::Realpath => String::new(),
            _ => map.iter().find_map(|s| match s.as_slice() {
                [k, v] if k == "default" => to_slot(v),
                _ => None,
            })?,
        };
        Some(Weights {
            live,
            canary,
            canary_percent: percent.min(100),
        })
    }

    pub(super) async fn set_split(&self, live: &str, canary: &str, percent: u8) -> Result<()> {
        if !self.can_split() {
            bail!(
                "the nginx method \"symlink\" keeps each route in a per-slot directory and \
                 cannot split traffic; use method \"realpath\" or \"include\" for a canary"
            );
        }
        if percent > 100 {
            bail!("a canary share is 0 to 100 %, not {percent}");
        }
        self.slot(live)?;
        self.slot(canary)?;
        let mut disk = self.read_disk();
        let Some(now_live) = disk.live.clone() else {
            bail!(
                "cannot tell which slot is live from {}; switch live to a slot first",
                self.dir().display()
            );
        };
        if percent == 0 {
            disk.split = None;
        } else {
            if disk.maintenance.is_some() {
                bail!("maintenance is on: turn it off before a canary; nothing was changed");
            }
            if now_live != live {
                bail!(
                    "`{live}` is not the live slot ({now_live} is); a split is between the live \
                     slot and a canary; nothing was changed"
                );
            }
            if canary == live {
                bail!("`{canary}` is the live slot; a canary is another slot");
            }
            self.check_routable(&disk, canary)?;
            disk.split = Some(Weights {
                live: live.to_string(),
                canary: canary.to_string(),
                canary_percent: percent,
            });
        }
        let mut changes = self.base_changes(&disk, &disk.down)?;
        if self.cfg.method == Method::Include && disk.maintenance.is_none() {
            let route = match &disk.split {
                Some(_) => self.render_split_route(&now_live)?,
                None => self.render_route(&now_live)?,
            };
            changes.push(Change::File(
                self.dir().join(Pointer::Live.conf_name()),
                route,
            ));
        }
        self.apply(changes, true).await
    }

    /// After the routes are read: a split counts only when the live route proxies through
    /// it; the realpath method's split goes to whatever the live link names.
    pub(super) fn check_split(&self, disk: &mut Disk) {
        if disk.split.is_none() || self.cfg.method == Method::Symlink {
            disk.split = None;
            return;
        }
        let conf = self.dir().join(Pointer::Live.conf_name());
        let uses = std::fs::read_to_string(&conf).is_ok_and(|t| {
            let want = format!("${}", self.split_var());
            tokenize(&t)
                .windows(2)
                .any(|w| w[0] == "proxy_pass" && w[1] == want)
        });
        let live = disk.live.clone();
        match (&mut disk.split, uses, live) {
            (Some(w), true, Some(live)) => {
                if self.cfg.method == Method::Realpath {
                    w.live = live;
                } else if w.live != live {
                    disk.notes.push(format!(
                        "the canary split in {} falls back to {} but {live} is live (changed \
                         by hand?)",
                        self.upstreams_path().display(),
                        w.live
                    ));
                }
            }
            _ => {
                disk.notes.push(format!(
                    "{} holds a canary split that the live route ({}) does not proxy through: \
                     no traffic is split (changed by hand?)",
                    self.upstreams_path().display(),
                    conf.display()
                ));
                disk.split = None;
            }
        }
    }

    /// A change that would break a split (maintenance) waits until it is back at 0 %.
    pub(super) fn refuse_during_split(&self, disk: &Disk) -> Result<()> {
        if let Some(w) = &disk.split {
            bail!(
                "a canary has {} % of the live traffic: set its weight to 0 (abort the canary) \
                 before maintenance; nothing was changed",
                w.canary_percent
            );
        }
        Ok(())
    }
}
