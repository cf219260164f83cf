//! The `caddy` router table and its validation.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Flag files in `flag_dir`, matched by Caddy's routes on every request.
    #[default]
    File,
    /// PATCHes through the admin API (each one a config reload).
    Api,
}

fn default_admin() -> String {
    "http://127.0.0.1:2019".into()
}

fn default_sticky_cookie() -> String {
    "cutover_slot".into()
}

crate::router::router_table! {
    pub struct Config {
        /// `file` (default) or `api`.
        #[serde(default)]
        pub mode: Mode,
        /// Caddy's admin endpoint (`admin.listen` in Caddy's config), as an http:// URL.
        #[serde(default = "default_admin")]
        pub admin: String,
        /// api mode: the `@id` of the live route's `reverse_proxy` handler.
        pub live_id: Option<String>,
        /// api mode: the `@id` of the preview route's `reverse_proxy` handler.
        pub preview_id: Option<String>,
        /// file mode: the directory of flag files Caddy's routes match (absolute, on the Caddy host).
        pub flag_dir: Option<PathBuf>,
        /// Longest an admin API call may take.
        #[serde(default = "crate::router::secs::<5>", with = "serde_duration")]
        pub timeout: Duration,
        /// An HTML file served with status 503 while maintenance is on; a plain page otherwise.
        pub maintenance_page: Option<PathBuf>,
        /// The Retry-After header of the maintenance answer, in seconds.
        #[serde(default = "crate::router::default_retry_after")]
        pub retry_after: u32,
        /// file mode: while a canary splits the live traffic, the cookie that keeps a client
        /// on the slot it was sent to (its value is the slot's name), set by the routes of
        /// [`super::Caddy::file_mode_routes`]. `""` leaves it out of the routes.
        #[serde(default = "default_sticky_cookie")]
        pub sticky_cookie: String,
    }
}

impl Config {
    /// Caddy's admin endpoint, an [`Address`] on plain http: `http://127.0.0.1:2019`.
    pub fn admin_address(&self) -> std::result::Result<Address, String> {
        let a = Address::parse(&self.admin).map_err(|e| format!("`admin`: {e}"))?;
        if a.is_https() {
            return Err(format!(
                "`admin` = `{}` must be an http:// URL (Caddy's admin endpoint has no TLS)",
                self.admin
            ));
        }
        Ok(a)
    }
}

impl Config {
    pub fn validate(&self, slots: &[Slot]) -> std::result::Result<(), String> {
        self.admin_address()?;
        match self.mode {
            Mode::Api => {
                if self.live_id.as_deref().is_none_or(str::is_empty) {
                    return Err(
                        "mode = \"api\" needs `live_id`: the @id of the live route's \
                         reverse_proxy handler in Caddy's config"
                            .into(),
                    );
                }
                if self.flag_dir.is_some() {
                    return Err(
                        "`flag_dir` is for mode = \"file\"; remove it or set the mode".into(),
                    );
                }
            }
            Mode::File => {
                let Some(d) = &self.flag_dir else {
                    return Err(
                        "mode = \"file\" (the default) needs `flag_dir`, a directory on the \
                         Caddy host; or set mode = \"api\" when cutover is not on the Caddy host"
                            .into(),
                    );
                };
                if !d.is_absolute() {
                    return Err(format!(
                        "`flag_dir` must be an absolute path, not `{}`",
                        d.display()
                    ));
                }
                if !self.sticky_cookie.is_empty() && !is_word(&self.sticky_cookie) {
                    return Err(format!(
                        "`sticky_cookie` = `{}` is not a cookie name (letters, digits, - _ .)",
                        self.sticky_cookie
                    ));
                }
                if self.live_id.is_some() || self.preview_id.is_some() {
                    return Err(
                        "`live_id`/`preview_id` are for mode = \"api\"; file mode finds its \
                         routes by `flag_dir`"
                            .into(),
                    );
                }
            }
        }
        for s in slots {
            if !is_word(&s.name) {
                return Err(format!(
                    "slot `{}`: the caddy driver uses slot names in flag file names; use \
                     letters, digits, `-`, `_` or `.`",
                    s.name
                ));
            }
            Upstream::of(s).map_err(|e| format!("slot `{}`: {e}", s.name))?;
        }
        Ok(())
    }
}
