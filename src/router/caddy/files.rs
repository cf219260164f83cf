//! File mode: routes that test for flag files, and the flags cutover renames.

use super::split::{BUCKET_PLACEHOLDER, ON, SPLIT};
use super::*;

impl Caddy {
    pub(super) fn flag_dir(&self) -> Result<&Path> {
        self.cfg
            .flag_dir
            .as_deref()
            .ok_or_else(|| eyre!("file mode needs `flag_dir`"))
    }

    /// The routes to put (in this order) in the Caddy server that serves the live route, or
    /// the preview route: the config an operator pastes for `mode = "file"`.
    pub fn file_mode_routes(&self, which: Pointer) -> Result<Value> {
        let root = self.flag_dir()?.to_string_lossy().to_string();
        let flag = which.flag();
        let var = format!("cutover_{flag}");
        let glob = |pattern: &str| json!({"file": {"root": root, "try_files": [pattern]}});
        let mut init = json!({"handler": "vars", var.as_str(): "", "cutover_maintenance": ""});
        if which == Pointer::Live {
            init["cutover_split"] = json!("");
            init["cutover_bucket"] = json!("-");
        }
        let mut routes = vec![json!({ "handle": [init] })];
        if which == Pointer::Live {
            routes.push(json!({
                "match": [glob("/maintenance=*")],
                "handle": [{"handler": "vars", "cutover_maintenance": "{http.matchers.file.relative}"}],
            }));
            routes.push(json!({
                "match": [{"vars": {"cutover_maintenance": [format!("/{MAINT}={PAGE}")]}}],
                "handle": [self.page_handler()?],
                "terminal": true,
            }));
            for s in &self.slots {
                routes.push(json!({
                    "match": [{"vars": {"cutover_maintenance": [format!("/{MAINT}={}", s.name)]}}],
                    "handle": [self.proxy_handler(s)],
                    "terminal": true,
                }));
            }
        }
        // One directory read per request names the slot. A rename between that read and
        // the matcher's stat of the name it found fails the match; the second try sees the
        // new name.
        let capture = json!({"handler": "vars", var.as_str(): "{http.matchers.file.relative}"});
        routes.push(json!({"match": [glob(&format!("/{flag}=*"))], "handle": [capture.clone()]}));
        let mut retry = glob(&format!("/{flag}=*"));
        retry["vars"] = json!({var.as_str(): [""]});
        routes.push(json!({"match": [retry], "handle": [capture]}));
        if which == Pointer::Live {
            routes.extend(self.split_routes(&root));
        }
        for s in &self.slots {
            routes.push(json!({
                "match": [{"vars": {var.as_str(): [format!("/{flag}={}", s.name)]}}],
                "handle": [self.proxy_handler(s)],
                "terminal": true,
            }));
        }
        routes.push(json!({
            "handle": [{
                "handler": "static_response",
                "status_code": 503,
                "body": format!("cutover: no {flag} slot is set in {root} (a {flag}=SLOT file)\n"),
            }],
        }));
        Ok(Value::Array(routes))
    }

