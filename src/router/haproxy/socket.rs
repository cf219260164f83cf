//! HAProxy's admin socket (`stats socket ... level admin`): a Unix path or a TCP address.
//!
//! HAProxy answers one command per connection (it closes after answering unless the client
//! asked for prompt mode), so every command opens its own connection, bounded by a timeout.
//! Answers carry no status code: a change that worked answers an empty line, and an error
//! is a line of text (`No such server.`, `Unknown map identifier...`, `Permission denied`).
//! [`Socket::run`] turns any non-empty answer to a change into an error quoting HAProxy.
//!
//! Hand-written on purpose: the runtime API is one line out, text back, connection closed;
//! no maintained crate speaks it, and a client crate would add nothing over a socket write
//! and a read to the end.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use color_eyre::eyre::{Report, Result, eyre};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

/// The largest answer read (a `show stat` of a very large config is a few MB).
const MAX_REPLY: u64 = 32 << 20;

/// Where the admin socket is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Unix(PathBuf),
    /// `HOST:PORT`, as in `stats socket ipv4@127.0.0.1:9999 level admin`.
    Tcp(String),
}

impl Endpoint {
    /// `/run/haproxy/admin.sock`, `unix@/run/haproxy/admin.sock`, `127.0.0.1:9999`,
    /// `ipv4@127.0.0.1:9999`.
    pub fn parse(s: &str) -> std::result::Result<Endpoint, String> {
        let s = s.trim();
        if let Some(p) = s.strip_prefix("unix@") {
            return Ok(Endpoint::Unix(PathBuf::from(p)));
        }
        if s.starts_with('/') || s.starts_with("./") {
            return Ok(Endpoint::Unix(PathBuf::from(s)));
        }
        let tcp = ["ipv4@", "ipv6@", "tcp@"]
            .iter()
            .find_map(|p| s.strip_prefix(p))
            .unwrap_or(s);
        match tcp.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                Ok(Endpoint::Tcp(tcp.to_string()))
            }
            _ => Err(format!(
                "`{s}` is neither a Unix socket path (\"/run/haproxy/admin.sock\") nor \
                 HOST:PORT (\"127.0.0.1:9999\")"
            )),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "{}", p.display()),
            Endpoint::Tcp(a) => f.write_str(a),
        }
    }
}

/// A client of one admin socket.
#[derive(Debug, Clone)]
pub struct Socket {
    pub endpoint: Endpoint,
    pub timeout: Duration,
}

impl Socket {
    pub fn new(endpoint: Endpoint, timeout: Duration) -> Self {
        Socket { endpoint, timeout }
    }

    /// Send one command and return HAProxy's whole answer, whatever it says.
    pub async fn raw(&self, cmd: &str) -> Result<String> {
        let ep = &self.endpoint;
        let exchange = async {
            match ep {
                Endpoint::Unix(p) => {
                    let s = UnixStream::connect(p)
                        .await
                        .map_err(|e| connect_error(ep, &e))?;
                    talk(s, cmd).await
                }
                Endpoint::Tcp(a) => {
                    let s = TcpStream::connect(a.as_str())
                        .await
                        .map_err(|e| connect_error(ep, &e))?;
                    talk(s, cmd).await
                }
            }
            .map_err(|e| match e {
                Talk::Connect(r) => r,
                Talk::Io(e) => eyre!(
                    "HAProxy's admin socket {ep} failed while answering `{cmd}`: {e}; it may \
                     be restarting, cutover tries again on the next observe"
                ),
            })
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(eyre!(
                "HAProxy did not answer `{cmd}` on its admin socket {ep} within {}: it may be \
                 overloaded or restarting, or something else listens there; cutover tries again \
                 on the next observe",
                humantime::format_duration(self.timeout)
            )),
        }
    }

    /// Send a change (`set map`, `set server`...): HAProxy answers an empty line when it
    /// worked; anything else is its error text.
    pub async fn run(&self, cmd: &str) -> Result<()> {
        let reply = self.raw(cmd).await?;
        if reply.trim().is_empty() {
            Ok(())
        } else {
            Err(refused(&self.endpoint, cmd, &reply))
        }
    }

    /// Send a `show ...` and return its answer, or an error when HAProxy answered one of its
    /// error texts (or nothing at all).
    pub async fn show(&self, cmd: &str) -> Result<String> {
        let reply = self.raw(cmd).await?;
        if reply.trim().is_empty() {
            return Err(eyre!(
                "HAProxy answered nothing to `{cmd}` on {}; it may be restarting, cutover tries \
                 again on the next observe",
                self.endpoint
            ));
        }
        if is_error_text(&reply) {
            return Err(refused(&self.endpoint, cmd, &reply));
        }
        Ok(reply)
    }
}

enum Talk {
    Connect(Report),
    Io(io::Error),
}

impl From<Report> for Talk {
    fn from(r: Report) -> Self {
        Talk::Connect(r)
    }
}

