//! File mode's canary split: bucket files in `flag_dir/split=<canary>/`, tested per request
//! by the routes of [`Caddy::file_mode_routes`], so a weight change is no config change.
//!
//! Each request on the live route draws a bucket from its random `{http.request.uuid}` (the
//! first two hex digits: 256 buckets) and goes to the canary when `split=<canary>/<bucket>`
//! exists. N % is `round(N × 256 / 100)` bucket files (`00`, `01`, … in order): 5 % is 13
//! (5.08 %), 25 % is 64, 50 % is 128, 100 % all 256; every whole percentage reads back as
//! itself. `split=<canary>/on` says the split is on: only then does the sticky cookie count.
//!
//! The first step builds the directory under a hidden name and renames it in, so its buckets
//! appear at once; a step creates or removes bucket files, each at once; 0 % (the abort) and
//! a switch of the live slot rename the directory away (every bucket leaves in one rename),
//! then remove it.

use super::*;
use crate::model::Weights;

/// How many buckets a request can draw.
pub(super) const BUCKETS: usize = 256;
pub(super) const SPLIT: &str = "split";
/// The file whose presence turns a split directory on.
pub(super) const ON: &str = "on";
/// The placeholder of the bucket a request drew (set by the live routes).
pub(super) const BUCKET_PLACEHOLDER: &str = "{http.vars.cutover_bucket}";

/// The bucket files for `percent` %.
pub(super) fn buckets_for(percent: u8) -> usize {
    (usize::from(percent.min(100)) * BUCKETS + 50) / 100
}

/// The share `n` bucket files give, rounded to a whole percentage.
pub(super) fn percent_of(n: usize) -> u8 {
    u8::try_from((n.min(BUCKETS) * 100 + BUCKETS / 2) / BUCKETS).unwrap_or(100)
}

/// The name of bucket `i`: two lower-case hex digits, as the request id's first two.
fn bucket(i: usize) -> String {
    format!("{i:02x}")
}

/// One `split=<canary>` directory as found.
#[derive(Debug)]
pub(super) struct SplitDir {
    pub canary: String,
    pub buckets: usize,
    pub on: bool,
}

impl Caddy {
    fn split_path(&self, canary: &str) -> Result<PathBuf> {
        Ok(self.flag_dir()?.join(format!("{SPLIT}={canary}")))
    }

    /// Every `split=*` directory in `flag_dir`, with its bucket count.
    pub(super) fn split_dirs(&self) -> Result<Vec<SplitDir>> {
        let mut out = Vec::new();
        for canary in self.flags(SPLIT)? {
            let path = self.split_path(&canary)?;
            let Ok(entries) = std::fs::read_dir(&path) else {
                continue;
            };
            let (mut buckets, mut on) = (0, false);
            for e in entries {
                let e = e.wrap_err_with(|| format!("cannot read {}", path.display()))?;
                let name = e.file_name();
                let name = name.to_str().unwrap_or_default();
                if name == ON {
                    on = true;
                } else if name.len() == 2
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                {
                    buckets += 1;
                }
            }
            out.push(SplitDir {
                canary,
                buckets,
                on,
            });
        }
        Ok(out)
    }

    /// The split the flag files describe: the `live=` slot, and the one split directory
    /// that is on. None without one (or with several: observe notes them).
    pub(super) fn file_split(&self) -> Result<Option<Weights>> {
        let live = self.flags(Pointer::Live.flag())?;
        let on: Vec<SplitDir> = self.split_dirs()?.into_iter().filter(|s| s.on).collect();
        Ok(match (live.as_slice(), on.as_slice()) {
            ([live], [s]) if s.buckets > 0 && &s.canary != live => Some(Weights {
                live: live.clone(),
                canary: s.canary.clone(),
                canary_percent: percent_of(s.buckets),
            }),
            _ => None,
        })
    }

    /// Take every split directory away.
    pub(super) fn end_file_splits(&self) -> Result<()> {
        for canary in self.flags(SPLIT)? {
            self.end_split(&canary)?;
        }
        Ok(())
    }

    /// Take `split=<canary>` away: renamed to a hidden name first (its buckets leave in one
    /// step), then removed.
    fn end_split(&self, canary: &str) -> Result<()> {
        let path = self.split_path(canary)?;
        let gone = self.flag_dir()?.join(format!(".{SPLIT}-ended"));
        remove_leftover(&gone)?;
        std::fs::rename(&path, &gone)
            .wrap_err_with(|| format!("cannot rename {} to {}", path.display(), gone.display()))?;
        remove_leftover(&gone)
    }

