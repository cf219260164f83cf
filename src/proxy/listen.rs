//! Binding the listeners of one or more environments. Environments whose routers name the
//! same address for the same listener (live, preview, TLS or not) share one socket, and each
//! request goes to its environment by `Host` and path prefix ([`super::hosts`]); each keeps
//! its own admin API, state and counters, so each is switched on its own.

use std::net::SocketAddr;
use std::sync::Arc;

use color_eyre::eyre::{Result, WrapErr, eyre};
use tokio::net::TcpListener;

use super::hosts::{Route, Routes};
use super::state::{Listener, Shared};
use super::tls::Certs;
use crate::router::embedded;

/// One address to bind, and the environments (by index) it serves.
pub(super) struct Group {
    pub listener: Listener,
    pub tls: bool,
    /// The router field that names it (`live_listen`, `tls.listen`...), for errors.
    pub field: &'static str,
    pub addr: String,
    pub members: Vec<usize>,
    /// For a TLS listener: each member's hosts and certificate.
    pub certs: Vec<(Vec<String>, Arc<Certs>)>,
    pub http2: bool,
}

/// A listener a router table asks for: which one, over TLS or not, its field and address, and
/// its TLS table when it has one.
type Wanted<'a> = (
    Listener,
    &'static str,
    Option<&'a String>,
    Option<&'a embedded::TlsConfig>,
);

fn wanted(cfg: &embedded::Config) -> [Wanted<'_>; 4] {
    fn tls(t: &Option<embedded::TlsConfig>) -> Option<&String> {
        t.as_ref().map(|t| &t.listen)
    }
    [
        (Listener::Live, "live_listen", Some(&cfg.live_listen), None),
        (
            Listener::Preview,
            "preview_listen",
            cfg.preview_listen.as_ref(),
            None,
        ),
        (
            Listener::Live,
            "tls.listen",
            tls(&cfg.tls),
            cfg.tls.as_ref(),
        ),
        (
            Listener::Preview,
            "preview_tls.listen",
            tls(&cfg.preview_tls),
            cfg.preview_tls.as_ref(),
        ),
    ]
}

/// A router's hosts, lower-case.
pub(super) fn hosts(cfg: &embedded::Config) -> Vec<String> {
    cfg.hosts
        .iter()
        .map(|h| h.trim().trim_end_matches('.').to_ascii_lowercase())
        .collect()
}

/// Group the listeners of `cfgs` by address (a port 0 is never shared), loading each TLS
/// table's certificate into its environment's `shared`. Two environments that would answer
/// the same requests on one address are refused.
pub(super) async fn plan(
    names: &[&str],
    cfgs: &[&embedded::Config],
    shared: &mut [Shared],
) -> Result<Vec<Group>> {
    let mut groups: Vec<Group> = Vec::new();
    for (i, cfg) in cfgs.iter().enumerate() {
        for (listener, field, addr, table) in wanted(cfg) {
            let Some(addr) = addr else { continue };
            let shareable = !addr.ends_with(":0");
            let tls = table.is_some();
            let at = groups
                .iter()
                .position(|g| shareable && g.addr == *addr)
                .filter(|&k| {
                    let g = &groups[k];
                    g.listener == listener && g.tls == tls
                });
            if shareable
                && let Some(g) = groups.iter().find(|g| g.addr == *addr)
                && at.is_none()
            {
                return Err(eyre!(
                    "`{field} = \"{addr}\"` of environment `{}` is `{}` of environment `{}`, \
                     another kind of listener; give it its own port",
                    names[i],
                    g.field,
                    names[g.members[0]]
                ));
            }
            let k = match at {
                Some(k) => k,
                None => {
                    groups.push(Group {
                        listener,
                        tls,
                        field,
                        addr: addr.clone(),
                        members: Vec::new(),
                        certs: Vec::new(),
                        http2: table.is_none_or(|t| t.http2),
                    });
                    groups.len() - 1
                }
            };
            if let Some(t) = table {
                let table_name = field.trim_end_matches(".listen");
                let certs = Arc::new(
                    Certs::load(table_name, &t.cert, &t.key)
                        .await
                        .wrap_err_with(|| {
                            format!(
                                "cannot start the `{table_name}` listener of environment `{}`",
                                names[i]
                            )
                        })?,
                );
                shared[i].tls.push(certs.clone());
                groups[k].certs.push((hosts(cfg), certs));
            }
            for &j in &groups[k].members {
                overlap(names, cfgs, j, i, field, addr)?;
            }
            groups[k].members.push(i);
        }
    }
    Ok(groups)
}

/// Refuse two environments on one address that would both answer some request.
fn overlap(
    names: &[&str],
    cfgs: &[&embedded::Config],
    a: usize,
    b: usize,
    field: &str,
    addr: &str,
) -> Result<()> {
    let (ha, hb) = (hosts(cfgs[a]), hosts(cfgs[b]));
    let same_hosts = (ha.is_empty() && hb.is_empty()) || ha.iter().any(|h| hb.contains(h));
    let (pa, pb) = (&cfgs[a].path_prefix, &cfgs[b].path_prefix);
    if same_hosts && pa == pb {
        let what = if ha.is_empty() && hb.is_empty() {
            "neither names `hosts`".to_string()
        } else {
            "they name the same host".to_string()
        };
        return Err(eyre!(
            "environments `{}` and `{}` share `{field} = \"{addr}\"` but {what} (with the same \
             `path_prefix`), so both would answer the same requests; give each its own `hosts` \
             or `path_prefix`",
            names[a],
            names[b]
        ));
    }
    Ok(())
}

/// A bound group: its socket and address.
pub(super) async fn bind(g: &Group) -> Result<(TcpListener, SocketAddr)> {
    let what = match (g.listener, g.tls) {
        (Listener::Live, false) => "live listener",
        (Listener::Preview, false) => "preview listener",
        (Listener::Live, true) => "TLS listener",
        (Listener::Preview, true) => "preview TLS listener",
    };
    let l = super::bind(what, g.field, &g.addr).await?;
    let a = l.local_addr().wrap_err("cannot read a bound address")?;
    Ok((l, a))
}

/// The environments a group's listener routes to.
pub(super) fn routes(g: &Group, cfgs: &[&embedded::Config], shared: &[Arc<Shared>]) -> Routes {
    Routes(
        g.members
            .iter()
            .map(|&i| Route {
                hosts: hosts(cfgs[i]),
                prefix: cfgs[i].path_prefix.clone(),
                shared: shared[i].clone(),
            })
            .collect(),
    )
}
