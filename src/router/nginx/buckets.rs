//! Canary weights of the realpath method: a static split into 100 buckets, each a link, so a
//! weight change renames links and never reloads nginx.
//!
//! `upstreams.conf` always holds (beside the `map $realpath_root` of the live/next links)
//!
//! ```nginx
//! split_clients "${request_id}" $cutover_shop_bucket { 1% b00; 1% b01; … 1% b98; * b99; }
//! map $cookie_cutover_shop $cutover_shop_root {
//!     default "_split/$cutover_shop_bucket";
//!     "blue" "_sticky/blue";
//!     "green" "_sticky/green";
//! }
//! map $realpath_root $cutover_shop_slot { "~^DIR/blue$" "blue"; … }
//! ```
//!
//! and the live route's root is `DIR/$cutover_shop_root`. A request without the sticky cookie
//! lands in one of 100 buckets by the hash of its random request id; each bucket is a link
//! `_split/bNN`: `../live` (follow the live link) or, while a canary runs, `../<canary>`. A
//! canary at k % points `b00` … `b(k-1)` at the canary's directory: each step renames at most
//! 100 links (atomically each, as a swap does) and nginx resolves them on the next request.
//!
//! The sticky cookie: `_sticky/<slot>` is `../live` for every slot but the canary's, which is
//! `../<canary>` while the canary runs. While `_canary` (a link to the canary's directory)
//! exists, the live route sets `cookie=<the slot that answered>`; a client that sends it back
//! stays on its slot while the share moves, and after the abort its cookie follows `live`.

use super::*;

/// How many buckets the split has: a share moves in steps of 1 %.
const BUCKETS: usize = 100;
const SPLIT: &str = "_split";
const STICKY: &str = "_sticky";
/// A link to the canary's directory while a canary runs: the live route sets the cookie.
const CANARY: &str = "_canary";
/// Where a bucket or sticky link points when it follows the live link.
const FOLLOW_LIVE: &str = "../live";

impl Nginx {
    fn bucket_var(&self) -> String {
        format!("{}_bucket", self.var_base)
    }
    fn root_var(&self) -> String {
        format!("{}_root", self.var_base)
    }
    fn served_var(&self) -> String {
        format!("{}_slot", self.var_base)
    }
    fn bucket(&self, i: usize) -> PathBuf {
        self.dir().join(SPLIT).join(format!("b{i:02}"))
    }
    fn sticky(&self, slot: &str) -> PathBuf {
        self.dir().join(STICKY).join(slot)
    }
    fn canary_marker(&self) -> PathBuf {
        self.dir().join(CANARY)
    }

    /// The realpath method's blocks in `upstreams.conf` for the split: the buckets, the
    /// cookie's choice of root, and the slot a real path names (the cookie's value).
    /// `d` is the canonical directory, escaped for a regex.
    pub(super) fn render_buckets(&self, d: &str) -> String {
        let mut s = format!(
            "# The canary split: a request without the cookie {cookie} lands in one of {BUCKETS} \
             buckets,\n# each a link in {SPLIT}/ that cutover points at the live or the canary \
             slot.\nsplit_clients \"${{request_id}}\" ${} {{\n",
            self.bucket_var(),
            cookie = self.cookie(),
        );
        for i in 0..BUCKETS - 1 {
            s.push_str(&format!("    1% b{i:02};\n"));
        }
        s.push_str(&format!("    * b{:02};\n}}\n", BUCKETS - 1));
        s.push_str(&format!(
            "map $cookie_{} ${} {{\n    default \"{SPLIT}/${}\";\n",
            self.cookie(),
            self.root_var(),
            self.bucket_var()
        ));
        for slot in &self.slots {
            s.push_str(&format!("    \"{0}\" \"{STICKY}/{0}\";\n", slot.name));
        }
        s.push_str(&format!(
            "}}\nmap $realpath_root ${} {{\n    default \"\";\n",
            self.served_var()
        ));
        for slot in &self.slots {
            s.push_str(&format!(
                "    \"~^{d}/{}$\" \"{}\";\n",
                regex_escape(&slot.name),
                slot.name
            ));
        }
        s.push_str("}\n");
        s
    }

    /// The live route's root and cookie (before its `proxy_pass`).
    pub(super) fn bucket_root(&self) -> String {
        format!(
            "# A bucket link or the cookie's sticky link names the slot; moving them needs no \
             reload.\nroot {}/${};\n",
            self.dir().display(),
            self.root_var()
        )
    }

