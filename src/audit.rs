//! The audit trail: JSON lines per operation (an intent record before the first router
//! command, then the result, each stamped with its own time and sharing the operation's id), in a daily rolling file
//! (`audit.YYYY-MM-DD.jsonl` in the state dir, or `settings.audit_dir`).
//!
//! Secrets never reach it: every text is passed through [`redact`] first.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

use serde::Serialize;
use tracing_appender::rolling::{RollingFileAppender, Rotation};

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
    pub from: Option<String>,
    pub to: Option<String>,
    pub from_version: Option<String>,
    pub to_version: Option<String>,
    pub forced: bool,
    /// A rollback started by one key, without a dialog (the rollback window).
    #[serde(default)]
    pub one_key: bool,
    /// `started` for the intent record written before the first router command; then the
    /// verdict: `done`, `refused`, `failed`, `rolled-back`, `alarm`, `cancelled` or
    /// `abandoned` (cutover was quit in the middle of a router change).
    pub result: String,
    pub message: String,
    pub steps: Vec<StepRecord>,
}

pub struct AuditLog {
    writer: Mutex<RollingFileAppender>,
    pub dir: PathBuf,
}

impl AuditLog {
    pub fn open(dir: PathBuf) -> color_eyre::eyre::Result<AuditLog> {
        std::fs::create_dir_all(&dir).map_err(|e| {
            color_eyre::eyre::eyre!("cannot create the audit dir {}: {e}", dir.display())
        })?;
        let appender = RollingFileAppender::builder()
            .rotation(Rotation::DAILY)
            .filename_prefix("audit")
            .filename_suffix("jsonl")
            .build(&dir)
            .map_err(|e| {
                color_eyre::eyre::eyre!("cannot open the audit log in {}: {e}", dir.display())
            })?;
        Ok(AuditLog {
            writer: Mutex::new(appender),
            dir,
        })
    }

    /// Append a record. An audit write that fails is logged loudly; it never panics.
    pub fn write(&self, rec: &AuditRecord) {
        let mut rec = rec.clone();
        rec.message = redact(&rec.message);
        for s in &mut rec.steps {
            s.detail = redact(&s.detail);
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
    }
}

/// Remove credentials from a text: `user:pass@` in URLs, bearer tokens, `token=`/`password=`
/// values.
pub fn redact(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    // user:pass@ inside scheme://...
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c == '/' || c.is_whitespace() || c == '"')
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        if let Some(at) = authority.rfind('@') {
            out.push_str("***@");
            out.push_str(&authority[at + 1..]);
        } else {
            out.push_str(authority);
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    let mut words: Vec<String> = Vec::new();
    let mut hide_next = false;
    for w in out.split(' ') {
        if hide_next {
            words.push("***".into());
            hide_next = false;
            continue;
        }
        let lw = w.to_ascii_lowercase();
        if lw == "bearer" || lw == "basic" {
            hide_next = true;
            words.push(w.to_string());
        } else if let Some((k, _)) = w.split_once('=')
            && ["token", "password", "passwd", "secret", "apikey", "api_key"]
                .iter()
                .any(|s| k.to_ascii_lowercase().ends_with(s))
        {
            words.push(format!("{k}=***"));
        } else {
            words.push(w.to_string());
        }
    }
    words.join(" ")
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
}
