//! Commands and flags.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "cutover",
    version,
    about = "A terminal control panel for blue/green/staging deployments",
    long_about = "cutover polls each environment's slots, shows them side by side, and swaps, drains \
                  and puts them in maintenance through the proxy in front of them.\n\n\
                  Without a command it opens the TUI on the config.\n\n\
                  Exit codes: 0 done; 1 refused or failed (the message says which step and why); \
                  2 usage or config error."
)]
pub struct Cli {
    /// Config file [default: $CUTOVER_CONFIG, else $XDG_CONFIG_HOME/cutover/config.toml]
    #[arg(long, short = 'c', global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Colour theme: dark, light, high-contrast, colorblind, or a theme file
    #[arg(long, global = true, value_name = "NAME")]
    pub theme: Option<String>,
    /// Watch only: every action is refused
    #[arg(long, global = true)]
    pub read_only: bool,
    /// Serve cutover's own Prometheus metrics at http://ADDR/metrics while the TUI runs
    /// (loopback; another address needs a token in $CUTOVER_METRICS_TOKEN)
    #[arg(long, global = true, value_name = "ADDR")]
    pub metrics_listen: Option<String>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start three demo slots and the embedded proxy, and open the TUI on them
    Demo(crate::demo::DemoArgs),
    /// Write a complete, commented example config (refuses to overwrite)
    Init {
        /// Where to write it [default: the config path]
        path: Option<PathBuf>,
    },
    /// Validate the config, reach every endpoint and router, and print a table
    Check {
        /// Print the checks as JSON
        #[arg(long)]
        json: bool,
    },
    /// Run the embedded proxy alone (every `kind = "embedded"` router in the config)
    Proxy {
        /// Only this environment's proxy
        #[arg(long)]
        env: Option<String>,
    },
    /// Print each environment's slots, roles, health and versions
    Status {
        /// Only this environment
        env: Option<String>,
        /// Print as JSON (the shape is documented in the README)
        #[arg(long)]
        json: bool,
    },
    /// Make the preview slot (or --to SLOT) live
    Swap {
        env: String,
        /// Make this slot live instead of the preview slot
        #[arg(long, value_name = "SLOT")]
        to: Option<String>,
        #[command(flatten)]
        op: OpFlags,
    },
    /// Make the previous live slot live again
    Rollback {
        env: String,
        #[command(flatten)]
        op: OpFlags,
    },
    /// Stop sending new traffic to a slot (or one node of it); in-flight requests finish
    Drain(SlotOrNode),
    /// Put a drained slot (or node) back in service
    Undrain(SlotOrNode),
    /// Turn maintenance on or off for the live traffic, or pause it: `pause` holds new live
    /// requests (embedded router; bounded by `pause_timeout` and `pause_max_held`, then 503)
    /// while the live slot restarts in place, `resume` releases them to it
    Maintenance {
        env: String,
        state: MaintenanceState,
        /// Send the traffic to this slot instead of a 503 page
        #[arg(long, value_name = "SLOT")]
        redirect_to: Option<String>,
        #[command(flatten)]
        op: OpFlags,
    },
    /// Point the preview route at a slot
    Preview {
        env: String,
        slot: String,
        #[command(flatten)]
        op: OpFlags,
    },
    /// Move the live traffic to a slot step by step (5, 25, 50, 100 %), holding each step
    /// while its analysis runs; a failed analysis puts 100 % back on the live slot
    Canary {
        env: String,
        /// The canary slot (it becomes live at the last step)
        #[arg(long, value_name = "SLOT", required_unless_present = "control")]
        to: Option<String>,
        /// Steer the canary running on ENV (a `cutover canary` on this host): `--promote`
        /// ends its current step's hold now and goes on to the next step
        #[arg(long, group = "control", conflicts_with_all = ["to", "steps"])]
        promote: bool,
        /// Stop the running canary's countdown (its analysis goes on and may still abort)
        #[arg(long, group = "control", conflicts_with_all = ["to", "steps"])]
        pause: bool,
        /// Restart the running canary's countdown, or end its `pause` step
        #[arg(long, group = "control", conflicts_with_all = ["to", "steps"])]
        resume: bool,
        /// The canary's share at each step, the last 100; `pause` waits for the operator
        /// (default: the environment's `canary_steps`, else 5,25,50,100)
        #[arg(long, value_name = "PCT|pause,...", value_delimiter = ',', value_parser = parse_step)]
        steps: Vec<crate::model::CanaryStep>,
        /// How long each step holds while its analysis runs, e.g. `30s`, `2m` (default: the
        /// environment's `canary_pause`)
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, conflicts_with = "control")]
        interval: Option<std::time::Duration>,
        #[command(flatten)]
        op: OpFlags,
    },
    /// Deploy a slot node by node: drain, wait, deploy hook, smoke test, undrain
    Rolling {
        env: String,
        slot: String,
        /// The version every node must report after its deploy
        #[arg(long)]
        version: Option<String>,
        #[command(flatten)]
        op: OpFlags,
    },
    /// Prove a cutover loses nothing: load the public URL while swapping back and forth
    Drill {
        env: String,
        /// Concurrent connections
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Most requests the load may send; the drill fails if it reaches this before every
        /// switch is seen by a client
        #[arg(long, default_value_t = 1_000_000)]
        requests: u64,
        /// Most time the load may run; the drill fails if it reaches this before every switch
        /// is seen by a client
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        duration: std::time::Duration,
        /// Swap+rollback pairs
        #[arg(long, default_value_t = 5)]
        pairs: usize,
        /// Open a new connection for every request
        #[arg(long)]
        no_keep_alive: bool,
        /// Path requested on the public URL
        #[arg(long, default_value = "/")]
        path: String,
        /// Pause between switches
        #[arg(long, default_value = "250ms", value_parser = humantime::parse_duration)]
        pause: std::time::Duration,
        /// Allow a drill against a production environment
        #[arg(long)]
        yes_really: bool,
        /// Run a canary to the preview slot instead of swap pairs: each step of the
        /// environment's `canary_steps` up to --abort-at is measured (the share the canary
        /// served), then the canary is aborted and measured again
        #[arg(long)]
        canary: bool,
        /// With --canary: the step (in %) at which the canary is aborted
        #[arg(long, default_value_t = 50, requires = "canary")]
        abort_at: u8,
        /// With --canary: the answers each step is measured on
        #[arg(long, default_value_t = 4000, requires = "canary")]
        sample: u64,
        /// Print the report as JSON
        #[arg(long)]
        json: bool,
    },
    /// Write the starting files of the environment's nginx and Caddy (file mode) routers:
    /// which slot the live and preview routes point at, before the proxy first loads them
    Setup {
        env: String,
        /// The slot the live route starts on
        #[arg(long)]
        live: String,
        /// The slot the preview (next) route starts on
        #[arg(long)]
        preview: Option<String>,
        /// Rewrite the files even when the proxy is already serving from them (this switches
        /// live traffic at once, under the lock, and is audited)
        #[arg(long)]
        force: bool,
    },
    /// Finish what an interrupted operation left (`status` shows INTERRUPTED): read every
    /// router again and bring them all to one slot, the one live before the interrupted switch
    /// unless --to names another
    Recover {
        env: String,
        /// Bring every router to this slot
        #[arg(long, value_name = "SLOT")]
        to: Option<String>,
        #[command(flatten)]
        op: OpFlags,
    },
    /// Print events (health, versions, roles) as lines until interrupted
    Watch { env: String },
    /// Clear what a dead holder left in an environment's lock file (a live holder's lock is
    /// never broken: take it over with --take-over on your command instead)
    Unlock { env: String },
    /// Print shell completions
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff): `cutover man | man -l -`
    Man,
    /// Config helpers
    Config {
        #[command(subcommand)]
        what: ConfigCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the config path cutover would use
    Path,
}

