//! Notifications: `[[notify]]` webhooks told about operations (start, a failed step, the
//! verdict), as generic JSON or as a chat message (`{"text": "..."}`, what Slack and
//! Mattermost incoming webhooks take).
//!
//! An operation never waits for a notification: [`Notifier::send`] puts the event on each
//! matching entry's bounded queue without waiting (an event that does not fit is dropped and
//! logged), and one background task per entry delivers, with a timeout per attempt and bounded
//! retries with backoff. A delivery that fails for good is written to the audit log (result
//! `notify-failed`) and the debug log. Every text is redacted; the webhook URL (often a secret
//! itself) is never written anywhere, only its host.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use crate::audit::{AuditLog, AuditRecord};
use crate::model::Verdict;
use crate::records::FromTo;
use crate::redact::redact;

/// How many events may wait for one entry; more are dropped (and logged).
const QUEUE: usize = 256;
/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The most retries an entry may ask for.
pub const MAX_RETRIES: u32 = 10;

/// How a notification's body is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// The event as a JSON object (the fields are in the README).
    #[default]
    Json,
    /// `{"text": "..."}`: one line for a chat channel.
    Chat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn label(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// What happened to an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    /// The first router command is about to be sent (the intent record).
    Start,
    /// A step failed (the operation may still recover, e.g. by rolling back).
    StepFailed,
    /// A router's state differs from what cutover last set (a change by hand, a restart).
    Drift,
    /// The routers of a fleet send live traffic to different slots.
    #[serde(rename = "routers-disagree")]
    Disagree,
    /// The operation ended: `done`, `refused`, `failed`, `rolled-back`, `alarm`, `cancelled`.
    #[serde(untagged)]
    Ended(Verdict),
}

impl EventKind {
    pub const ALL: [EventKind; 10] = [
        EventKind::Start,
        EventKind::StepFailed,
        EventKind::Ended(Verdict::Done),
        EventKind::Ended(Verdict::Refused),
        EventKind::Ended(Verdict::Failed),
        EventKind::Ended(Verdict::RolledBack),
        EventKind::Ended(Verdict::Alarm),
        EventKind::Ended(Verdict::Cancelled),
        EventKind::Drift,
        EventKind::Disagree,
    ];

    pub fn name(self) -> &'static str {
        match self {
            EventKind::Start => "start",
            EventKind::StepFailed => "step-failed",
            EventKind::Ended(v) => v.label(),
            EventKind::Drift => "drift",
            EventKind::Disagree => "routers-disagree",
        }
    }

    pub fn from_name(s: &str) -> Option<EventKind> {
        Self::ALL.into_iter().find(|k| k.name() == s)
    }

    pub fn severity(self) -> Severity {
        match self {
            EventKind::Start | EventKind::Ended(Verdict::Done | Verdict::Cancelled) => {
                Severity::Info
            }
            EventKind::StepFailed
            | EventKind::Ended(Verdict::Refused | Verdict::RolledBack)
            | EventKind::Drift
            | EventKind::Disagree => Severity::Warning,
            EventKind::Ended(Verdict::Failed | Verdict::Alarm) => Severity::Critical,
        }
    }
}

/// One `[[notify]]` entry, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct NotifyConfig {
    pub url: String,
    pub format: Format,
    /// Only these events (`None`: every event at or above `min_severity`).
    pub events: Option<Vec<EventKind>>,
    pub min_severity: Severity,
    /// The variable holding a bearer token for the webhook.
    pub token_env: Option<String>,
    /// Attempts after the first failed one.
    pub retries: u32,
    /// Time limit of one attempt.
    pub timeout: Duration,
}

impl NotifyConfig {
    pub fn wants(&self, kind: EventKind) -> bool {
        match &self.events {
            Some(list) => list.contains(&kind),
            None => kind.severity() >= self.min_severity,
        }
    }

