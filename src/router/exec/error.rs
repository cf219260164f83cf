//! What a failed command is: which router and verb, the command line, how it failed, what it said.

use super::*;

/// Why a command did not do its job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The verb has no command in the router's config.
    NotConfigured,
    /// The program could not be started (not installed, not executable...).
    Spawn(String),
    /// It ran and exited with a code other than 0, or was killed by a signal.
    Exit {
        code: Option<i32>,
        signal: Option<i32>,
    },
    /// It outlived the time limit and was killed with its process group.
    Timeout(Duration),
    /// `observe` ran but printed something cutover cannot read (the message says what).
    BadOutput(String),
}

/// A failed exec command, with what the operator needs to see: which router and verb, the
/// command line, how it failed and the end of what it printed.
#[derive(Debug, Clone)]
pub struct ExecError {
    pub router: String,
    pub verb: Cmd,
    /// The command as run (shell-quoted for reading); empty when nothing ran.
    pub command: String,
    pub failure: Failure,
    /// The last lines of stderr (or of stdout when stderr was empty), trimmed.
    pub output: String,
    /// `stderr` or `stdout`: where `output` came from.
    pub output_from: &'static str,
}

impl ExecError {
    /// The exit code, when the command exited by itself.
    pub fn exit_code(&self) -> Option<i32> {
        match self.failure {
            Failure::Exit { code, .. } => code,
            _ => None,
        }
    }
    pub fn is_timeout(&self) -> bool {
        matches!(self.failure, Failure::Timeout(_))
    }
}

impl fmt::Display for ExecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (r, key) = (&self.router, self.verb.key());
        match &self.failure {
            Failure::NotConfigured => {
                write!(
                    f,
                    "router `{r}`: `{key}` is not configured: add `{key} = [...]`"
                )?;
                if let Some(p) = self.verb.partner() {
                    write!(f, " and `{} = [...]`", p.key())?;
                }
                write!(f, " to the router (docs/exec.md has examples)")?;
            }
            Failure::Spawn(e) => write!(
                f,
                "router `{r}`: cannot start `{key}` ({}): {e}; check that the program is \
                 installed and on the PATH cutover runs with, or give its absolute path",
                self.command
            )?,
            Failure::Exit { code: Some(c), .. } => write!(
                f,
                "router `{r}`: `{key}` failed with exit code {c}: {}",
                self.command
            )?,
            Failure::Exit { signal, .. } => write!(
                f,
                "router `{r}`: `{key}` was killed by signal {}: {}",
                signal.map_or("?".to_string(), |s| s.to_string()),
                self.command
            )?,
            Failure::Timeout(d) => {
                write!(
                    f,
                    "router `{r}`: `{key}` timed out after {} and was killed with its whole \
                     process group: {}; ",
                    humantime::format_duration(*d),
                    self.command
                )?;
                if self.verb == Cmd::Observe {
                    write!(f, "raise `observe_timeout` if the tool is just slow")?;
                } else {
                    write!(
                        f,
                        "whether it changed anything is unknown: observe the router before \
                         retrying, or raise `timeout` if the tool is just slow"
                    )?;
                }
            }
            Failure::BadOutput(m) => write!(
                f,
                "router `{r}`: `{key}` printed output cutover cannot read: {m}"
            )?,
        }
        if !self.output.is_empty() {
            write!(f, "\n{}:", self.output_from)?;
            for line in self.output.lines() {
                write!(f, "\n  {line}")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ExecError {}

/// The last `ERROR_LINES` non-empty lines of `text`, each cut to a readable length.
pub(super) fn tail_lines(text: &str) -> String {
    let (skip, lines) = crate::text::last_lines(text, ERROR_LINES);
    let mut out = Vec::new();
    if skip > 0 {
        out.push(format!("… ({skip} earlier lines)"));
    }
    out.extend(lines.iter().map(|l| cut(l, 500)));
    out.join("\n")
}
