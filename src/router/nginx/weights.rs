//! Canary weights of the include method: `split_clients` over the request id in
//! `upstreams.conf`, then the checked reload, with a sticky cookie. (The realpath method, the
//! default, splits over bucket links without a reload: buckets.rs.)
//!
//! While a split is on, `upstreams.conf` ends with
//!
//! ```nginx
//! split_clients "${request_id}" $cutover_shop_pick {
//!     25% "green";
//!     * "blue";
//! }
//! map $cookie_cutover_shop $cutover_shop_side {
//!     "green" "green";
//!     "blue" "blue";
//!     default $cutover_shop_pick;
//! }
//! map $cutover_shop_side $cutover_shop_split {
//!     "green" "http://cutover_shop_green";
//!     default "http://cutover_shop_blue";
//! }
//! ```
//!
//! and `live.conf` proxies to `$cutover_shop_split` and sets the cookie
//! `cutover_shop=<the slot it was sent to>`. A client that sends the cookie back stays on
//! its slot while the share moves; a client without it is split by the hash of its random
//! request id (MurmurHash2), so the share is statistical, in steps of 1 %. 0 % writes the
//! files back without the split: every request, cookie or not, goes to the live slot again.
//! The symlink method keeps its route in per-slot directories and offers no weights.

use super::*;

impl Nginx {
    fn pick_var(&self) -> String {
        format!("{}_pick", self.var_base)
    }
    fn side_var(&self) -> String {
        format!("{}_side", self.var_base)
    }
    pub(super) fn split_var(&self) -> String {
        format!("{}_split", self.var_base)
    }
    /// The sticky cookie's name: `canary_cookie`, or `cutover_<environment>`.
    pub(super) fn cookie(&self) -> String {
        self.cfg
            .canary_cookie
            .clone()
            .unwrap_or_else(|| self.var_base.clone())
    }

    /// Whether this method can split (the symlink method cannot).
    pub(super) fn can_split(&self) -> bool {
        self.cfg.method != Method::Symlink
    }

    /// The `split_clients` and `map` blocks of a split, for the end of `upstreams.conf`.
    pub(super) fn render_split(&self, w: &Weights) -> Result<String> {
        let canary = self.upstream_url(self.slot(&w.canary)?);
        let live = format!("\"{}\"", self.upstream_url(self.slot(&w.live)?));
        let (c, l) = (&w.canary, &w.live);
        let shares = if w.canary_percent >= 100 {
            format!("    * \"{c}\";\n")
        } else {
            format!("    {}% \"{c}\";\n    * \"{l}\";\n", w.canary_percent)
        };
        Ok(format!(
            "# canary: {} % of the live traffic of {l} to {c}, split over the request id; a \
             client keeps its slot by the cookie {cookie}\n\
             split_clients \"${{request_id}}\" ${pick} {{\n{shares}}}\n\
             map $cookie_{cookie} ${side} {{\n    \"{c}\" \"{c}\";\n    \"{l}\" \"{l}\";\n    \
             default ${pick};\n}}\n\
             map ${side} ${split} {{\n    \"{c}\" \"{canary}\";\n    default {live};\n}}\n",
            w.canary_percent,
            cookie = self.cookie(),
            pick = self.pick_var(),
            side = self.side_var(),
            split = self.split_var(),
        ))
    }

    /// What the live route says while a split is on: proxy through it, set the cookie.
    pub(super) fn split_directives(&self) -> String {
        format!(
            "add_header Set-Cookie \"{}=${}; Path=/; HttpOnly; SameSite=Lax\" always;\n\
             proxy_pass ${};\n",
            self.cookie(),
            self.side_var(),
            self.split_var()
        )
    }

    /// The include method's live route while a split is on.
    pub(super) fn render_split_route(&self, live: &str) -> Result<String> {
        self.slot(live)?;
        Ok(format!(
            "# cutover: route={live} split=on\n{}{}",
            self.header("a route"),
            self.split_directives()
        ))
    }

    /// The split `upstreams.conf` describes, read from its `split_clients` and `map` blocks.
    pub(super) fn parse_split(&self, text: &str) -> Option<Weights> {
        let t = tokenize(text);
        let pick = format!("${}", self.pick_var());
        let side = format!("${}", self.side_var());
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
        let map = block(&["map", &side, &format!("${}", self.split_var())])?;
        let to_slot = |url: &str| {
            self.slots
                .iter()
                .find(|s| self.upstream_url(s) == url)
                .map(|s| s.name.clone())
        };
        let canary = map.iter().find_map(|s| match s.as_slice() {
            [k, v] if k != "default" && to_slot(v).as_ref() == Some(k) => Some(k.clone()),
            _ => None,
        })?;
        let percent = shares.iter().find_map(|s| match s.as_slice() {
            [p, v] if *v == canary => match p.as_str() {
                "*" => Some(100),
                p => p.strip_suffix('%')?.parse::<u8>().ok(),
            },
            _ => None,
        })?;
        let live = map.iter().find_map(|s| match s.as_slice() {
            [k, v] if k == "default" => to_slot(v),
            _ => None,
        })?;
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
        self.slot(live)?;
        self.slot(canary)?;
        let mut disk = self.read_disk();
        let Some(now_live) = disk.live.clone() else {
            bail!(
                "cannot tell which slot is live from {}; switch live to a slot first",
                self.dir().display()
            );
        };
        let split = if percent == 0 {
            None
        } else {
            if disk.maintenance.is_some() {
                bail!("maintenance is on: turn it off before a canary; nothing was changed");
            }
            crate::router::check_split(live, &now_live, canary)?;
            self.check_routable(&disk, canary)?;
            Some(Weights {
                live: live.to_string(),
                canary: canary.to_string(),
                canary_percent: percent,
            })
        };
        if self.cfg.method == Method::Realpath {
            let base = self.base_changes(&disk, &disk.down)?;
            return self.apply_route(base, Vec::new(), split.as_ref()).await;
        }
        disk.split = split;
        let mut changes = self.base_changes(&disk, &disk.down)?;
        if disk.maintenance.is_none() {
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

    /// After the include method's routes are read: a split counts only when the live route
    /// proxies through it.
    pub(super) fn check_split(&self, disk: &mut Disk) {
        if disk.split.is_none() {
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
                if w.live != live {
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