    /// `host[:port]` of the URL: how messages name the entry (the URL's path is often the
    /// webhook's secret).
    pub fn host(&self) -> &str {
        let rest = self
            .url
            .split_once("://")
            .map_or(self.url.as_str(), |(_, r)| r);
        let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
        host.rsplit_once('@').map_or(host, |(_, h)| h)
    }
}

/// The JSON body of a `format = "json"` notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    pub event: EventKind,
    pub severity: Severity,
    /// When it happened (RFC 3339, UTC).
    pub time: String,
    /// The operation's id, as in the audit log.
    pub operation_id: String,
    /// swap, rollback, drain, ...
    pub operation: String,
    pub environment: String,
    pub user: String,
    #[serde(flatten)]
    pub slots: FromTo,
    pub forced: bool,
    /// The failed step (`plan`, `gate`, `apply`, `verify`, `watch`) of a `step-failed` event.
    pub step: Option<String>,
    pub message: String,
}

impl Event {
    /// An event about the operation of `record` (its fields are redacted here).
    pub fn of(kind: EventKind, record: &AuditRecord, step: Option<&str>, message: &str) -> Event {
        let opt = |v: &Option<String>| v.as_deref().map(redact);
        Event {
            event: kind,
            severity: kind.severity(),
            time: crate::timefmt::rfc3339(SystemTime::now()),
            operation_id: record.id.clone(),
            operation: record.operation.clone(),
            environment: record.environment.clone(),
            user: record.user.clone(),
            slots: FromTo {
                from: opt(&record.slots.from),
                to: opt(&record.slots.to),
            },
            forced: record.forced,
            step: step.map(str::to_string),
            message: redact(message),
        }
    }

    /// The one line a chat channel gets.
    pub fn chat_text(&self) -> String {
        let route = match (&self.slots.from, &self.slots.to) {
            (Some(f), Some(t)) => format!(" {f} → {t}"),
            (None, Some(t)) => format!(" → {t}"),
            _ => String::new(),
        };
        let what = match (self.event, &self.step) {
            (EventKind::StepFailed, Some(s)) => format!("step {s} failed"),
            (k, _) => k.name().to_string(),
        };
        let mut t = format!(
            "[{}] cutover {} of {}{route}: {what}",
            self.severity.label(),
            self.operation,
            self.environment
        );
        if !self.message.is_empty() {
            t += " — ";
            t += &self.message;
        }
        t += &format!(" (by {}, id {})", self.user, self.operation_id);
        t
    }

    fn body(&self, format: Format) -> serde_json::Value {
        match format {
            Format::Json => serde_json::to_value(self).unwrap_or_default(),
            Format::Chat => serde_json::json!({ "text": self.chat_text() }),
        }
    }
}

struct Entry {
    cfg: NotifyConfig,
    /// 1-based, as in the config file.
    index: usize,
    tx: mpsc::Sender<Event>,
}

/// Delivers notifications in the background; see the module's documentation.
pub struct Notifier {
    entries: Vec<Entry>,
    /// Each failed delivery, as a line (environment, text): for the event pane.
    failures: tokio::sync::broadcast::Sender<(String, String)>,
    /// Events queued and not yet delivered or given up on.
    pending: Arc<watch::Sender<u64>>,
    dropped: AtomicU64,
}