async fn talk<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    cmd: &str,
) -> std::result::Result<String, Talk> {
    let line = format!("{}\n", cmd.trim_end());
    s.write_all(line.as_bytes()).await.map_err(Talk::Io)?;
    s.flush().await.map_err(Talk::Io)?;
    let mut buf = Vec::new();
    (&mut s)
        .take(MAX_REPLY)
        .read_to_end(&mut buf)
        .await
        .map_err(Talk::Io)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// A clear message for a socket that cannot be reached.
fn connect_error(ep: &Endpoint, e: &io::Error) -> Report {
    let hint_line = match ep {
        Endpoint::Unix(p) => format!("`stats socket {} level admin`", p.display()),
        Endpoint::Tcp(a) => format!("`stats socket ipv4@{a} level admin`"),
    };
    match e.kind() {
        io::ErrorKind::NotFound => eyre!(
            "HAProxy's admin socket {ep} does not exist: is HAProxy running, and does the \
             `global` section of haproxy.cfg have {hint_line}?"
        ),
        io::ErrorKind::PermissionDenied => eyre!(
            "cutover may not connect to HAProxy's admin socket {ep} (permission denied): run \
             cutover as the socket's owner, or give the `stats socket` line a `mode 660` and \
             `group` cutover's user is in"
        ),
        io::ErrorKind::ConnectionRefused => eyre!(
            "HAProxy does not accept connections on its admin socket {ep} (connection refused): \
             it is stopped or restarting, or haproxy.cfg lacks {hint_line}; cutover tries again \
             on the next observe"
        ),
        _ => eyre!("cannot connect to HAProxy's admin socket {ep}: {e}"),
    }
}

/// The first lines of an answer on one line, for messages.
pub fn quote(reply: &str) -> String {
    let mut s = reply
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .take(2)
        .collect::<Vec<_>>()
        .join(" / ");
    if s.chars().count() > 240 {
        s = s.chars().take(240).collect::<String>() + "...";
    }
    s
}

/// HAProxy's documented error answers (2.6), by their first words.
const ERROR_TEXTS: &[&str] = &[
    "Permission denied",
    "Unknown command",
    "Unknown map identifier",
    "Unknown ACL identifier",
    "No such backend",
    "No such server",
    "No such proxy",
    "Require ",
    "Can't find",
    "entry not found",
    "Key not found",
    "Unknown backend",
    "'set server",
    "'set map",
    "Missing",
];

/// Whether an answer is one of HAProxy's error texts.
pub fn is_error_text(reply: &str) -> bool {
    let first = reply.trim_start();
    ERROR_TEXTS.iter().any(|e| first.starts_with(e))
}

/// The error for a command HAProxy refused, quoting its answer and saying what to do.
pub fn refused(ep: &Endpoint, cmd: &str, reply: &str) -> Report {
    let text = quote(reply);
    let hint = if text.starts_with("Permission denied") {
        format!(
            "the admin socket {ep} is not `level admin`: add `level admin` to its `stats socket` \
             line in haproxy.cfg and reload HAProxy"
        )
    } else if text.starts_with("Unknown map identifier") {
        "HAProxy knows no map by that name: set `map` to the file path used in haproxy.cfg's \
         map() converter (`show map` on the socket lists the maps)"
            .to_string()
    } else if text.starts_with("No such backend") || text.starts_with("Unknown backend") {
        "that backend is not in haproxy.cfg: check the backend names in this router's config \
         (`show backend` on the socket lists them)"
            .to_string()
    } else if text.starts_with("No such server") {
        "that server is not in the backend: check the server and node names in this router's \
         config (`show servers state` on the socket lists them)"
            .to_string()
    } else if text.starts_with("Unknown command") {
        "this HAProxy does not know the command; cutover needs HAProxy 2.4 or later".to_string()
    } else {
        "nothing was changed by this command".to_string()
    };
    eyre!("HAProxy refused `{cmd}`: \"{text}\"; {hint}")
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_in_haproxy_spelling_too() {
        let unix = |p: &str| Endpoint::Unix(p.into());
        let tcp = |a: &str| Endpoint::Tcp(a.into());
        for (text, want) in [
            ("/run/haproxy/admin.sock", unix("/run/haproxy/admin.sock")),
            ("unix@/tmp/a.sock", unix("/tmp/a.sock")),
            ("127.0.0.1:9999", tcp("127.0.0.1:9999")),
            ("ipv4@127.0.0.1:9999", tcp("127.0.0.1:9999")),
        ] {
            assert_eq!(Endpoint::parse(text), Ok(want), "{text}");
        }
        for bad in ["", "admin.sock", "127.0.0.1", "127.0.0.1:http", ":99"] {
            let e = Endpoint::parse(bad).expect_err(bad);
            assert!(e.contains("HOST:PORT"), "{e}");
        }
    }

    #[test]
    fn haproxy_error_texts_become_errors_that_quote_them() {
        // Answers as HAProxy 2.6 sends them (measured with socat).
        let ep = Endpoint::Tcp("127.0.0.1:9999".into());
        for (reply, hint) in [
            ("Permission denied\n\n", "level admin"),
            (
                "Unknown map identifier. Please use #<id> or <file>.\n\n",
                "map() converter",
            ),
            ("No such backend.\n\n", "show backend"),
            ("No such server.\n\n", "show servers state"),
            ("entry not found.\n\n", "nothing was changed"),
        ] {
            assert!(is_error_text(reply), "{reply}");
            let e = refused(&ep, "set map x live be_a", reply).to_string();
            assert!(e.contains(reply.trim()), "{e}");
            assert!(e.contains(hint), "{e}");
            assert!(e.contains("`set map x live be_a`"), "{e}");
        }
        assert!(!is_error_text("# pxname,svname\n"));
        assert!(!is_error_text("0x55 live be_blue\n"));
    }

    #[test]
    fn long_answers_are_cut_for_messages() {
        let q = quote(&"Unknown command, but maybe one of the following ones\n".repeat(20));
        assert!(q.len() < 260, "{q}");
    }
}