/// `cutover maintenance ENV on|off|pause|resume`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MaintenanceState {
    /// The maintenance page (or `--redirect-to`) for the live traffic
    On,
    /// Serve the live slot again
    Off,
    /// Hold new live requests until `resume` (embedded router)
    Pause,
    /// Release the held requests to the live slot
    Resume,
}

// The arguments of `drain` and `undrain` (no doc comment: each command has its own help).
#[derive(Debug, Args, Clone)]
pub struct SlotOrNode {
    pub env: String,
    pub slot: String,
    /// Only this node of the slot (a slot with `nodes`)
    #[arg(long, value_name = "NODE")]
    pub node: Option<String>,
    #[command(flatten)]
    pub op: OpFlags,
}

#[derive(Debug, Args, Clone)]
pub struct OpFlags {
    /// Do not ask; needed when there is no terminal to ask on
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Go past a failed gate (marked FORCED in the audit log)
    #[arg(long)]
    pub force: bool,
    /// Do not watch the new live slot after a swap or rollback
    #[arg(long)]
    pub no_watch: bool,
    /// When another cutover holds the environment's lock, take it over: its watch ends (no
    /// automatic rollback), it records who took over, and this operation runs. It waits for
    /// a router change in progress to finish first
    #[arg(long)]
    pub take_over: bool,
    /// Print the outcome as JSON
    #[arg(long)]
    pub json: bool,
}

/// One step of `--steps`: `25`, `25%` or `pause`.
fn parse_step(s: &str) -> Result<crate::model::CanaryStep, String> {
    if s.trim().eq_ignore_ascii_case("pause") {
        return Ok(crate::model::CanaryStep::Pause);
    }
    s.trim()
        .trim_end_matches('%')
        .parse::<u8>()
        .ok()
        .filter(|n| (1..=100).contains(n))
        .map(crate::model::CanaryStep::Weight)
        .ok_or_else(|| format!("`{s}` is neither `pause` nor a share from 1 to 100"))
}