    /// Whether Caddy's config has the canary routes for `canary` under this flag directory.
    pub(super) fn has_split_route(&self, config: &Value, canary: &str) -> bool {
        let Ok(dir) = self.flag_dir() else {
            return false;
        };
        let want = json!({
            "root": dir.to_string_lossy(),
            "try_files": [format!("/{SPLIT}={canary}/{BUCKET_PLACEHOLDER}")],
        });
        let mut found = false;
        walk(config, &mut Vec::new(), &mut |_, v| {
            found |= v.get("file") == Some(&want);
        });
        found
    }

    pub(super) async fn set_file_split(&self, live: &str, canary: &str, pct: u8) -> Result<()> {
        self.slot(live)?;
        self.slot(canary)?;
        if pct == 0 {
            return self.end_file_splits();
        }
        let dir = self.flag_dir()?;
        let now_live = match self.flags(Pointer::Live.flag())?.as_slice() {
            [one] => one.clone(),
            _ => bail!(
                "{} holds no single live= file; switch live to a slot first; nothing was changed",
                dir.display()
            ),
        };
        crate::router::check_split(live, &now_live, canary)?;
        if self.file_maintenance()?.is_some() {
            bail!("maintenance is on: turn it off before a canary; nothing was changed");
        }
        let (config, _) = self.get_config().await?;
        if !self.has_split_route(&config, canary) {
            bail!(
                "Caddy's config has no canary route for {SPLIT}={canary} under {}: the bucket \
                 files would route nothing. Load the routes from `file_mode_routes` \
                 (docs/caddy.md) first; nothing was changed",
                dir.display()
            );
        }
        for other in self.flags(SPLIT)? {
            if other != canary {
                self.end_split(&other)?;
            }
        }
        let want = buckets_for(pct);
        let path = self.split_path(canary)?;
        if path.is_dir() {
            for i in 0..BUCKETS {
                let f = path.join(bucket(i));
                match (i < want, f.exists()) {
                    (true, false) => touch(&f)?,
                    (false, true) => std::fs::remove_file(&f)
                        .wrap_err_with(|| format!("cannot remove {}", f.display()))?,
                    _ => {}
                }
            }
            let on = path.join(ON);
            if !on.exists() {
                touch(&on)?;
            }
        } else {
            let new = dir.join(format!(".{SPLIT}-new"));
            remove_leftover(&new)?;
            std::fs::create_dir(&new)
                .wrap_err_with(|| format!("cannot create {}", new.display()))?;
            for i in 0..want {
                touch(&new.join(bucket(i)))?;
            }
            touch(&new.join(ON))?;
            std::fs::rename(&new, &path).wrap_err_with(|| {
                format!("cannot rename {} to {}", new.display(), path.display())
            })?;
        }
        let read = self.file_split()?;
        let expect = Weights {
            live: live.to_string(),
            canary: canary.to_string(),
            canary_percent: pct,
        };
        if read.as_ref() != Some(&expect) {
            let now = read.map_or_else(
                || "no split".to_string(),
                |w| format!("{} % to {}", w.canary_percent, w.canary),
            );
            bail!(
                "after the change {} reads as {now}, not {pct} % to {canary}: changed by another \
                 process or by hand; run `cutover status`, then set the weight again (0 ends the split)",
                dir.display()
            );
        }
        Ok(())
    }
}

fn touch(f: &Path) -> Result<()> {
    std::fs::File::create(f)
        .map(|_| ())
        .wrap_err_with(|| format!("cannot create {}", f.display()))
}

/// Remove a hidden directory a crash may have left.
fn remove_leftover(d: &Path) -> Result<()> {
    if d.exists() {
        std::fs::remove_dir_all(d).wrap_err_with(|| format!("cannot remove {}", d.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_whole_percentage_reads_back_as_itself() {
        for p in 0..=100u8 {
            assert_eq!(percent_of(buckets_for(p)), p, "{p} %");
        }
        assert_eq!(
            [5, 25, 50, 100].map(buckets_for),
            [13, 64, 128, 256],
            "the default plan"
        );
        assert!(buckets_for(1) > 0 && buckets_for(99) < BUCKETS);
        assert_eq!(
            (bucket(0), bucket(255)),
            ("00".to_string(), "ff".to_string())
        );
    }
}
