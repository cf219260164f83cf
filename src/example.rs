//! The example config `cutover init` writes.

pub const CONFIG: &str = r#"# cutover config. Every key is shown with its default or an example value.
# Durations are written like "2s", "500ms", "1m 30s". Unknown keys are errors.

[settings]
poll_interval = "2s"        # how often every slot (and public URL) is polled
timeout = "1s"              # timeout of one probe request
degraded_after = "800ms"    # a healthy answer slower than this shows as degraded
theme = "dark"              # dark, light, high-contrast, colorblind, or a path to a theme file
gate_checks = 3             # healthy checks in a row a slot needs before it may go live
read_only = false           # refuse every action (for people who watch)
history = 60                # polls kept for the latency sparkline
max_body = 65536            # bytes read from a health/version body at most
# state_dir = "~/.local/state/cutover"   # previous live slot, locks, audit log
# audit_dir = "..."                      # audit log (default: state_dir)
# log_dir = "..."                        # debug log (default: state_dir)

[[environment]]
name = "shop-prod"
public_url = "https://shop.example.com/"          # what users reach
preview_url = "https://next.shop.example.com/"    # the staging / next URL (optional)
production = true           # always asks for the environment's name before acting
confirm = "type-name"       # "yes-no" or "type-name"
read_only = false
auto_rollback = true        # roll back by itself if the new live slot fails while watched
watch = "30s"               # how long a cutover is watched
verify_timeout = "10s"      # how long verify waits for the router and public URL
# gate_checks = 3           # overrides settings.gate_checks
# Hooks around every swap (README: Operations → Hooks); commands are argv, never a shell:
# warmup_paths = ["/", { path = "/api/catalog", times = 3, expect_status = 200 }]
# warmup_command = ["./warm-caches.sh", "{address}", "{version}"]  # also {env} {slot}
# warmup_timeout = "60s"
# smoke = ["./login-test.sh", "{public_url}"]                      # also {env} {slot} {address} {version}
# smoke_paths = [{ path = "/login", expect_status = 200, body_contains = "Sign in" }]
# smoke_timeout = "30s"
# on_done = ["./notify.sh", "{env}", "{operation}", "{to}", "{version}", "{result}"]
# on_rollback = [...] / on_failed = [...]   # same placeholders, plus {id} {from} {message} {live}
# hook_timeout = "30s"                      # each of on_done, on_rollback, on_failed
# hook_pass_env = ["CHAT_TOKEN"]            # besides PATH and HOME, passed to every hook

[[environment.slot]]
name = "blue"
address = "http://10.0.0.11:8080"   # where the proxy sends this slot's traffic
health = "/health"                  # a path on the address, or a full URL
version = "/version"
version_pointer = "/version"        # JSON pointer; omit for a plain-text version
expect_status = 200

[[environment.slot]]
name = "green"
address = "http://10.0.0.12:8080"
# nodes = [ { name = "web1", address = "http://10.0.0.12:8080" },
#           { name = "web2", address = "http://10.0.0.13:8080" } ]

[[environment.router]]
kind = "embedded"                   # cutover's own proxy: run it with `cutover proxy`
admin = "127.0.0.1:8089"
live_listen = "0.0.0.0:8080"
preview_listen = "0.0.0.0:8081"
# token_env = "CUTOVER_ADMIN_TOKEN" # the admin API then requires this bearer token
# Terminate TLS (1.2+) for live traffic; `kill -HUP` of `cutover proxy` re-reads the files
# (e.g. from a certbot deploy hook). redirect = true sends plain HTTP to HTTPS. Clients that
# speak HTTP/2 get it (http2 = false: HTTP/1.1 only); the slots are reached over HTTP/1.1.
# tls = { listen = "0.0.0.0:8443", cert = "/etc/letsencrypt/live/shop.example/fullchain.pem", key = "/etc/letsencrypt/live/shop.example/privkey.pem", redirect = true, http2 = true }
# preview_tls = { listen = "0.0.0.0:8444", cert = "/etc/letsencrypt/live/shop.example/fullchain.pem", key = "/etc/letsencrypt/live/shop.example/privkey.pem" }
# Several environments may name the same listen addresses; each answers its own hosts.
# hosts = ["shop.example"]
# `cutover maintenance shop pause` holds new requests while the slot restarts in place:
# pause_timeout = 30                # seconds a request may be held, then 503
# pause_max_held = 1000             # requests held at once; more get 503
# access_log = "/var/log/cutover/shop-access.log"  # one JSON line per request ("-" = stderr)
# upgrade_drain_timeout = 300       # close WebSockets left on the old slot this long after a switch
# node_check_interval = 2           # the proxy's own checks of a slot's nodes (0: off): a dead
# node gets no new request after node_check_fall failed checks (default 2)
# See the README for haproxy, nginx, apache, caddy and exec routers.
"#;

#[cfg(test)]
mod tests {
    #[test]
    fn the_example_config_is_valid() {
        let c = crate::config::parse(super::CONFIG, std::path::Path::new("example.toml"));
        assert!(c.is_ok(), "{:?}", c.err());
    }

    #[test]
    fn the_commented_tls_hosts_and_pause_lines_are_valid_once_uncommented() {
        let keys = [
            "tls",
            "preview_tls",
            "hosts",
            "pause_timeout",
            "pause_max_held",
        ];
        let text: String = super::CONFIG
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest) if keys.iter().any(|k| rest.starts_with(&format!("{k} ="))) => rest,
                _ => l,
            })
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(text.matches("\ntls =").count(), 1, "{text}");
        let c = crate::config::parse(&text, std::path::Path::new("example.toml"));
        assert!(c.is_ok(), "{:?}", c.err());
    }
}
