//! The audit trail: JSON lines per operation (an intent record before the first router
//! command, then the result, each stamped with its own time and sharing the operation's id), in a daily rolling file
//! (`audit.YYYY-MM-DD.jsonl` in the state dir, or `settings.audit_dir`).
//!
//! Secrets never reach it: every text is passed through [`redact`] first. The files are
//! created with mode 0600, the directory (when cutover creates it) with 0700.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

use serde::Serialize;

use crate::logs::DailyFile;
use crate::records::{FromTo, Versions};

/// One step of an operation as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepRecord {
    pub step: String,
    pub ok: bool,
    pub ms: u64,
    pub detail: String,
}

/// One operation, as written to the audit log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AuditRecord {
    /// When this record was written.
    pub time: String,
    /// The operation's id: its intent record and its result share it.
    pub id: String,
    /// When the operation started (the intent record's time).
    pub started: String,
    pub user: String,
    pub environment: String,
    pub operation: String,
    #[serde(flatten)]
    pub slots: FromTo,
    #[serde(flatten)]
    pub versions: Versions,
    pub forced: bool,
    /// A rollback started by one key, without a dialog (the rollback window).
    #[serde(default)]
    pub one_key: bool,
    /// `started` for the intent record written before the first router command; then the
    /// verdict: `done`, `refused`, `failed`, `rolled-back`, `alarm`, `cancelled` or
    /// `abandoned` (cutover was quit in the middle of a router change); `notify-failed` for
    /// a notification about the operation that could not be delivered ([`crate::notify`]).
    pub result: String,
    pub message: String,
    pub steps: Vec<StepRecord>,
}

pub struct AuditLog {
    writer: Mutex<DailyFile>,
    pub dir: PathBuf,
    /// The shared store (etcd) that gets every record too, when there is one.
    shared: Option<crate::state::Store>,
}

impl AuditLog {
    pub fn open(dir: PathBuf) -> color_eyre::eyre::Result<AuditLog> {
        crate::logs::create_private_dir(&dir).map_err(|e| {
            color_eyre::eyre::eyre!("cannot create the audit dir {}: {e}", dir.display())
        })?;
        let mut appender = DailyFile::new(&dir, "audit", Some("jsonl"));
        // Open today's file now, so a directory that cannot be written is reported at start.
        appender.open_now().map_err(|e| {
            color_eyre::eyre::eyre!("cannot open the audit log in {}: {e}", dir.display())
        })?;
        Ok(AuditLog {
            writer: Mutex::new(appender),
            dir,
            shared: None,
        })
    }

    /// Write every record to the shared store too (the local file keeps them all the same).
    pub fn share(mut self, store: &crate::state::Store) -> AuditLog {
        if store.shared().is_some() {
            self.shared = Some(store.clone());
        }
        self
    }

    /// Append a record. An audit write that fails is logged loudly; it never panics.
    pub fn write(&self, rec: &AuditRecord) {
        let mut rec = rec.clone();
        rec.message = redact(&rec.message);
        for s in &mut rec.steps {
            s.step = redact(&s.step);
            s.detail = redact(&s.detail);
        }
        for v in [&mut rec.versions.from_version, &mut rec.versions.to_version]
            .into_iter()
            .flatten()
        {
            *v = redact(v);
        }
        let Ok(mut line) = serde_json::to_vec(&rec) else {
            return;
        };
        line.push(b'\n');
        match self.writer.lock() {
            Ok(mut w) => {
                if let Err(e) = w.write_all(&line).and_then(|_| w.flush()) {
                    tracing::error!("cannot write the audit log: {e}");
                }
            }
            Err(_) => tracing::error!("the audit log writer is poisoned"),
        }
        if let Some(e) = self.shared.as_ref().and_then(|s| s.shared()) {
            let text = String::from_utf8_lossy(&line);
            e.audit(
                &rec.environment,
                &rec.time,
                &rec.id,
                &rec.result,
                text.trim_end(),
            );
        }
    }
}

/// The one redaction function (see [`crate::redact`]), here too for the callers that know it
/// as the audit log's.
pub use crate::redact::redact;

/// A swap of `shop` from blue to green by ann@box, for tests.
#[cfg(test)]
pub(crate) fn a_swap(id: &str) -> AuditRecord {
    AuditRecord {
        id: id.into(),
        user: "ann@box".into(),
        environment: "shop".into(),
        operation: "swap".into(),
        slots: FromTo {
            from: Some("blue".into()),
            to: Some("green".into()),
        },
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_removed() {
        let s = redact(
            "POST http://admin:hunter2@10.0.0.1/balancer-manager failed; Authorization: Bearer abc123 token=xyz",
        );
        assert!(!s.contains("hunter2"), "{s}");
        assert!(!s.contains("abc123"), "{s}");
        assert!(!s.contains("xyz"), "{s}");
        assert!(s.contains("http://***@10.0.0.1/balancer-manager"), "{s}");
        assert_eq!(redact("plain text"), "plain text");
    }

    #[test]
    fn a_record_is_one_json_line_with_its_fields_in_their_order() {
        let rec = AuditRecord {
            time: "t1".into(),
            started: "t0".into(),
            versions: Versions {
                from_version: None,
                to_version: Some("v2".into()),
            },
            forced: false,
            one_key: true,
            result: "done".into(),
            message: "ok".into(),
            ..a_swap("a1")
        };
        assert_eq!(
            serde_json::to_string(&rec).expect("json"),
            concat!(
                r#"{"time":"t1","id":"a1","started":"t0","user":"ann@box","environment":"shop","#,
                r#""operation":"swap","from":"blue","to":"green","from_version":null,"#,
                r#""to_version":"v2","forced":false,"one_key":true,"result":"done","message":"ok","#,
                r#""steps":[]}"#
            )
        );
    }
}
