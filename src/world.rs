//! The world: what the config becomes when cutover starts — the store, the audit log, the
//! prober, each environment's drivers and operations engine — and the watchers that poll them
//! and report what they see ([`Seen`]). Both faces stand on it: the TUI (`tui`, `app`, `ui`)
//! and the headless CLI (`commands`). No terminal in here.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use color_eyre::eyre::{Result, WrapErr};
use tokio::sync::{mpsc, watch};

use crate::audit::AuditLog;
use crate::config::Config;
use crate::envview::Seen;
use crate::ops::Engine;
use crate::probe::{Prober, SlotPoll};
use crate::slotserver::SlotControls;
use crate::state::{EnvMemory, Store};

/// Everything the TUI runs against.
pub struct World {
    pub config: Config,
    pub engines: Vec<Arc<Engine>>,
    pub store: Store,
    /// Demo slot controls, by slot name (the demo keys).
    pub demo: Option<Vec<Arc<SlotControls>>>,
}

impl World {
    pub fn build(config: Config, demo: Option<Vec<Arc<SlotControls>>>) -> Result<World> {
        let store = config.settings.open_store()?;
        let audit = match AuditLog::open(config.settings.audit_dir_or_default()) {
            Ok(a) => Some(Arc::new(a.share(&store))),
            Err(e) => {
                tracing::error!("no audit log: {e:#}");
                None
            }
        };
        let prober = Prober::new(&config.settings)?;
        let notifier = if config.notify.is_empty() {
            None
        } else {
            Some(Arc::new(crate::notify::Notifier::start(
                &config.notify,
                audit.clone(),
            )?))
        };
        let mut engines = Vec::new();
        for env in &config.environments {
            let routers = crate::router::build_all(env.routed(), &env.routers)
                .wrap_err_with(|| format!("cannot set up the routers of `{}`", env.name))?;
            engines.push(Arc::new(Engine {
                env: env.clone(),
                routers,
                prober: prober.clone(),
                store: store.clone(),
                audit: audit.clone(),
                notifier: notifier.clone(),
                probe_spacing: Duration::from_millis(300),
            }));
        }
        Ok(World {
            config,
            engines,
            store,
            demo,
        })
    }

    /// What cutover remembers of each environment (in `engines` order), from one read of the
    /// state file.
    pub fn memories(&self) -> Vec<EnvMemory> {
        let mut all = self.store.load().environments;
        self.engines
            .iter()
            .map(|e| all.remove(&e.env.name).unwrap_or_default())
            .collect()
    }

