//! The `nginx` router table and its validation.

use super::*;

/// How the live and next routes point at a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Symlinks resolved by nginx on every request; switching needs no reload.
    #[default]
    Realpath,
    /// Symlinks to per-slot directories holding the route include; switching reloads.
    Symlink,
    /// Include files rewritten by cutover; switching reloads.
    Include,
}

impl Method {
    pub(super) fn name(self) -> &'static str {
        match self {
            Method::Realpath => "realpath",
            Method::Symlink => "symlink",
            Method::Include => "include",
        }
    }
}

/// How a reload is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ReloadBy {
    /// Run `reload_command` (default `nginx [nginx_args] -s reload`).
    #[default]
    Command,
    /// Send SIGHUP to the master process named in `pid_file`.
    Signal,
}

fn default_nginx() -> String {
    "nginx".into()
}
fn default_pid_file() -> PathBuf {
    PathBuf::from("/run/nginx.pid")
}

crate::router::router_table! {
    pub struct Config {
        /// `realpath` (default), `symlink` or `include`.
        #[serde(default)]
        pub method: Method,
        /// The directory cutover owns: every file and link it writes is in here. Absolute.
        pub dir: PathBuf,
        /// The nginx binary used by the default test and reload commands.
        #[serde(default = "default_nginx")]
        pub nginx: String,
        /// Arguments given to nginx before `-t` / `-s reload`, e.g. `["-p", "/srv/ngx", "-c",
        /// "/srv/ngx/nginx.conf"]`.
        #[serde(default)]
        pub nginx_args: Vec<String>,
        /// The config test, as an argv list. Default: `[nginx, nginx_args..., "-t"]`.
        pub test_command: Option<Vec<String>>,
        /// The reload, as an argv list. Default: `[nginx, nginx_args..., "-s", "reload"]`.
        pub reload_command: Option<Vec<String>>,
        /// `command` (default) or `signal` (SIGHUP to the master in `pid_file`).
        #[serde(default)]
        pub reload: ReloadBy,
        /// nginx's pid file: the master process whose workers show that a reload took.
        #[serde(default = "default_pid_file")]
        pub pid_file: PathBuf,
        /// nginx's error log; when given, a failed reload's `[emerg]` lines are in the error.
        pub error_log: Option<PathBuf>,
        /// Prefix of the upstream names cutover writes (default `cutover_<environment>_`).
        pub upstream_prefix: Option<String>,
        /// Longest a test or reload command may run.
        #[serde(default = "crate::router::secs::<10>", with = "serde_duration")]
        pub timeout: Duration,
        /// How long to wait for nginx's new workers after a reload before calling it failed.
        #[serde(default = "crate::router::secs::<5>", with = "serde_duration")]
        pub reload_timeout: Duration,
        /// An HTML file served (with status 503) while maintenance is on; a plain page otherwise.
        pub maintenance_page: Option<PathBuf>,
        /// The Retry-After header of the maintenance answer, in seconds.
        #[serde(default = "crate::router::default_retry_after")]
        pub retry_after: u32,
        /// The cookie that keeps a client on its slot during a canary (default
        /// `cutover_<environment>`).
        #[serde(default)]
        pub canary_cookie: Option<String>,
    }
}

impl Config {
    pub fn validate(&self, slots: &[Slot]) -> std::result::Result<(), String> {
        if !self.dir.is_absolute() {
            return Err(format!(
                "`dir` must be an absolute path (nginx includes files from it), not `{}`",
                self.dir.display()
            ));
        }
        let d = self.dir.to_string_lossy();
        if d.chars()
            .any(|c| matches!(c, '"' | '\'' | '$' | '\\' | ';' | '{' | '}') || c.is_whitespace())
        {
            return Err(format!(
                "`dir` = `{d}` has a character nginx would read as syntax (quote, $, ;, braces or space)"
            ));
        }
        if let Some(c) = &self.canary_cookie
            && (c.is_empty() || !c.chars().all(|x| x.is_ascii_alphanumeric() || x == '_'))
        {
            return Err(format!(
                "`canary_cookie` = `{c}` must be letters, digits or `_` (nginx reads it as \
                 $cookie_{c})"
            ));
        }
        if let Some(p) = &self.upstream_prefix
            && !is_word(p)
        {
            return Err(format!(
                "`upstream_prefix` = `{p}` must be letters, digits, `-`, `_` or `.`"
            ));
        }
        for (field, cmd) in [
            ("test_command", &self.test_command),
            ("reload_command", &self.reload_command),
        ] {
            if let Some(c) = cmd
                && c.first().is_none_or(|p| p.trim().is_empty())
            {
                return Err(format!(
                    "`{field}` must name a program, like [\"nginx\", \"-t\"]"
                ));
            }
        }
        for s in slots {
            if !is_word(&s.name) || s.name.starts_with('_') || s.name.starts_with('.') {
                return Err(format!(
                    "slot `{}`: the nginx driver uses slot names as file and upstream names; use \
                     letters, digits, `-`, `_` or `.`, not starting with `_` or `.`",
                    s.name
                ));
            }
            Upstream::of(s).map_err(|e| format!("slot `{}`: {e}", s.name))?;
        }
        Ok(())
    }
}
