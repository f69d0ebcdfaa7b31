//! Which files a policy depends on (the policy, its includes, local feed
//! files), and which folders to watch for them. Folders, not files: editors
//! save by writing a new file and renaming it over the old one, which a watch
//! on the old file's inode would miss.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use crate::diag::SourceMap;
use crate::feeds::fetch::is_url;
use crate::feeds::FeedConfig;
use crate::ir::FeedDef;

/// What a changed file means for the service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The policy or an included file: recompile.
    Policy,
    /// A local feed file: recompile and refresh feeds.
    Feed,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchSet {
    pub policy_files: BTreeSet<PathBuf>,
    pub feed_files: BTreeSet<PathBuf>,
}

impl WatchSet {
    /// The files of a policy as last read: `sources` holds every file the
    /// loader read (also when the policy did not compile), `feeds` the
    /// feed declarations (empty when it did not). Local feed paths are
    /// relative to the policy's folder, as the feeds module reads them.
    pub fn resolve(policy: &Path, sources: Option<&SourceMap>, feeds: &[FeedDef]) -> WatchSet {
        let mut set = WatchSet::default();
        set.policy_files.extend(normalized(policy));
        for file in sources.map(SourceMap::files).unwrap_or_default() {
            set.policy_files.extend(normalized(&file.path));
        }
        // Where the feeds module reads each local feed from.
        let policy_dir = policy.parent().unwrap_or(Path::new("."));
        for feed in feeds.iter().map(|def| FeedConfig::from_def(def, policy_dir)) {
            if !feed.source.is_empty() && !is_url(&feed.source) {
                set.feed_files.extend(normalized(Path::new(&feed.source)));
            }
        }
        set
    }

    /// The folders to watch (not recursively).
    pub fn dirs(&self) -> BTreeSet<PathBuf> {
        self.files().filter_map(|f| f.parent().map(Path::to_path_buf)).collect()
    }

    /// Every watched file, sorted.
    pub fn files(&self) -> impl Iterator<Item = &PathBuf> {
        self.policy_files.union(&self.feed_files)
    }

    /// What a changed path is to this policy, if anything. A file that is
    /// both included and a feed counts as a feed (it needs both actions).
    pub fn role(&self, path: &Path) -> Option<Role> {
        if self.feed_files.contains(path) {
            Some(Role::Feed)
        } else if self.policy_files.contains(path) {
            Some(Role::Policy)
        } else {
            None
        }
    }
}

/// The path as file events will name it (absolute, folder resolved), plus
/// the symlink's target when the file is a symlink.
fn normalized(path: &Path) -> Vec<PathBuf> {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let (Some(dir), Some(name)) = (absolute.parent(), absolute.file_name()) else { return vec![absolute] };
    let as_named = dir.canonicalize().unwrap_or_else(|_| lexical(dir)).join(name);
    let mut out = vec![as_named.clone()];
    if let Ok(target) = path.canonicalize() {
        if target != as_named {
            out.push(target);
        }
    }
    out
}

/// `a/b/../c` as `a/c`, for a folder that does not exist (yet).
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Waits (at most `limit`) until `path`'s size and modification time stay
/// the same for `interval`, so a save still being written is not read half-way.
pub fn wait_settled(path: &Path, interval: Duration, limit: Duration) {
    let stamp = || std::fs::metadata(path).ok().map(|m| (m.len(), m.modified().ok()));
    let give_up = Instant::now() + limit;
    let mut last = stamp();
    while Instant::now() < give_up {
        std::thread::sleep(interval);
        let now = stamp();
        if now == last {
            return;
        }
        last = now;
    }
}

/// What the watched files looked like when the policy was last read, so a
/// periodic check can notice an edit whose file event was missed (events
/// dropped, a write through a hard link in an unwatched folder).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fingerprint(BTreeMap<PathBuf, Option<Stamp>>);

/// Device, inode, size, modification and change times (ns); a rename over
/// the file changes the inode, an edit in place the times.
type Stamp = (u64, u64, u64, i128, i128);

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    let ns = |secs: i64, nsecs: i64| i128::from(secs) * 1_000_000_000 + i128::from(nsecs);
    Some((m.dev(), m.ino(), m.size(), ns(m.mtime(), m.mtime_nsec()), ns(m.ctime(), m.ctime_nsec())))
}

