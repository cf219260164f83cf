//! Placeholder until the embedded proxy lands.
use crate::config::{Config, Environment};
use crate::router::embedded;
use color_eyre::eyre::{Result, bail};
use std::net::SocketAddr;
pub struct ProxyHandle;
impl ProxyHandle {
    pub fn live_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 0))
    }
    pub fn preview_addr(&self) -> Option<SocketAddr> {
        None
    }
    pub fn admin_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 0))
    }
}
pub async fn start(_env: &Environment, _cfg: &embedded::Config) -> Result<ProxyHandle> {
    bail!("not yet")
}
pub async fn run_from_config(_cfg: &Config, _env: Option<&str>) -> Result<()> {
    bail!("not yet")
}