    /// The live route's canary split (split.rs), between the live flag's capture and the
    /// live slot's routes: the split directory that is on, the request's bucket, then per
    /// slot the sticky cookie, the bucket files, and the live slot's answers during a split,
    /// each of which sets the cookie naming the slot that answered.
    fn split_routes(&self, root: &str) -> Vec<Value> {
        let file = |f: String| json!({"root": root, "try_files": [f]});
        let split_on = json!({"cutover_split": {"pattern": format!("^/{SPLIT}=")}});
        // One stat per slot: a glob would read the split directory's 257 names per request
        // (a third less throughput with wrk during a split, here).
        let on: Vec<String> = self
            .slots
            .iter()
            .map(|s| format!("/{SPLIT}={}/{ON}", s.name))
            .collect();
        let mut routes = vec![
            json!({
                "match": [{"file": {"root": root, "try_files": on}}],
                "handle": [{"handler": "vars", "cutover_split": "{http.matchers.file.relative}"}],
            }),
            json!({
                "match": [{"vars_regexp": {"{http.request.uuid}": {"name": "cutover_bucket", "pattern": "^([0-9a-f]{2})"}}}],
                "handle": [{"handler": "vars", "cutover_bucket": "{http.regexp.cutover_bucket.1}"}],
            }),
        ];
        let cookie = &self.cfg.sticky_cookie;
        let re = |w: &str| w.replace('.', "\\.");
        let this_split =
            |s: &Upstream| json!({"cutover_split": [format!("/{SPLIT}={}/{ON}", s.name)]});
        let is_live = |s: &Upstream| json!({"cutover_live": [format!("/{}={}", Pointer::Live.flag(), s.name)]});
        if !cookie.is_empty() {
            // Without a split the cookie counts for nothing: the answer clears it.
            let any = json!({"Cookie": {"pattern": format!("(^|;\\s*){}=", re(cookie))}});
            let clear = format!("{cookie}=; Path=/; Max-Age=0");
            routes.push(json!({
                "match": [{"header_regexp": any, "vars": {"cutover_split": [""]}}],
                "handle": [{"handler": "headers", "response": {"add": {"Set-Cookie": [clear]}}}],
            }));
            for s in &self.slots {
                let has = json!({"Cookie": {"pattern": format!("(^|;\\s*){}={}(;|$)", re(cookie), re(&s.name))}});
                routes.push(json!({
                    "match": [
                        {"header_regexp": has, "vars": this_split(s)},
                        {"header_regexp": has, "vars": is_live(s), "vars_regexp": split_on},
                    ],
                    "handle": self.split_handlers(s),
                    "terminal": true,
                }));
            }
        }
        for s in &self.slots {
            routes.push(json!({
                "match": [{"vars": this_split(s), "file": file(format!("/{SPLIT}={}/{BUCKET_PLACEHOLDER}", s.name))}],
                "handle": self.split_handlers(s),
                "terminal": true,
            }));
        }
        if !cookie.is_empty() {
            for s in &self.slots {
                routes.push(json!({
                    "match": [{"vars": is_live(s), "vars_regexp": split_on}],
                    "handle": self.split_handlers(s),
                    "terminal": true,
                }));
            }
        }
        routes
    }

    /// During a split: the sticky cookie (when on), then the slot's servers.
    fn split_handlers(&self, s: &Upstream) -> Vec<Value> {
        let mut h = Vec::new();
        if !self.cfg.sticky_cookie.is_empty() {
            let set = format!(
                "{}={}; Path=/; HttpOnly; SameSite=Lax",
                self.cfg.sticky_cookie, s.name
            );
            h.push(json!({"handler": "headers", "response": {"add": {"Set-Cookie": [set]}}}));
        }
        h.push(self.proxy_handler(s));
        h
    }

    /// The flag files present for a prefix (`live`, `next`, `maintenance`): their values.
    pub(super) fn flags(&self, prefix: &str) -> Result<Vec<String>> {
        crate::router::flags(self.flag_dir()?, prefix)
    }

    /// Make `prefix=value` the one flag of its kind (see [`crate::router::set_flag`]).
    pub(super) fn set_flag(&self, prefix: &str, value: Option<&str>) -> Result<()> {
        crate::router::set_flag(self.flag_dir()?, prefix, value)
    }

    /// Whether Caddy's config has the file-mode routes for this flag directory and slot.
    pub(super) fn has_file_route(&self, config: &Value, flag: &str, slot: &str) -> bool {
        let root = self
            .cfg
            .flag_dir
            .as_deref()
            .map(|p| p.to_string_lossy().to_string())
            .unwrap_or_default();
        let mut has_glob = false;
        let mut has_slot = false;
        walk(config, &mut Vec::new(), &mut |_, v| {
            if let Some(f) = v.get("file")
                && f.get("root").and_then(Value::as_str) == Some(root.as_str())
                && f.get("try_files")
                    .is_some_and(|t| t.to_string().contains(&format!("/{flag}=*")))
            {
                has_glob = true;
            }
            if let Some(vars) = v.get("vars").and_then(Value::as_object)
                && vars
                    .values()
                    .any(|x| x.to_string().contains(&format!("\"/{flag}={slot}\"")))
            {
                has_slot = true;
            }
        });
        has_glob && has_slot
    }
}

impl Install for Caddy {
    /// Write the flag files for a first start.
    async fn install(&self, live: &str, preview: Option<&str>) -> Result<()> {
        let dir = self.flag_dir()?;
        std::fs::create_dir_all(dir)
            .wrap_err_with(|| format!("cannot create {}", dir.display()))?;
        self.slot(live)?;
        self.set_flag(Pointer::Live.flag(), Some(live))?;
        if let Some(p) = preview {
            self.slot(p)?;
            self.set_flag(Pointer::Next.flag(), Some(p))?;
        }
        Ok(())
    }
}
