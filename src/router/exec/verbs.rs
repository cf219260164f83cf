//! The verbs: which command each one runs, with which placeholders.

use super::*;

impl Exec {
    pub(super) async fn switch(&self, to: &str) -> Result<()> {
        let slot = self.slot(to)?;
        let argv = self.argv(Cmd::SwitchLive)?;
        // Read the router first: `{from}` comes from it, and a swap-style command (Azure's slot
        // swap) run for a slot that is already live would swap it away.
        let before = self.observe_now().await.wrap_err_with(|| {
            format!(
                "cannot read which slot is live before switching to `{to}`; nothing was \
                 changed. Fix `observe` first"
            )
        })?;
        if before.live.as_deref() == Some(to) {
            tracing::info!(router = %self.name, to, "already live; switch_live not run");
            return Ok(());
        }
        let mut v = Values::new(&self.env_name);
        match &before.live {
            Some(l) => v.set("from", l.clone()),
            None => v.missing("from", "observe reports no live slot"),
        }
        v.set("to", to);
        v.set("slot", to);
        v.address(&slot.address);
        let argv = render(Cmd::SwitchLive, argv, &v)?;
        self.run(Cmd::SwitchLive, &argv).await?;
        Ok(())
    }

    pub(super) async fn preview(&self, name: &str) -> Result<()> {
        let slot = self.slot(name)?;
        let argv = self.argv(Cmd::SetPreview)?;
        let mut v = Values::new(&self.env_name);
        self.fill_from(argv, &mut v).await?;
        v.set("slot", name);
        v.address(&slot.address);
        let argv = render(Cmd::SetPreview, argv, &v)?;
        self.run(Cmd::SetPreview, &argv).await?;
        Ok(())
    }

    pub(super) async fn drain_cmd(&self, cmd: Cmd, target: &Target) -> Result<()> {
        let slot = self.slot(&target.slot)?;
        let argv = self.argv(cmd)?;
        let mut v = Values::new(&self.env_name);
        v.set("slot", target.slot.clone());
        match &target.node {
            Some(n) => {
                let node = slot.nodes.iter().find(|x| &x.name == n).ok_or_else(|| {
                    eyre!(
                        "slot `{}` has no node `{n}` (its nodes: {})",
                        slot.name,
                        if slot.nodes.is_empty() {
                            "none configured".to_string()
                        } else {
                            crate::router::comma_list(slot.nodes.iter().map(|x| x.name.as_str()))
                        }
                    )
                })?;
                if !["node", "address", "host"].iter().any(|p| uses(argv, p)) {
                    bail!(
                        "`{}` of node `{target}` refused: the command uses none of {{node}}, \
                         {{address}}, {{host}}, so it would act on the whole slot `{}`; nothing \
                         was run",
                        cmd.key(),
                        slot.name
                    );
                }
                v.set("node", n.clone());
                v.address(&node.address);
            }
            None => {
                v.missing(
                    "node",
                    format!("`{}` is a whole slot, not one of its nodes", target.slot),
                );
                v.address(&slot.address);
            }
        }
        self.fill_from(argv, &mut v).await?;
        let argv = render(cmd, argv, &v)?;
        self.run(cmd, &argv).await?;
        Ok(())
    }

    pub(super) async fn weights_cmd(&self, live: &str, canary: &str, percent: u8) -> Result<()> {
        self.slot(live)?;
        self.slot(canary)?;
        if percent > 0 && canary == live {
            bail!("`{canary}` is the live slot; a canary is another slot");
        }
        let argv = self.argv(Cmd::Weights)?;
        let mut v = Values::new(&self.env_name);
        v.set("live", live);
        v.set("canary", canary);
        v.set("weight", percent.to_string());
        let argv = render(Cmd::Weights, argv, &v)?;
        self.run(Cmd::Weights, &argv).await?;
        Ok(())
    }

    pub(super) async fn maintenance_cmd(&self, on: bool, mode: &MaintenanceMode) -> Result<()> {
        let cmd = if on {
            Cmd::MaintenanceOn
        } else {
            Cmd::MaintenanceOff
        };
        let argv = self.argv(cmd)?;
        let mut v = Values::new(&self.env_name);
        match mode {
            MaintenanceMode::Page => {
                v.set("mode", "page");
                let why = "maintenance is a 503 page, not a redirect to a slot";
                v.missing("to", why);
                v.missing("address", why);
                v.missing("host", why);
            }
            MaintenanceMode::Redirect { to } => {
                let slot = self.slot(to)?;
                v.set("mode", "redirect");
                v.set("to", to.clone());
                v.address(&slot.address);
            }
        }
        self.fill_from(argv, &mut v).await?;
        let argv = render(cmd, argv, &v)?;
        self.run(cmd, &argv).await?;
        Ok(())
    }
}
