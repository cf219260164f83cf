//! The `embedded` driver. Not built yet: building it is the work of its issue.

use color_eyre::eyre::{Result, bail};
use serde::Deserialize;

use crate::config::{Environment, Slot};
use crate::model::{MaintenanceMode, RouterState};
use crate::router::{BoxFuture, Router, Target};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The router's name in its environment (defaults to the kind).
    #[serde(default)]
    pub name: Option<String>,
}

impl Config {
    pub fn validate(&self, _slots: &[Slot]) -> std::result::Result<(), String> {
        Err("the embedded driver is not built yet in this version of cutover".into())
    }
}

pub struct Driver {
    name: String,
}

impl Driver {
    pub fn new(name: String, _env: &Environment, _cfg: &Config) -> Result<Self> {
        Ok(Driver { name })
    }
}

impl Router for Driver {
    fn name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> &'static str {
        "embedded"
    }
    fn observe(&self) -> BoxFuture<'_, Result<RouterState>> {
        Box::pin(async { bail!("the embedded driver is not built yet") })
    }
    fn switch_live<'a>(&'a self, _to: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async { bail!("the embedded driver is not built yet") })
    }
    fn set_preview<'a>(&'a self, _slot: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async { bail!("the embedded driver is not built yet") })
    }
    fn drain<'a>(&'a self, _t: &'a Target) -> BoxFuture<'a, Result<()>> {
        Box::pin(async { bail!("the embedded driver is not built yet") })
    }
    fn undrain<'a>(&'a self, _t: &'a Target) -> BoxFuture<'a, Result<()>> {
        Box::pin(async { bail!("the embedded driver is not built yet") })
    }
    fn maintenance<'a>(&'a self, _on: bool, _m: &'a MaintenanceMode) -> BoxFuture<'a, Result<()>> {
        Box::pin(async { bail!("the embedded driver is not built yet") })
    }
}
