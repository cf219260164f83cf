//! Hook commands (rolling deploys): placeholders and a run with a timeout.

use super::*;

/// Replace `{key}` placeholders in every argument.
pub fn template(argv: &[String], vars: &[(&str, &str)]) -> Vec<String> {
    argv.iter()
        .map(|a| {
            let mut a = a.clone();
            for (k, v) in vars {
                a = a.replace(&format!("{{{k}}}"), v);
            }
            a
        })
        .collect()
}

/// Run a hook command with a timeout; Err carries the exit code and the end of stderr.
pub async fn run_hook(argv: &[String], timeout: Duration) -> std::result::Result<(), String> {
    let Some((prog, args)) = argv.split_first() else {
        return Err("empty command".into());
    };
    let child = tokio::process::Command::new(prog)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run `{prog}`: {e}"))?;
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Err(_) => Err(format!(
            "`{}` did not finish within {}",
            argv.join(" "),
            crate::timefmt::millis(timeout)
        )),
        Ok(Err(e)) => Err(format!("`{prog}` failed: {e}")),
        Ok(Ok(o)) if o.status.success() => Ok(()),
        Ok(Ok(o)) => {
            let err = String::from_utf8_lossy(&o.stderr);
            let tail: Vec<&str> = err
                .lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            Err(format!(
                "`{}` exited with {}: {}",
                argv.join(" "),
                o.status.code().map_or("a signal".into(), |c| c.to_string()),
                tail.join(" / ")
            ))
        }
    }
}