impl Notifier {
    /// Start one delivery task per entry (inside a tokio runtime). A `token_env` that is not
    /// set is an error naming the variable.
    pub fn start(
        entries: &[NotifyConfig],
        audit: Option<Arc<AuditLog>>,
    ) -> Result<Notifier, crate::model::ConfigProblem> {
        let pending = Arc::new(watch::Sender::new(0u64));
        let (failures, _) = tokio::sync::broadcast::channel(64);
        let client = crate::http_client().build().map_err(|e| {
            crate::model::ConfigProblem(format!("cannot build an HTTP client: {e}"))
        })?;
        let mut out = Vec::new();
        for (i, cfg) in entries.iter().enumerate() {
            let index = i + 1;
            let token = match &cfg.token_env {
                None => None,
                Some(var) => match std::env::var(var) {
                    Ok(t) if !t.trim().is_empty() => {
                        crate::redact::register_secret(t.trim());
                        Some(t.trim().to_string())
                    }
                    _ => {
                        return Err(crate::model::ConfigProblem(format!(
                            "[[notify]] #{index} ({}): `token_env = \"{var}\"` but ${var} is not \
                             set (or empty); export the webhook's token in ${var}, or remove \
                             `token_env`",
                            cfg.host()
                        )));
                    }
                },
            };
            let (tx, rx) = mpsc::channel(QUEUE);
            let worker = Worker {
                cfg: cfg.clone(),
                index,
                token,
                client: client.clone(),
                audit: audit.clone(),
                pending: pending.clone(),
                failures: failures.clone(),
            };
            tokio::spawn(worker.run(rx));
            out.push(Entry {
                cfg: cfg.clone(),
                index,
                tx,
            });
        }
        Ok(Notifier {
            entries: out,
            failures,
            pending,
            dropped: AtomicU64::new(0),
        })
    }

