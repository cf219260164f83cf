//! `cutover demo`: three slots on loopback (blue v1.4.2 live, green v1.5.0 preview, staging
//! v1.6.0-rc1 idle) behind cutover's embedded proxy, described by an ordinary config — the one
//! `cutover demo --print-config` prints.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use color_eyre::eyre::{Result, WrapErr};

use crate::config::Config;
use crate::proxy::ProxyHandle;
use crate::router::RouterConfig;
use crate::slotserver::{SlotControls, SlotServer};

/// `cutover demo`'s options.
#[derive(Debug, clap::Args, Clone)]
pub struct DemoArgs {
    /// Run the demo world without the TUI (use `cutover` in another terminal)
    #[arg(long)]
    pub no_tui: bool,
    /// Print the config that describes the demo world, and exit
    #[arg(long)]
    pub print_config: bool,
    /// Port of the live listener
    #[arg(long, default_value_t = 8080)]
    pub live_port: u16,
    /// Port of the preview listener
    #[arg(long, default_value_t = 8081)]
    pub preview_port: u16,
    /// Port of the embedded proxy's admin API
    #[arg(long, default_value_t = 8089)]
    pub admin_port: u16,
    /// First of three ports for the slots blue, green, staging
    #[arg(long, default_value_t = 9101)]
    pub slot_port: u16,
    /// Mark the demo environment `production = true`: every dialog asks for its name typed
    /// (try the one-key rollback there)
    #[arg(long)]
    pub production: bool,
}

pub const SLOTS: [(&str, &str); 3] = [
    ("blue", "1.4.2"),
    ("green", "1.5.0"),
    ("staging", "1.6.0-rc1"),
];
pub const ENV: &str = "demo";

/// Refuse ports the demo cannot use (a usage error, exit 2): 0, slot ports past 65535, or
/// one port given to two listeners.
pub fn check_args(a: &DemoArgs) -> std::result::Result<(), String> {
    let last_slot = a.slot_port as usize + SLOTS.len() - 1;
    if last_slot > u16::MAX as usize {
        return Err(format!(
            "--slot-port {} is too high: the {} slots need ports {}..={last_slot}, past 65535",
            a.slot_port,
            SLOTS.len(),
            a.slot_port
        ));
    }
    let mut ports = vec![
        ("--live-port", a.live_port),
        ("--preview-port", a.preview_port),
        ("--admin-port", a.admin_port),
    ];
    for (i, (name, _)) in SLOTS.iter().enumerate() {
        ports.push((name, (a.slot_port as usize + i) as u16));
    }
    for (i, (flag, p)) in ports.iter().enumerate() {
        if *p == 0 {
            return Err(format!("{flag} 0 is not a port the demo can be reached on"));
        }
        if let Some((other, _)) = ports[..i].iter().find(|(_, q)| q == p) {
            let what = |f: &str| {
                if f.starts_with("--") {
                    f.to_string()
                } else {
                    format!("slot `{f}` (--slot-port)")
                }
            };
            return Err(format!(
                "{} and {} are both port {p}; give each listener its own port",
                what(other),
                what(flag)
            ));
        }
    }
    Ok(())
}

/// The demo world's config text.
pub fn config_text(a: &DemoArgs, state_dir: &Path) -> String {
    let mut s = format!(
        r#"# The demo world: three slots on loopback and cutover's embedded proxy in front of them.
# Run it with `cutover demo --no-tui`, then `cutover --config THIS_FILE` in another terminal.

[settings]
poll_interval = "1s"          # how often every slot is polled
timeout = "800ms"             # per probe request
degraded_after = "300ms"      # a healthy answer slower than this shows as degraded
theme = "dark"                # dark, light, high-contrast, colorblind, or a theme file
gate_checks = 3               # healthy checks in a row a slot needs before it may go live
state_dir = "{state}"

[[environment]]
name = "{env}"
public_url = "http://127.0.0.1:{live}/"      # what users reach: the live listener
preview_url = "http://127.0.0.1:{preview}/"  # the staging / next URL: the preview listener
watch = "15s"                 # watch the new live slot this long after a swap
auto_rollback = true          # and roll back by itself if it fails
confirm = "yes-no"            # or "type-name"
production = {production}            # production: every dialog wants the name typed
"#,
        state = state_dir.display(),
        env = ENV,
        live = a.live_port,
        preview = a.preview_port,
        production = a.production,
    );
    for (i, (name, _)) in SLOTS.iter().enumerate() {
        s.push_str(&format!(
            r#"
[[environment.slot]]
name = "{name}"
address = "http://127.0.0.1:{port}"
health = "/health"            # a path on the address, or a full URL
version = "/version"
version_pointer = "/version"  # JSON pointer to the version in the body
"#,
            port = a.slot_port as usize + i
        ));
    }
    s.push_str(&format!(
        r#"
[[environment.router]]
kind = "embedded"             # cutover's own proxy (see `cutover proxy`)
admin = "127.0.0.1:{admin}"
live_listen = "127.0.0.1:{live}"
preview_listen = "127.0.0.1:{preview}"
initial_live = "blue"
initial_preview = "green"
state_file = "{state}/proxy.json"
"#,
        admin = a.admin_port,
        live = a.live_port,
        preview = a.preview_port,
        state = state_dir.display(),
    ));
    s
}

/// The running demo world; everything stops when it is dropped.
pub struct DemoWorld {
    pub config: Config,
    pub slots: Vec<SlotServer>,
    pub proxy: ProxyHandle,
}

impl DemoWorld {
    pub fn controls(&self) -> Vec<Arc<SlotControls>> {
        self.slots.iter().map(|s| s.controls.clone()).collect()
    }

    /// Start the slots and the proxy. A fresh world every time: the demo's own state is reset.
    pub async fn start(a: &DemoArgs, state_dir: &Path) -> Result<DemoWorld> {
        let _ = std::fs::remove_dir_all(state_dir);
        std::fs::create_dir_all(state_dir).wrap_err_with(|| {
            format!("cannot create the demo state dir {}", state_dir.display())
        })?;
        let text = config_text(a, state_dir);
        let path = state_dir.join("demo.toml");
        std::fs::write(&path, &text)?;
        let config =
            crate::config::parse(&text, &path).map_err(|e| color_eyre::eyre::eyre!("{e}"))?;
        let mut slots = Vec::new();
        for (i, (name, version)) in SLOTS.iter().enumerate() {
            let port = a.slot_port as usize + i;
            let port = u16::try_from(port).wrap_err("--slot-port is too high")?;
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            slots.push(SlotServer::start(name, version, addr).await.wrap_err_with(|| {
                format!("the demo slot `{name}` needs port {port}; choose others with --slot-port")
            })?);
        }
        let env = &config.environments[0];
        let Some(RouterConfig::Embedded(pc)) = env.routers.first() else {
            color_eyre::eyre::bail!("the demo config has no embedded router");
        };
        let proxy = crate::proxy::start(env.routed(), pc)
            .await
            .wrap_err("the demo's proxy could not start; choose other ports with --live-port, --preview-port, --admin-port")?;
        Ok(DemoWorld {
            config,
            slots,
            proxy,
        })
    }
}

/// Where the demo keeps its state (reset at every start).
pub fn state_dir() -> std::path::PathBuf {
    crate::paths::state_dir().join("demo")
}