    /// The live route's sticky cookie. Its `add_header` is inside the `if`, so a location
    /// that runs no canary keeps the server's `add_header`s (nginx drops them in a block
    /// that has its own).
    pub(super) fn bucket_cookie(&self) -> String {
        format!(
            "# While a canary runs ({CANARY} exists), the answer pins its client to its slot.\n\
             if (-e {}) {{\n    add_header Set-Cookie \"{}=${}; Path=/; HttpOnly; \
             SameSite=Lax\" always;\n}}\n",
            self.canary_marker().display(),
            self.cookie(),
            self.served_var(),
        )
    }

    /// The directories of the split.
    pub(super) fn bucket_dirs(&self) -> Vec<Change> {
        [SPLIT, STICKY]
            .map(|d| Change::Dir(self.dir().join(d)))
            .to_vec()
    }

    /// The links for a split (none: every bucket and cookie follows `live`), in an order
    /// where no request meets a cookie that leads nowhere: starting, the canary's sticky link
    /// and the marker come before the buckets; ending, the buckets come first.
    pub(super) fn bucket_changes(&self, split: Option<&Weights>) -> Vec<Change> {
        let canary = split.map(|w| w.canary.as_str());
        let k = split.map_or(0, |w| usize::from(w.canary_percent).min(BUCKETS));
        let to = |slot: Option<&str>| slot.map_or(FOLLOW_LIVE.to_string(), |s| format!("../{s}"));
        let buckets =
            (0..BUCKETS).map(|i| Change::Link(self.bucket(i), to(canary.filter(|_| i < k))));
        let mut cookie: Vec<Change> = (self.slots.iter())
            .map(|s| {
                let own = canary.filter(|c| *c == s.name);
                Change::Link(self.sticky(&s.name), to(own))
            })
            .collect();
        cookie.push(match canary {
            Some(c) => Change::Link(self.canary_marker(), c.to_string()),
            None => Change::Absent(self.canary_marker()),
        });
        if split.is_some() {
            cookie.into_iter().chain(buckets).collect()
        } else {
            buckets.chain(cookie).collect()
        }
    }

    /// The split the bucket links make, into `disk` (after the live link is read): the slot
    /// most buckets name other than `live`, with its share.
    pub(super) fn read_buckets(&self, disk: &mut Disk) {
        let mut named: BTreeMap<String, u8> = BTreeMap::new();
        let mut strays = Vec::new();
        for i in 0..BUCKETS {
            let link = self.bucket(i);
            let target = std::fs::read_link(&link).ok();
            let target = target.as_deref().and_then(Path::to_str).unwrap_or("");
            if target == FOLLOW_LIVE {
                continue;
            }
            let known = |s: &&str| self.slots.iter().any(|slot| slot.name == *s);
            match target.strip_prefix("../").filter(known) {
                Some(s) if disk.live.as_deref() != Some(s) => {
                    *named.entry(s.into()).or_default() += 1
                }
                Some(_) => {}
                None => strays.push(link.display().to_string()),
            }
        }
        if !strays.is_empty() {
            disk.notes.push(format!(
                "{} of the {BUCKETS} bucket links in {} are missing or point at no slot (first: \
                 {}): nginx answers 500 for their share; the next change writes them",
                strays.len(),
                self.dir().join(SPLIT).display(),
                strays[0]
            ));
        }
        let live = disk.live.clone();
        disk.split =
            (named.iter().max_by_key(|(_, n)| **n))
                .zip(live)
                .map(|((canary, n), live)| Weights {
                    live,
                    canary: canary.clone(),
                    canary_percent: *n,
                });
        if named.len() > 1 {
            disk.notes.push(format!(
                "the bucket links in {} send traffic to more than one canary ({}; changed by \
                 hand?); cutover reports {} and the next change rewrites them",
                self.dir().join(SPLIT).display(),
                named.keys().cloned().collect::<Vec<_>>().join(", "),
                disk.split.as_ref().map_or("", |w| w.canary.as_str())
            ));
        }
        let drifted = self
            .bucket_changes(disk.split.as_ref())
            .iter()
            .filter(|c| !c.in_place())
            .count();
        if drifted > 0 && strays.is_empty() && named.len() <= 1 {
            disk.notes.push(format!(
                "{drifted} links in {} differ from what cutover writes for this split (changed \
                 by hand?); the next change rewrites them",
                self.dir().display()
            ));
        }
    }
}