    /// Queue `event` for every entry that wants it. Never waits.
    pub fn send(&self, event: &Event) {
        for e in self.entries.iter().filter(|e| e.cfg.wants(event.event)) {
            self.pending.send_modify(|n| *n += 1);
            if let Err(err) = e.tx.try_send(event.clone()) {
                self.pending.send_modify(|n| *n = n.saturating_sub(1));
                self.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    "notification {} of operation {} to [[notify]] #{} ({}) dropped: {}",
                    event.event.name(),
                    event.operation_id,
                    e.index,
                    e.cfg.host(),
                    match err {
                        mpsc::error::TrySendError::Full(_) =>
                            "its queue is full (the webhook is slow or down)",
                        mpsc::error::TrySendError::Closed(_) => "its delivery task has ended",
                    }
                );
            }
        }
    }

    /// Failed deliveries from now on, as (environment, line).
    pub fn failures(&self) -> tokio::sync::broadcast::Receiver<(String, String)> {
        self.failures.subscribe()
    }

    /// A warning about environment `env` that no operation caused (drift, routers that
    /// disagree), queued for the entries that want it.
    pub fn warn(&self, kind: EventKind, env: &str, message: &str) {
        let record = AuditRecord {
            id: String::new(),
            user: crate::paths::user_at_host(),
            environment: env.to_string(),
            operation: kind.name().to_string(),
            ..Default::default()
        };
        self.tell(kind, &record, None, message);
    }

    /// An event about the operation of `record` (see [`Event::of`]), queued.
    pub fn tell(&self, kind: EventKind, record: &AuditRecord, step: Option<&str>, message: &str) {
        if self.entries.iter().any(|e| e.cfg.wants(kind)) {
            self.send(&Event::of(kind, record, step, message));
        }
    }

    /// Events dropped because a queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Wait until every queued event has been delivered or given up on, for at most `within`
    /// (a command that exits right after its operation calls this). True when all are done.
    pub async fn flush(&self, within: Duration) -> bool {
        let mut rx = self.pending.subscribe();
        tokio::time::timeout(within, rx.wait_for(|n| *n == 0))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

struct Worker {
    cfg: NotifyConfig,
    index: usize,
    token: Option<String>,
    client: reqwest::Client,
    audit: Option<Arc<AuditLog>>,
    pending: Arc<watch::Sender<u64>>,
    failures: tokio::sync::broadcast::Sender<(String, String)>,
}

impl Worker {
    async fn run(self, mut rx: mpsc::Receiver<Event>) {
        while let Some(ev) = rx.recv().await {
            if let Err(why) = self.deliver(&ev).await {
                self.failed(&ev, &why);
            }
            self.pending.send_modify(|n| *n = n.saturating_sub(1));
        }
    }

    /// One event: the first attempt and up to `retries` more, waiting 0.5 s, 1 s, 2 s, ...
    /// between them. The error is the last attempt's.
    async fn deliver(&self, ev: &Event) -> Result<(), String> {
        let body = ev.body(self.cfg.format);
        let mut wait = Duration::from_millis(500);
        let mut last = String::new();
        for attempt in 0..=self.cfg.retries {
            if attempt > 0 {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(MAX_BACKOFF);
            }
            let mut req = self
                .client
                .post(&self.cfg.url)
                .timeout(self.cfg.timeout)
                .json(&body);
            if let Some(t) = &self.token {
                req = req.bearer_auth(t);
            }
            match req.send().await {
                Ok(r) if r.status().is_success() => return Ok(()),
                Ok(r) => last = format!("HTTP {}", r.status().as_u16()),
                Err(e) if e.is_timeout() => {
                    last = format!("no answer within {:?}", self.cfg.timeout);
                }
                Err(e) => {
                    // The error's text holds the URL; only its host may be shown.
                    let e = e.without_url();
                    last = crate::load::error_chain(&e);
                }
            }
        }
        Err(format!(
            "{last} (after {} attempt{})",
            self.cfg.retries + 1,
            if self.cfg.retries == 0 { "" } else { "s" }
        ))
    }

    fn failed(&self, ev: &Event, why: &str) {
        let message = redact(&format!(
            "notification `{}` to [[notify]] #{} ({}) failed: {why}",
            ev.event.name(),
            self.index,
            self.cfg.host()
        ));
        tracing::warn!(operation = %ev.operation_id, "{message}");
        let _ = self
            .failures
            .send((ev.environment.clone(), message.clone()));
        if let Some(a) = &self.audit {
            a.write(&AuditRecord {
                time: crate::timefmt::rfc3339(SystemTime::now()),
                id: ev.operation_id.clone(),
                started: ev.time.clone(),
                user: ev.user.clone(),
                environment: ev.environment.clone(),
                operation: ev.operation.clone(),
                slots: ev.slots.clone(),
                forced: ev.forced,
                result: "notify-failed".into(),
                message,
                ..Default::default()
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(events: Option<Vec<EventKind>>, min: Severity) -> NotifyConfig {
        NotifyConfig {
            url: "https://user:pw@hooks.example.com:8443/services/T0/B0/SECRET?x=1".into(),
            format: Format::Json,
            events,
            min_severity: min,
            token_env: None,
            retries: 0,
            timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn entries_filter_by_event_list_or_severity() {
        let c = cfg(None, Severity::Warning);
        assert!(!c.wants(EventKind::Start));
        assert!(!c.wants(EventKind::Ended(Verdict::Done)));
        assert!(c.wants(EventKind::Ended(Verdict::RolledBack)));
        assert!(c.wants(EventKind::Ended(Verdict::Alarm)));
        let c = cfg(
            Some(vec![EventKind::Ended(Verdict::Done)]),
            Severity::Critical,
        );
        assert!(c.wants(EventKind::Ended(Verdict::Done)));
        assert!(!c.wants(EventKind::Ended(Verdict::Alarm)));
    }

    #[test]
    fn only_the_host_names_an_entry() {
        assert_eq!(cfg(None, Severity::Info).host(), "hooks.example.com:8443");
    }

    #[test]
    fn names_round_trip_and_verdicts_map() {
        for k in EventKind::ALL {
            assert_eq!(EventKind::from_name(k.name()), Some(k));
            let json = serde_json::to_value(k).expect("json");
            assert_eq!(json, k.name());
        }
    }

    #[test]
    fn chat_text_is_one_line_with_the_route_and_verdict() {
        let rec = crate::audit::a_swap("op-1");
        let e = Event::of(
            EventKind::StepFailed,
            &rec,
            Some("verify"),
            "Bearer abc123 refused",
        );
        let t = e.chat_text();
        assert!(
            t.starts_with("[warning] cutover swap of shop blue → green: step verify failed — "),
            "{t}"
        );
        assert!(!t.contains("abc123"), "{t}");
        assert!(t.ends_with("(by ann@box, id op-1)"), "{t}");
    }
}
