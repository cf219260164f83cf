//! The changes: a swap of the slots in a balancer, and a drain; each undone when it fails halfway.

use super::*;

impl Apache {
    /// Make `to` the only slot in rotation in `balancer`: enable its members first, check
    /// one serves, then disable the other slots' members.
    pub(super) async fn swap(&self, balancer: &str, to: &str) -> Result<()> {
        self.slot(to)?;
        let bal = self.read_one(balancer).await?;
        let new: Vec<&Worker> = bal
            .workers
            .iter()
            .filter(|w| self.belongs(w, to, None))
            .collect();
        if new.is_empty() {
            let have: Vec<_> = bal.workers.iter().map(|w| w.url.as_str()).collect();
            bail!(
                "balancer://{balancer} has no member for slot `{to}` (members: {}); add a \
                 BalancerMember with the slot's address, or map one with a [[member]] entry",
                have.join(", ")
            );
        }
        let mut nonces = BTreeMap::from([(bal.name.clone(), bal.nonce.clone())]);
        // 1. Enable the new slot's members.
        let enable: Vec<Change> = new
            .iter()
            .filter(|w| w.status.disabled || w.status.drain)
            .map(|w| {
                (
                    bal.name.clone(),
                    w.url.clone(),
                    vec![(MemberFlag::Disabled, false), (MemberFlag::Drain, false)],
                    vec![
                        (MemberFlag::Disabled, w.status.disabled),
                        (MemberFlag::Drain, w.status.drain),
                    ],
                )
            })
            .collect();
        self.apply_all(nonces.clone(), enable.clone())
            .await
            .wrap_err_with(|| format!("enabling `{to}` in balancer://{balancer} failed"))?;
        // 2. The new slot must really take traffic before the old one is disabled.
        let now = self.read_one(balancer).await?;
        nonces.insert(now.name.clone(), now.nonce.clone());
        let serving = now
            .workers
            .iter()
            .any(|w| self.belongs(w, to, None) && w.status.serving());
        if !serving {
            let undone = self.revert(nonces, &enable).await;
            let states: Vec<_> = now
                .workers
                .iter()
                .filter(|w| self.belongs(w, to, None))
                .map(|w| format!("{} `{}`", w.url, w.status_text))
                .collect();
            bail!(
                "no member of `{to}` in balancer://{balancer} can take traffic ({}): a swap \
                 does not clear Stopped or Hot-standby; {undone}",
                states.join(", ")
            );
        }
        // 3. Disable the other slots' members (members that belong to no slot are left alone).
        let disable: Vec<Change> = now
            .workers
            .iter()
            .filter(|w| !w.status.disabled && !self.belongs(w, to, None))
            .filter(|w| self.owner(w).is_some())
            .map(|w| {
                (
                    now.name.clone(),
                    w.url.clone(),
                    vec![(MemberFlag::Disabled, true)],
                    vec![(MemberFlag::Disabled, false)],
                )
            })
            .collect();
        if let Err(e) = self.apply_all(nonces.clone(), disable).await {
            let undone = self.revert(nonces, &enable).await;
            return Err(e.wrap_err(format!(
                "disabling the other slots in balancer://{balancer} failed; then {undone}"
            )));
        }
        Ok(())
    }

    /// Undo changes already made, last first. Says what happened, for an error message.
    pub(super) async fn revert(&self, nonces: BTreeMap<String, String>, made: &[Change]) -> String {
        let back: Vec<Change> = made
            .iter()
            .rev()
            .map(|(b, w, set, undo)| (b.clone(), w.clone(), undo.clone(), set.clone()))
            .collect();
        if back.is_empty() {
            return "nothing was changed".into();
        }
        match self.apply_all(nonces, back).await {
            Ok(()) => "the members it had enabled were put back as they were".into(),
            Err(e) => format!(
                "putting back the members it had enabled failed too ({e:#}); check the \
                 balancer-manager"
            ),
        }
    }

    /// The members of a target in the managed balancers, with their balancer.
    pub(super) async fn target_members(
        &self,
        t: &Target,
    ) -> Result<(Vec<Balancer>, Vec<(String, Worker)>)> {
        let slot = self.slot(&t.slot)?;
        if let Some(n) = &t.node
            && !slot.nodes.iter().any(|(x, _)| x == n)
        {
            let known: Vec<_> = slot.nodes.iter().map(|(x, _)| x.as_str()).collect();
            bail!(
                "slot `{}` has no node `{n}` (nodes: {})",
                t.slot,
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            );
        }
        let all = self.read_all().await?;
        let mut out = Vec::new();
        let mut bals = Vec::new();
        for name in self.managed() {
            let b = all
                .iter()
                .find(|b| b.name == name)
                .ok_or_else(|| self.no_balancer(name, &all))?;
            for w in &b.workers {
                if self.belongs(w, &t.slot, t.node.as_deref()) {
                    out.push((b.name.clone(), w.clone()));
                }
            }
            bals.push(b.clone());
        }
        if out.is_empty() {
            bail!(
                "no member of {} belongs to `{t}`; members map to slots by URL (the slot's or \
                 node's address) or by [[member]] entries",
                self.managed()
                    .iter()
                    .map(|b| format!("balancer://{b}"))
                    .collect::<Vec<_>>()
                    .join(" or ")
            );
        }
        Ok((bals, out))
    }

    /// Drain (`on`) or undrain the target's members in the managed balancers.
    pub(super) async fn set_drained(&self, t: &Target, on: bool) -> Result<()> {
        let (bals, members) = self.target_members(t).await?;
        // Never drain the last serving member of the live balancer (in file mode, the live
        // slot's own balancer).
        let live_name = if self.file_mode() {
            // Several live= files name no one balancer, and the guard below would find none:
            // refuse rather than drain without it.
            match self.flags(files::LIVE_FLAG)?.as_slice() {
                [one] => one.clone(),
                many => bail!(
                    "{} holds {} live= files ({}), so the live balancer is not known; nothing \
                     was drained. Leave exactly one (`cutover status` shows what Apache routes)",
                    self.flag_dir()?.display(),
                    many.len(),
                    many.join(", ")
                ),
            }
        } else {
            self.live.clone()
        };
        if on && let Some(live) = bals.iter().find(|b| b.name == live_name) {
            let serving_before = live.workers.iter().filter(|w| w.status.serving()).count();
            let serving_after = live
                .workers
                .iter()
                .filter(|w| {
                    w.status.serving()
                        && !members
                            .iter()
                            .any(|(b, m)| *b == live.name && m.url == w.url)
                })
                .count();
            if serving_before > 0 && serving_after == 0 {
                bail!(
                    "refusing to drain `{t}`: balancer://{} would have no member left to take \
                     new requests. Switch live to another slot first, or undrain another node",
                    live.name
                );
            }
        }
        let nonces = bals
            .iter()
            .map(|b| (b.name.clone(), b.nonce.clone()))
            .collect();
        let changes = members
            .iter()
            .filter(|(_, w)| w.status.drain != on)
            .map(|(b, w)| {
                (
                    b.clone(),
                    w.url.clone(),
                    vec![(MemberFlag::Drain, on)],
                    vec![(MemberFlag::Drain, !on)],
                )
            })
            .collect();
        self.apply_all(nonces, changes).await.wrap_err_with(|| {
            format!(
                "{} `{t}` failed",
                if on { "draining" } else { "undraining" }
            )
        })
    }
}
