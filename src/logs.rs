//! Where cutover's files go and how they are opened: the debug log (`cutover.log.YYYY-MM-DD`)
//! and the audit log (`audit.YYYY-MM-DD.jsonl`) are daily files created with mode 0600, in
//! directories cutover creates with mode 0700. Every line of the debug log goes through
//! [`crate::redact::redact`].

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The mode of the files cutover writes for itself (logs, state).
pub const FILE_MODE: u32 = 0o600;
/// The mode of the directories cutover creates for them.
pub const DIR_MODE: u32 = 0o700;

/// Create `dir` and its missing parents with mode 0700 (an existing directory is left as it is).
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)
}

/// A file per UTC day, `PREFIX.YYYY-MM-DD[.SUFFIX]` in `dir`, opened for appending with mode
/// 0600; a new day's file is opened on the first write of that day.
pub struct DailyFile {
    dir: PathBuf,
    prefix: String,
    suffix: Option<String>,
    open: Option<(String, File)>,
}

impl DailyFile {
    pub fn new(dir: &Path, prefix: &str, suffix: Option<&str>) -> DailyFile {
        DailyFile {
            dir: dir.to_path_buf(),
            prefix: prefix.to_string(),
            suffix: suffix.map(str::to_string),
            open: None,
        }
    }

    /// The file a write made now goes to.
    pub fn path_for_today(&self) -> PathBuf {
        self.path_for(&today())
    }

    fn path_for(&self, day: &str) -> PathBuf {
        let name = match &self.suffix {
            Some(s) => format!("{}.{day}.{s}", self.prefix),
            None => format!("{}.{day}", self.prefix),
        };
        self.dir.join(name)
    }

    /// Open today's file now (to report a directory that cannot be written early).
    pub fn open_now(&mut self) -> std::io::Result<()> {
        self.file().map(|_| ())
    }

    fn file(&mut self) -> std::io::Result<&mut File> {
        let day = today();
        if self.open.as_ref().is_none_or(|(d, _)| *d != day) {
            create_private_dir(&self.dir)?;
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .mode(FILE_MODE)
                .open(self.path_for(&day))?;
            self.open = Some((day, f));
        }
        match &mut self.open {
            Some((_, f)) => Ok(f),
            None => Err(std::io::Error::other("no log file open")),
        }
    }
}

fn today() -> String {
    let s = crate::timefmt::rfc3339(SystemTime::now());
    s.get(..10).unwrap_or(&s).to_string()
}

impl Write for DailyFile {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.file()?.write(b)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.open {
            Some((_, f)) => f.flush(),
            None => Ok(()),
        }
    }
}

/// Send the debug log to `dir/cutover.log.YYYY-MM-DD`, redacted, never to the screen. The
/// guard must live as long as the program, so the last lines are written.
pub fn init(dir: &Path) -> Option<tracing_appender::non_blocking::WorkerGuard> {
    create_private_dir(dir).ok()?;
    let (writer, guard) = tracing_appender::non_blocking(DailyFile::new(dir, "cutover.log", None));
    let filter = tracing_subscriber::EnvFilter::try_from_env("CUTOVER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_writer(crate::redact::Redacting(writer))
        .with_ansi(false)
        .with_env_filter(filter)
        .try_init();
    Some(guard)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn daily_files_and_their_directories_are_private() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        let mut f = DailyFile::new(&dir, "cutover.log", None);
        f.write_all(b"one\n").unwrap();
        f.flush().unwrap();
        let p = f.path_for_today();
        assert!(
            p.to_string_lossy().contains("cutover.log.20"),
            "{}",
            p.display()
        );
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&p), 0o600);
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&tmp.path().join("a")), 0o700);
        let mut g = DailyFile::new(&dir, "audit", Some("jsonl"));
        g.write_all(b"{}\n").unwrap();
        assert!(g.path_for_today().to_string_lossy().ends_with(".jsonl"));
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "one\n");
    }
}
