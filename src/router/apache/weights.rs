//! Canary weights: the members' load factors (`lbfactor`, `w_lf` on the balancer-manager)
//! in the live balancer, with the same Referer, nonce and read-back as every change.
//!
//! A split puts the canary's members in rotation beside the live slot's, with load factors
//! in the ratio of the shares: 25 % is live 75.00 / canary 25.00 (per member, divided over
//! each slot's members), and mod_proxy_balancer's `byrequests` counts them out exactly. A
//! load factor is at least 1, so 0 % is the canary's members Disabled (the live members' load
//! factor back to 1, Apache's default), and 100 % is the live members on Drain with the
//! canary's at 100. Which of the two slots in rotation is the canary is read from the preview
//! balancer (the canary is the preview slot), so weights need a `preview_balancer`.

use super::*;
use crate::model::Weights;

/// Apache's default load factor (1.00), in hundredths.
const DEFAULT_LF: u32 = 100;

impl Apache {
    /// The split of the live balancer, when two slots are in rotation in it and one of them
    /// is the preview balancer's slot (the canary).
    pub(super) fn split_of(&self, live: &Balancer, preview: Option<&Balancer>) -> Option<Weights> {
        let slots = self.slots_in_rotation(live);
        let canary = self.in_rotation(preview?).0?;
        if slots.len() != 2 || !slots.contains(&canary) {
            return None;
        }
        let live_slot = slots.into_iter().find(|s| *s != canary)?;
        // What each slot's members that take new requests weigh (drained ones none).
        let sum = |slot: &str| -> u32 {
            live.workers
                .iter()
                .filter(|w| self.belongs(w, slot, None) && w.status.serving())
                .map(|w| w.lf)
                .sum()
        };
        let (l, c) = (sum(&live_slot), sum(&canary));
        let percent = if c == 0 {
            0
        } else {
            ((f64::from(c) * 100.0) / f64::from(l + c)).round() as u8
        };
        Some(Weights {
            live: live_slot,
            canary,
            canary_percent: percent,
        })
    }

    /// Set one member's load factor (hundredths) and read it back.
    async fn set_lf(&self, b: &Balancer, w: &Worker, lf: u32) -> Result<Balancer> {
        let field = [("w_lf".to_string(), format!("{:.2}", f64::from(lf) / 100.0))];
        let what = format!("load factor {}", field[0].1);
        self.post_member(
            &b.name,
            &w.url,
            &what,
            &field,
            |x| x.lf == lf,
            &b.nonce,
            Fault::None,
        )
        .await
    }

    /// Set members' flags one after the other, each read back; the balancer as last read.
    async fn set_flags(
        &self,
        mut b: Balancer,
        urls: &[String],
        set: &[(MemberFlag, bool)],
    ) -> Result<Balancer> {
        for u in urls {
            b = self.apply(&b.name, u, set, &b.nonce, Fault::None).await?;
        }
        Ok(b)
    }