    /// Start the probe and observer tasks; they stop when `stop` flips.
    pub fn spawn_watchers<E>(&self, tx: mpsc::UnboundedSender<E>, stop: watch::Receiver<bool>)
    where
        E: From<Seen> + Send + 'static,
    {
        let interval = self.config.settings.poll_interval;
        let rt = poll_runtime(&stop);
        for (ei, engine) in self.engines.iter().enumerate() {
            for si in 0..engine.env.slots.len() {
                // Each tick clones two `Arc`s, nothing else: the slot is read in place, and
                // its poller keeps its connection (only this task locks it).
                let engine = engine.clone();
                let poll = Arc::new(tokio::sync::Mutex::new(SlotPoll::new(
                    engine.prober.clone(),
                    &engine.env.slots[si],
                )));
                every(&rt, interval, &tx, &stop, move || {
                    let (engine, poll) = (engine.clone(), poll.clone());
                    async move {
                        let slot = &engine.env.slots[si];
                        let result = poll.lock().await.poll(slot).await;
                        Seen::Probe {
                            env: ei,
                            slot: si,
                            result,
                        }
                    }
                });
            }
            for (preview, url) in [
                (false, &engine.env.public_url),
                (true, &engine.env.preview_url),
            ] {
                let Some(url) = url.clone() else { continue };
                let engine = engine.clone();
                // Half a poll apart from the router readings: these probes go through the
                // router, which counts them, and the App takes them off its counters again
                // (see `app::SlotTraffic`); a probe sent while a reading is taken could land
                // on either side of it.
                every_from(&rt, interval / 2, interval, &tx, &stop, move || {
                    let (engine, url) = (engine.clone(), url.clone());
                    async move {
                        let result = engine.prober.probe_behind(&engine.env, &url).await;
                        Seen::Url {
                            env: ei,
                            preview,
                            result,
                        }
                    }
                });
            }
            for (ri, router) in engine.routers.iter().enumerate() {
                // The router's own limit (exec's `observe_timeout`, as configured).
                let limit = router.observe_timeout();
                let router = router.clone();
                every(&rt, interval, &tx, &stop, move || {
                    let router = router.clone();
                    async move {
                        let result = crate::router::observe_within(&*router, limit).await;
                        Seen::Router {
                            env: ei,
                            router: ri,
                            result,
                            at: SystemTime::now(),
                        }
                    }
                });
            }
            // Another operator's operations, step by step, from the shared store.
            if let Some(etcd) = self.store.shared() {
                let (ltx, mut lines) = mpsc::unbounded_channel();
                etcd.follow(&engine.env.name, ltx);
                let (tx, mut stop) = (tx.clone(), stop.clone());
                let (store, name) = (self.store.clone(), engine.env.name.clone());
                tokio::spawn(async move {
                    loop {
                        let seen = tokio::select! {
                            l = lines.recv() => l,
                            _ = stop.changed() => return,
                        };
                        let event = match seen {
                            None => return,
                            Some(crate::etcd::Seen::Line(text)) => Seen::Shared { env: ei, text },
                            Some(crate::etcd::Seen::Store { up, text, quiet }) => Seen::Store {
                                env: ei,
                                up,
                                text: (!quiet).then_some(text),
                            },
                            // Another operator's swap changed what `r` goes back to.
                            Some(crate::etcd::Seen::Ended) => {
                                let (store, name) = (store.clone(), name.clone());
                                let Ok(memory) =
                                    tokio::task::spawn_blocking(move || store.env(&name)).await
                                else {
                                    continue;
                                };
                                Seen::Memory { env: ei, memory }
                            }
                        };
                        if tx.send(event.into()).is_err() {
                            return;
                        }
                    }
                });
            }
            // The lock, an interrupted operation, and what the store remembers, read again:
            // another cutover's swap changes what this one last set (else it would read as
            // drift) and where `r` goes back to.
            let (store, name) = (self.store.clone(), engine.env.name.clone());
            every(
                &rt,
                interval.max(Duration::from_secs(1)),
                &tx,
                &stop,
                move || {
                    let (store, name) = (store.clone(), name.clone());
                    async move {
                        // The holder first: an operation that has let go has written its
                        // memory already.
                        let (holder, interrupted, memory) =
                            tokio::task::spawn_blocking(move || {
                                let holder = store.holder(&name);
                                (holder, store.interrupted(&name), store.env(&name))
                            })
                            .await
                            .unwrap_or_default();
                        Seen::Stored {
                            env: ei,
                            holder,
                            interrupted,
                            memory,
                        }
                    }
                },
            );
        }
        // Notifications that could not be delivered, in the event pane of their environment.
        if let Some(n) = self.engines.iter().find_map(|e| e.notifier.clone()) {
            let mut failures = n.failures();
            let names: Vec<String> = self.engines.iter().map(|e| e.env.name.clone()).collect();
            let (tx, mut stop) = (tx.clone(), stop.clone());
            tokio::spawn(async move {
                loop {
                    let (env, text) = tokio::select! {
                        f = failures.recv() => match f {
                            Ok(f) => f,
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                            Err(_) => return,
                        },
                        _ = stop.changed() => return,
                    };
                    let Some(env) = names.iter().position(|n| *n == env) else {
                        continue;
                    };
                    if tx.send(Seen::NotifyFailed { env, text }.into()).is_err() {
                        return;
                    }
                }
            });
        }
    }
}

/// Where the polls run: a single-threaded runtime on a thread of its own, which ends when
/// `stop` flips (or its sender is gone). Polls are many small requests; on the main runtime
/// each burst of them woke its second worker to steal a share, and those wake-ups cost more
/// than the requests (`cutover watch` on 1,000 slots at 1 Hz: 8.1 % of a core there, see
/// BENCHMARKS.md for the figure here). On their own thread they also cannot delay a key, a
/// frame or an operation. Should the thread not start, the polls run on the caller's runtime.
fn poll_runtime(stop: &watch::Receiver<bool>) -> tokio::runtime::Handle {
    let mut stop = stop.clone();
    let own = crate::runtime_thread("cutover-poll", async move {
        while !*stop.borrow_and_update() {
            if stop.changed().await.is_err() {
                return;
            }
        }
    });
    match own {
        Ok(handle) => handle,
        Err(e) => {
            tracing::warn!("polls run on the main runtime: no thread of their own: {e}");
            tokio::runtime::Handle::current()
        }
    }
}

/// Run `poll` on `rt` on every tick of `interval` and send what it returns, until `stop`
/// flips or the app is gone. A slow `poll` delays only its own next tick.
fn every<E, F, Fut>(
    rt: &tokio::runtime::Handle,
    interval: Duration,
    tx: &mpsc::UnboundedSender<E>,
    stop: &watch::Receiver<bool>,
    poll: F,
) where
    E: From<Seen> + Send + 'static,
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Seen> + Send + 'static,
{
    every_from(rt, Duration::ZERO, interval, tx, stop, poll)
}

/// [`every`], the first tick `phase` from now.
fn every_from<E, F, Fut>(
    rt: &tokio::runtime::Handle,
    phase: Duration,
    interval: Duration,
    tx: &mpsc::UnboundedSender<E>,
    stop: &watch::Receiver<bool>,
    mut poll: F,
) where
    E: From<Seen> + Send + 'static,
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Seen> + Send + 'static,
{
    let (tx, mut stop) = (tx.clone(), stop.clone());
    rt.spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + phase, interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            let ev = tokio::select! {
                ev = poll() => ev,
                _ = stop.changed() => return,
            };
            if tx.send(ev.into()).is_err() {
                return;
            }
        }
    });
}
