//! cutover: a terminal control panel for blue/green/staging deployments.
//!
//! The library holds everything the binary does, so that integration tests drive the same
//! code: config, probes, router drivers, the operations engine, the embedded proxy, and the
//! TUI's state and views.
#![deny(clippy::unwrap_used)]

pub mod app;
pub mod audit;
pub mod cli;
pub mod commands;
pub mod config;
pub mod demo;
pub mod drill;
pub mod envview;
pub mod etcd;
pub mod example;
pub mod hooks;
pub mod keymap;
pub mod load;
pub mod logs;
pub mod model;
pub mod notify;
pub mod ops;
pub mod paths;
pub mod probe;
pub mod prom;
pub mod proxy;
pub mod records;
pub mod redact;
pub mod router;
pub mod selfmetrics;
pub mod slotserver;
pub mod state;
pub mod text;
pub mod theme;
pub mod timefmt;
pub mod tui;
pub mod ui;
pub mod world;

/// A reqwest client builder with TLS ready (rustls on ring) and no system proxy: cutover's
/// requests go exactly where the config says.
pub fn http_client() -> reqwest::ClientBuilder {
    static TLS: std::sync::Once = std::sync::Once::new();
    TLS.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    reqwest::Client::builder().no_proxy()
}

/// A current-thread runtime on a thread of its own named `name`, running until `until`
/// completes; its handle. The runtime is built and dropped on that thread, never in the
/// caller's async context (where dropping one panics). Used where work must not queue behind
/// the caller's tasks: the polls, the embedded proxy's admin API, the etcd client.
pub fn runtime_thread(
    name: &str,
    until: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<tokio::runtime::Handle> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => {
                    let _ = tx.send(Ok(rt.handle().clone()));
                    rt.block_on(until);
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        })?;
    rx.recv()
        .map_err(|_| std::io::Error::other("the runtime's thread ended before it started"))?
}