    pub(super) async fn set_split(&self, live: &str, canary: &str, percent: u8) -> Result<()> {
        if self.file_mode() {
            bail!(
                "mode = \"file\" has no canary weights (a flag file picks one slot's balancer): \
                 use mode = \"manager\" with a `preview_balancer` for a canary \
                 (docs/apache.md, \"Which mode\"); nothing was changed"
            );
        }
        let Some(preview) = &self.preview else {
            bail!(
                "weights need a `preview_balancer`: the canary is the preview slot, which is how \
                 cutover tells it from the live slot in balancer://{}",
                self.live
            );
        };
        self.slot(live)?;
        self.slot(canary)?;
        if canary == live {
            bail!("`{canary}` is the live slot; a canary is another slot");
        }
        let all = self.read_all().await?;
        let find = |n: &str| {
            all.iter()
                .find(|b| b.name == n)
                .cloned()
                .ok_or_else(|| self.no_balancer(n, &all))
        };
        let (mut bal, pb) = (find(&self.live)?, find(preview)?);
        let split = self.split_of(&bal, Some(&pb));
        let members = |b: &Balancer, slot: &str| -> Vec<Worker> {
            b.workers
                .iter()
                .filter(|w| self.belongs(w, slot, None))
                .cloned()
                .collect()
        };
        let urls = |ws: &[Worker]| ws.iter().map(|w| w.url.clone()).collect::<Vec<_>>();
        if percent == 0 {
            // The abort, whatever the split is: its canary's members out first (the one
            // change that moves traffic), then the live members as they were before it.
            let Some(w) = split else {
                return Ok(());
            };
            let on: Vec<Worker> = members(&bal, &w.canary)
                .into_iter()
                .filter(|m| !m.status.disabled)
                .collect();
            bal = self
                .set_flags(bal, &urls(&on), &[(MemberFlag::Disabled, true)])
                .await?;
            let lives = members(&bal, &w.live);
            if lives.iter().all(|m| m.status.drain) {
                bal = self
                    .set_flags(bal, &urls(&lives), &[(MemberFlag::Drain, false)])
                    .await?;
            }
            for m in members(&bal, &w.live).iter().filter(|m| m.lf != DEFAULT_LF) {
                bal = self.set_lf(&bal, m, DEFAULT_LF).await?;
            }
            return Ok(());
        }
        let now_live = match &split {
            Some(w) => Some(w.live.clone()),
            None => self.in_rotation(&bal).0,
        };
        if now_live.as_deref() != Some(live) {
            bail!(
                "`{live}` is not the live slot of balancer://{} ({}); a split is between the \
                 live slot and a canary; nothing was changed",
                self.live,
                now_live.map_or("no single slot is".into(), |l| format!("{l} is"))
            );
        }
        let (lives, canaries) = (members(&bal, live), members(&bal, canary));
        // 100 % drained every live member; any other share puts them back.
        let all_drained = lives.iter().all(|w| w.status.drain);
        if pb
            .workers
            .iter()
            .any(|w| w.status.in_rotation() && !self.belongs(w, canary, None))
        {
            bail!(
                "the canary must be the preview slot (balancer://{preview} sends to {}): point \
                 the preview at `{canary}` first; nothing was changed",
                self.in_rotation(&pb)
                    .0
                    .unwrap_or_else(|| "several slots".into())
            );
        }
        let usable: Vec<&Worker> = canaries
            .iter()
            .filter(|w| !w.status.stopped && !w.status.standby)
            .collect();
        if usable.is_empty() {
            bail!(
                "no member of `{canary}` in balancer://{} can take traffic ({}); nothing was \
                 changed",
                self.live,
                canaries
                    .iter()
                    .map(|w| format!("{} `{}`", w.url, w.status_text))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let serving_live: Vec<&Worker> = lives.iter().filter(|w| w.status.in_rotation()).collect();
        let (lf_live, lf_canary) = factors(percent, serving_live.len(), usable.len())?;
        // The canary's load factor first when its share grows, the live one's first when it
        // shrinks: the share in between stays between the two steps.
        let growing = split.as_ref().is_none_or(|w| percent > w.canary_percent);
        let mut plan: Vec<(String, u32)> = Vec::new();
        let live_part = serving_live.iter().map(|w| (w.url.clone(), lf_live));
        let canary_part = usable.iter().map(|w| (w.url.clone(), lf_canary));
        if growing {
            plan.extend(canary_part);
            plan.extend(live_part);
        } else {
            plan.extend(live_part);
            plan.extend(canary_part);
        }
        for (url, lf) in plan {
            let Some(w) = bal.worker(&url).cloned() else {
                continue;
            };
            if w.lf != lf {
                bal = self.set_lf(&bal, &w, lf).await?;
            }
        }
        let off: Vec<String> = usable
            .iter()
            .filter(|w| w.status.disabled || w.status.drain)
            .map(|w| w.url.clone())
            .collect();
        bal = self
            .set_flags(
                bal,
                &off,
                &[(MemberFlag::Disabled, false), (MemberFlag::Drain, false)],
            )
            .await?;
        let live_urls: Vec<String> = serving_live.iter().map(|w| w.url.clone()).collect();
        if percent == 100 && !all_drained {
            self.set_flags(bal, &live_urls, &[(MemberFlag::Drain, true)])
                .await?;
        } else if percent < 100 && all_drained {
            self.set_flags(bal, &live_urls, &[(MemberFlag::Drain, false)])
                .await?;
        }
        Ok(())
    }
}

/// The load factors (hundredths) of each live and each canary member for `percent` % to the
/// canary with `k` live and `m` canary members: `(100 - p) / k` and `p / m`, scaled so that
/// none is below 1.00. At 100 % the live members are drained and the canary's are at 100.
fn factors(percent: u8, k: usize, m: usize) -> Result<(u32, u32)> {
    if percent >= 100 {
        return Ok((DEFAULT_LF, 100 * 100));
    }
    if k == 0 || m == 0 {
        bail!("a split needs a live and a canary member in rotation");
    }
    let p = f64::from(percent);
    let (l, c) = ((100.0 - p) / k as f64, p / m as f64);
    let scale = 1.0 / l.min(c).min(1.0);
    let (l, c) = (l * scale, c * scale);
    if l.max(c) > 100.0 {
        bail!(
            "{percent} % over {k} live and {m} canary members needs load factors {l:.2} and \
             {c:.2}, but Apache's are 1 to 100; pick a share nearer 50 %"
        );
    }
    Ok(((l * 100.0).round() as u32, (c * 100.0).round() as u32))
}

#[cfg(test)]
mod tests {
    use super::factors;

    #[test]
    fn load_factors_keep_the_ratio_of_the_shares() {
        assert_eq!(factors(25, 1, 1).ok(), Some((7500, 2500)));
        assert_eq!(factors(5, 1, 1).ok(), Some((9500, 500)));
        assert_eq!(factors(50, 2, 1).ok(), Some((2500, 5000)));
        assert_eq!(factors(100, 1, 1).ok(), Some((100, 10000)));
        assert_eq!(factors(2, 1, 2).ok(), Some((9800, 100)));
        assert!(factors(1, 1, 2).is_err(), "99 : 0.5 does not fit in 1..100");
    }
}
