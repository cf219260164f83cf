//! cutover: a terminal control panel for blue/green/staging deployments.
//!
//! The library holds everything the binary does, so that integration tests drive the same
//! code: config, probes, router drivers, the operations engine, the embedded proxy, and the
//! TUI's state and views.
#![deny(clippy::unwrap_used)]

pub mod config;
pub mod load;
pub mod model;
pub mod paths;
pub mod proxy;
pub mod router;
pub mod slotserver;
pub mod timefmt;

/// A reqwest client builder with TLS ready (rustls on ring) and no system proxy: cutover's
/// requests go exactly where the config says.
pub fn http_client() -> reqwest::ClientBuilder {
    static TLS: std::sync::Once = std::sync::Once::new();
    TLS.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    reqwest::Client::builder().no_proxy()
}