impl Fingerprint {
    pub fn of<'a>(files: impl IntoIterator<Item = &'a PathBuf>) -> Fingerprint {
        Fingerprint(files.into_iter().map(|f| (f.clone(), stamp(f))).collect())
    }

    /// Adds the files it does not know yet, as they are now.
    pub fn add_new<'a>(&mut self, files: impl IntoIterator<Item = &'a PathBuf>) {
        for f in files {
            self.0.entry(f.clone()).or_insert_with(|| stamp(f));
        }
    }

    /// The first file that is not as it was (changed, created or removed).
    pub fn changed(&self) -> Option<&Path> {
        self.0.iter().find(|(path, then)| stamp(path) != **then).map(|(path, _)| path.as_path())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir;

    #[test]
    fn a_fingerprint_notices_edits_in_place_renames_and_removals() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.pf"), dir.path().join("b.pf"));
        std::fs::write(&a, "pass in on lo\n").unwrap();
        let seen = Fingerprint::of([&a, &b]);
        assert_eq!(seen.changed(), None);
        // (Another size: two writes within one clock tick can share their times.)
        std::fs::write(&a, "pass in on lo0\n").unwrap();
        assert_eq!(seen.changed(), Some(a.as_path()));
        let seen = Fingerprint::of([&a, &b]);
        std::fs::write(&b, "").unwrap();
        assert_eq!(seen.changed(), Some(b.as_path()), "a file that appeared");
        let mut seen = Fingerprint::of([&a]);
        seen.add_new([&a, &b]);
        assert_eq!(seen.changed(), None);
        std::fs::rename(&b, &a).unwrap();
        assert_eq!(seen.changed(), Some(a.as_path()), "renamed over");
    }

    #[test]
    fn wait_settled_returns_after_the_writes_stop() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.pf");
        let mut file = std::fs::File::create(&path).unwrap();
        let writer = std::thread::spawn(move || {
            for _ in 0..20 {
                file.write_all(b"pass in on lo\n").unwrap();
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        std::thread::sleep(Duration::from_millis(5));
        wait_settled(&path, Duration::from_millis(300), Duration::from_secs(10));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 20 * 14, "read only once the writes stopped");
        writer.join().unwrap();
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn policy_includes_and_local_feeds_are_watched_but_urls_are_not() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        write(
            &root,
            "hosts/lan.pf",
            "set lan = { 10.0.0.0/8 }\nfeed local { source \"feeds/drop.txt\"; format plain }\n",
        );
        let policy = write(
            &root,
            "main.pf",
            "include \"hosts/lan.pf\"\nfeed remote { source \"https://example.net/drop.txt\"; format plain }\nblock in from <lan>\nblock in from <local>\nblock in from <remote>\n",
        );
        let compiled = ir::compile_file(&policy).expect("compiles");
        let set = WatchSet::resolve(&policy, Some(&compiled.sources), &compiled.ruleset.feeds);
        let files: Vec<_> = set.files().cloned().collect();
        assert_eq!(files, vec![root.join("feeds/drop.txt"), root.join("hosts/lan.pf"), root.join("main.pf")]);
        assert_eq!(
            set.dirs().into_iter().collect::<Vec<_>>(),
            vec![root.clone(), root.join("feeds"), root.join("hosts")]
        );
        assert_eq!(set.role(&root.join("feeds/drop.txt")), Some(Role::Feed));
        assert_eq!(set.role(&root.join("hosts/lan.pf")), Some(Role::Policy));
        assert_eq!(set.role(&root.join("hosts/other.pf")), None);
    }

    #[test]
    fn a_broken_policy_still_names_the_files_it_read() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        write(&root, "inc.pf", "pass in proto tcp to port 22\n");
        let policy = write(&root, "main.pf", "include \"inc.pf\"\nblock in from <nosuch>\n");
        let Err(ir_err) = ir::compile_file(&policy) else { panic!("must not compile") };
        let crate::policy::LoadError::Policy(e) = ir_err else { panic!("a policy error") };
        let set = WatchSet::resolve(&policy, Some(&e.sources), &[]);
        assert!(set.policy_files.contains(&root.join("inc.pf")), "{set:?}");
        assert!(set.policy_files.contains(&root.join("main.pf")), "{set:?}");
    }

    #[test]
    fn a_relative_policy_path_is_made_absolute_and_a_symlink_target_is_watched() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        let real = write(&root, "real/policy.pf", "pass in on lo\n");
        let link = root.join("etc/policy.pf");
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let set = WatchSet::resolve(&link, None, &[]);
        assert_eq!(set.files().cloned().collect::<Vec<_>>(), vec![link.clone(), real]);
    }
}
