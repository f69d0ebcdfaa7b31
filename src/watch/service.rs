//! The watch loop: file events (debounced), signals and the feed timer come
//! in on one channel and are handled one at a time, so two reloads never
//! overlap.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode};
use notify_debouncer_full::{new_debouncer, DebounceEventResult, Debouncer, RecommendedCache};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use tracing::{debug, error, info, warn};

use super::adaptive;
use super::paths::{wait_settled, Fingerprint, Role, WatchSet};
use super::systemd::{monotonic_usec, Notifier};
use super::{unix_now, write_health, Health, SharedHealth};
use crate::diag::render_plain;
use crate::feeds;
use crate::guard::{self, Operator, Protected, SSH_PORT};
use crate::ir::{self, Compiled};
use crate::nft::apply::{self as loader, ApplyError};
use crate::nft::{self, Nft};
use crate::policy::LoadError;

/// A reload reads the policy once its size and mtime held still this long
/// (editors that write in steps), waiting at most `SETTLE_LIMIT`.
const SETTLE_INTERVAL: Duration = Duration::from_millis(150);
const SETTLE_LIMIT: Duration = Duration::from_secs(2);

type Watcher = Debouncer<notify::RecommendedWatcher, RecommendedCache>;

pub struct Options {
    pub policy: PathBuf,
    /// Quiet time after the last file event before reloading.
    pub debounce: Duration,
    /// Where the health JSON goes, for `status` and an API in another process.
    pub state_file: PathBuf,
    /// Where feed caches live (`feeds::state_dir`); their copies fill the
    /// feed sets on every load, as with `apply`.
    pub feed_state_dir: Option<PathBuf>,
    pub nft: Nft,
    /// How often to check the watched files for a change no event reported,
    /// and to retry a reload that failed for a reason other than the policy.
    pub recheck: Duration,
}

/// The hook for refreshing remote feeds on an interval. The service has no
/// feed logic of its own: `crate::feeds` plugs in here. `refresh` gets the
/// last policy that loaded; it is also called after every load of a new
/// ruleset and when a local feed file changes.
pub struct FeedTimer {
    pub every: Duration,
    pub refresh: Box<RefreshFeeds>,
}

/// Refreshes the feeds of a policy; the error says why, for the log.
pub type RefreshFeeds = dyn FnMut(&Nft, &Compiled) -> Result<(), String> + Send;

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("cannot watch files: {0}")]
    Notify(#[from] notify::Error),
    #[error("cannot handle signals: {0}")]
    Signals(std::io::Error),
    #[error("another phantomc watch ({holder}) already keeps this table; its lock is {lock}")]
    AlreadyRunning { lock: String, holder: String },
    #[error("cannot lock {lock}: {source}")]
    Lock { lock: String, source: std::io::Error },
}

enum Trigger {
    Changed(Vec<PathBuf>),
    WatchFailed(String),
    Signal(i32),
}

/// Why a reload attempt failed: the rendered diagnostic, and whether trying
/// again with the same files may succeed (the system, not the policy, failed:
/// out of file descriptors, nft, reading a file).
struct Failed {
    message: String,
    transient: bool,
}

impl From<String> for Failed {
    fn from(message: String) -> Failed {
        Failed { message, transient: false }
    }
}

fn transient(message: impl ToString) -> Failed {
    Failed { message: message.to_string(), transient: true }
}

/// What a successful reload attempt did.
enum Outcome {
    Loaded {
        table: String,
        hash: String,
        rules: usize,
        kept: usize,
    },
    /// The policy compiles to the ruleset already loaded.
    Unchanged,
}

pub struct Service {
    opts: Options,
    health: SharedHealth,
    feed_timer: Option<FeedTimer>,
    watch_set: WatchSet,
    watched_dirs: BTreeSet<PathBuf>,
    /// The last policy that loaded (for the feed hook).
    last_good: Option<Compiled>,
    /// systemd's notification socket, when run as a `Type=notify` unit.
    systemd: Option<Notifier>,
    /// The adaptive engine, told about every policy that loads.
    adaptive: Option<adaptive::Handle>,
    /// The watched files as the last reload attempt read them.
    seen: Fingerprint,
    /// The last attempt failed for a reason other than the policy.
    retry: bool,
}

impl Service {
    pub fn new(opts: Options, health: SharedHealth, feed_timer: Option<FeedTimer>) -> Service {
        {
            let mut h = health.write().expect("health lock");
            h.policy = std::path::absolute(&opts.policy).unwrap_or_else(|_| opts.policy.clone());
            h.pid = std::process::id();
        }
        let watch_set = WatchSet::resolve(&opts.policy, None, &[]);
        Service {
            opts,
            health,
            feed_timer,
            watch_set,
            watched_dirs: BTreeSet::new(),
            last_good: None,
            systemd: Notifier::from_env(),
            adaptive: None,
            seen: Fingerprint::default(),
            retry: false,
        }
    }

    /// Runs the adaptive mode beside the reloads (it acts only when the
    /// policy has an `adaptive` block).
    pub fn with_adaptive(mut self, engine: adaptive::Handle) -> Service {
        self.adaptive = Some(engine);
        self
    }

    /// Loads the policy, then reloads on every change until SIGTERM or
    /// SIGINT. The loaded ruleset stays loaded when it returns.
    pub fn run(mut self) -> Result<(), WatchError> {
        let _only_watcher = lock_beside(&self.opts.state_file)?;
        let (tx, rx) = channel();
        let mut watcher = new_debouncer(self.opts.debounce, None, forward_events(tx.clone()))?;
        let mut signals = Signals::new([SIGHUP, SIGTERM, SIGINT]).map_err(WatchError::Signals)?;
        let signal_handle = signals.handle();
        std::thread::spawn(move || {
            for sig in signals.forever() {
                if tx.send(Trigger::Signal(sig)).is_err() {
                    break;
                }
            }
        });
        info!(policy = %self.opts.policy.display(), state_file = %self.opts.state_file.display(), "watch started");
        self.reload(true, &mut watcher);
        self.tell_systemd(&["READY=1"]);
        let mut next_feed_refresh = self.feed_timer.as_ref().map(|t| Instant::now() + t.every);
        let mut next_recheck = Instant::now() + self.opts.recheck;
        loop {
            let wake = next_feed_refresh.map_or(next_recheck, |at| at.min(next_recheck));
            let trigger = match rx.recv_timeout(wake.saturating_duration_since(Instant::now())) {
                Ok(t) => t,
                Err(RecvTimeoutError::Timeout) => {
                    if next_feed_refresh.is_some_and(|at| at <= Instant::now()) {
                        self.refresh_feeds("timer");
                        next_feed_refresh = self.feed_timer.as_ref().map(|t| Instant::now() + t.every);
                    }
                    if next_recheck <= Instant::now() {
                        self.recheck(&mut watcher);
                        next_recheck = Instant::now() + self.opts.recheck;
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            match trigger {
                Trigger::Signal(SIGHUP) => {
                    info!("SIGHUP: reloading now");
                    if let Some(n) = &self.systemd {
                        n.send(&["RELOADING=1".into(), format!("MONOTONIC_USEC={}", monotonic_usec())]);
                    }
                    self.reload(true, &mut watcher);
                    self.tell_systemd(&["READY=1"]);
                }
                Trigger::Signal(sig) => {
                    info!(signal = sig, "stopping; the loaded ruleset stays loaded");
                    break;
                }
                Trigger::Changed(paths) => {
                    let roles: Vec<(PathBuf, Role)> =
                        paths.into_iter().filter_map(|p| self.watch_set.role(&p).map(|r| (p, r))).collect();
                    let Some((first, _)) = roles.first() else { continue };
                    info!(file = %first.display(), events = roles.len(), "change detected");
                    self.reload(false, &mut watcher);
                    self.tell_systemd(&[]);
                    if roles.iter().any(|(_, r)| *r == Role::Feed) {
                        self.refresh_feeds("local feed file changed");
                    }
                }
                Trigger::WatchFailed(msg) => warn!(error = %msg, "file watch error"),
            }
        }
        self.tell_systemd(&["STOPPING=1"]);
        signal_handle.close();
        watcher.stop();
        if let Some(engine) = self.adaptive.take() {
            engine.stop();
        }
        self.update_health(|h| h.stopped_at = Some(unix_now()));
        Ok(())
    }

    /// The periodic check: reloads when a watched file changed without an
    /// event, or when the last attempt failed for a reason other than the policy.
    fn recheck(&mut self, watcher: &mut Watcher) {
        let changed = self.seen.changed().map(|f| (f.to_path_buf(), self.watch_set.role(f)));
        match &changed {
            Some((file, _)) => info!(file = %file.display(), "change found by the periodic check"),
            None if self.retry => info!("retrying the reload that failed"),
            None => return,
        }
        self.reload(false, watcher);
        self.tell_systemd(&[]);
        if changed.is_some_and(|(_, role)| role == Some(Role::Feed)) {
            self.refresh_feeds("local feed file changed");
        }
    }

    /// One reload attempt; `force` reloads even an unchanged ruleset
    /// (SIGHUP, start-up: it also repairs drift).
    fn reload(&mut self, force: bool, watcher: &mut Watcher) {
        let started = Instant::now();
        let result = self.try_reload(force).map_err(|failed| {
            self.retry = failed.transient;
            failed.message
        });
        if result.is_ok() {
            self.retry = false;
        }
        self.seen.add_new(self.watch_set.files());
        self.rewatch(watcher);
        let watched: Vec<PathBuf> = self.watch_set.files().cloned().collect();
        let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        match &result {
            Ok(Outcome::Loaded { hash, rules, kept, .. }) => {
                info!(hash = %&hash[..12], rules, kept_entries = kept, ms, "ruleset reloaded atomically")
            }
            Ok(Outcome::Unchanged) => info!(ms, "policy compiles to the loaded ruleset; nothing to reload"),
            Err(diagnostic) if !force && self.same_failure(diagnostic) => {
                // A second event for the same broken save: already reported.
                debug!("the same reload failure again; the last good ruleset stays loaded");
                return;
            }
            Err(diagnostic) => error!(diagnostic = %diagnostic, "reload failed; the last good ruleset stays loaded"),
        }
        // A new ruleset may declare new feeds, and starts with what the old one had.
        let loaded = matches!(result, Ok(Outcome::Loaded { .. }));
        let attempted = !matches!(result, Ok(Outcome::Unchanged));
        if let (Ok(_), Some(engine), Some(compiled)) = (&result, &self.adaptive, &self.last_good) {
            if let Err(e) = engine.update(compiled, &self.opts.policy) {
                error!(error = %e, "adaptive settings refused; the previous ones stay");
            }
        }
        self.update_health(|h| {
            h.watched = watched;
            if attempted {
                h.reload_duration.observe(ms);
            }
            match result {
                Ok(Outcome::Loaded { table, hash, rules, .. }) => {
                    h.table = Some(table);
                    h.ruleset_hash = Some(hash);
                    h.rules = rules;
                    h.last_reload = Some(unix_now());
                    h.reloads += 1;
                    h.last_error = None;
                }
                Ok(Outcome::Unchanged) => {
                    h.unchanged += 1;
                    h.last_error = None;
                }
                Err(diagnostic) => {
                    h.last_error = Some(diagnostic);
                    h.last_error_at = Some(unix_now());
                    h.failures += 1;
                }
            }
        });
        if loaded {
            self.refresh_feeds("ruleset loaded");
        }
    }

    /// Is `diagnostic` the failure already reported (nothing loaded since)?
    fn same_failure(&self, diagnostic: &str) -> bool {
        self.health.read().expect("health lock").last_error.as_deref() == Some(diagnostic)
    }

    /// Compiles, checks and loads; the error is the rendered diagnostic.
    fn try_reload(&mut self, force: bool) -> Result<Outcome, Failed> {
        wait_settled(&self.opts.policy, SETTLE_INTERVAL, SETTLE_LIMIT);
        self.seen = Fingerprint::of(self.watch_set.files());
        // An empty policy compiles (to "drop everything"), but here it is
        // almost surely a save caught half-way or a truncated file.
        if std::fs::metadata(&self.opts.policy).is_ok_and(|m| m.len() == 0) {
            return Err(Failed::from(format!("{} is empty; refusing to load a policy that drops everything (write the whole policy, or `phantomc disable`)", self.opts.policy.display())));
        }
        let compiled = match ir::compile_file(&self.opts.policy) {
            Ok(c) => c,
            Err(LoadError::Policy(e)) => {
                // Keep watching what was watched too: a file the broken policy
                // no longer reaches may be what fixes it.
                let now = WatchSet::resolve(&self.opts.policy, Some(&e.sources), &[]);
                self.watch_set.policy_files.extend(now.policy_files);
                return Err(render_plain(&e.diags, &e.sources).into());
            }
            Err(e @ LoadError::Io(..)) => return Err(transient(e)),
        };
        self.watch_set = WatchSet::resolve(&self.opts.policy, Some(&compiled.sources), &compiled.ruleset.feeds);
        if compiled.ruleset.passes_nothing() {
            return Err(Failed::from(format!(
                "{}: the policy passes nothing (no input rule, and the default input policy drops): refusing to load it, loopback and every session would be cut (write the whole policy, or `phantomc disable`)",
                self.opts.policy.display()
            )));
        }
        for e in compiled.ruleset.expiries.iter().filter(|e| e.expired) {
            tracing::warn!(kind = e.kind, what = %e.what, date = %e.date, origin = %e.origin.id, "expired, left out of the ruleset");
        }
        let rs = &compiled.ruleset;
        let (owned, loaded_hash) = {
            let h = self.health.read().expect("health lock");
            (h.table.clone(), h.ruleset_hash.clone())
        };
        if let Some(owned) = owned.filter(|t| *t != rs.table) {
            return Err(Failed::from(format!(
                "the policy now names table inet {}, but this service owns table inet {owned}; restart the service to switch tables",
                rs.table
            )));
        }
        let hash = nft::policy_hash(rs);
        let nft = &self.opts.nft;
        if !force && loaded_hash.as_ref() == Some(&hash) && nft.table_exists(&rs.table).map_err(transient)? {
            // The same ruleset; settings beside it (adaptive) may have changed.
            self.last_good = Some(compiled);
            return Ok(Outcome::Unchanged);
        }
        let operator = Operator::discover(None, SSH_PORT).map_err(transient)?;
        let protected = Protected::gather(Some(rs), &operator);
        let (kept, warnings) =
            feeds::load_elements(rs, &protected, self.opts.feed_state_dir.as_deref()).map_err(transient)?;
        for w in warnings {
            warn!(warning = %w, "feed entry left out");
        }
        // An automatic reload never overrides the lockout guard.
        let checked = guard::check(rs, &kept.contents(), &operator).map_err(|r| Failed::from(r.to_string()))?;
        if let Some(note) = checked.unchecked {
            debug!(note, "lockout guard");
        }
        let prepared = loader::prepare_with(&compiled, kept);
        let rules = loader::load(nft, &compiled, &prepared).map_err(|e| describe(e, &compiled))?;
        let kept = prepared.kept.by_set.values().map(Vec::len).sum();
        let table = rs.table.clone();
        self.last_good = Some(compiled);
        Ok(Outcome::Loaded { table, hash, rules, kept })
    }

    /// Watches the folders of the current watch set, and only those.
    fn rewatch(&mut self, watcher: &mut Watcher) {
        let wanted = self.watch_set.dirs();
        for gone in self.watched_dirs.difference(&wanted) {
            if let Err(e) = watcher.unwatch(gone) {
                debug!(dir = %gone.display(), error = %e, "unwatch");
            }
        }
        let mut now = BTreeSet::new();
        for dir in wanted {
            if self.watched_dirs.contains(&dir) {
                now.insert(dir);
                continue;
            }
            match watcher.watch(&dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    debug!(dir = %dir.display(), "watching");
                    now.insert(dir);
                }
                Err(e) => warn!(dir = %dir.display(), error = %e, "cannot watch folder"),
            }
        }
        self.watched_dirs = now;
    }

    fn refresh_feeds(&mut self, why: &str) {
        let (Some(timer), Some(compiled)) = (self.feed_timer.as_mut(), self.last_good.as_ref()) else { return };
        match (timer.refresh)(&self.opts.nft, compiled) {
            Ok(()) => debug!(why, "feeds refreshed"),
            Err(e) => warn!(why, error = %e, "feed refresh failed; the loaded feed entries stay"),
        }
    }

    /// Sends `lines` and the current status line to systemd, if it listens.
    fn tell_systemd(&self, lines: &[&str]) {
        let Some(n) = &self.systemd else { return };
        let mut all: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        all.push(format!("STATUS={}", status_line(&self.health.read().expect("health lock"))));
        n.send(&all);
    }

    /// Changes the shared health and writes the state file.
    fn update_health(&self, change: impl FnOnce(&mut Health)) {
        let snapshot = {
            let mut h = self.health.write().expect("health lock");
            change(&mut h);
            h.clone()
        };
        if let Err(e) = write_health(&self.opts.state_file, &snapshot) {
            warn!(state_file = %self.opts.state_file.display(), error = %e, "cannot write the health file");
        }
    }
}

/// Holds an exclusive lock next to the state file for as long as the
/// returned file lives, so two watchers never fight over one table.
fn lock_beside(state_file: &Path) -> Result<File, WatchError> {
    let path = state_file.with_extension("lock");
    let lock = path.display().to_string();
    let io = |source| WatchError::Lock { lock: lock.clone(), source };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io)?;
    // An flock(2) lock on Linux: released when the file closes, also when the process dies.
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::Error(source)) => return Err(io(source)),
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder =
                if holder.trim().is_empty() { "pid unknown".to_string() } else { format!("pid {}", holder.trim()) };
            return Err(WatchError::AlreadyRunning { lock, holder });
        }
    }
    file.set_len(0).map_err(io)?;
    file.write_all(std::process::id().to_string().as_bytes()).map_err(io)?;
    Ok(file)
}

/// Sends relevant debounced file events to the loop. Opening or reading a
/// file (the service reads the policy itself) is not a change.
fn forward_events(tx: Sender<Trigger>) -> impl FnMut(DebounceEventResult) + Send + 'static {
    move |result| {
        let trigger = match result {
            Ok(events) => {
                let paths: Vec<PathBuf> = events
                    .into_iter()
                    .filter(|e| match e.kind {
                        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
                        EventKind::Access(_) => false,
                        _ => true,
                    })
                    .flat_map(|e| e.event.paths)
                    .collect();
                if paths.is_empty() {
                    return;
                }
                Trigger::Changed(paths)
            }
            Err(errors) => Trigger::WatchFailed(errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")),
        };
        let _ = tx.send(trigger);
    }
}

/// One line for `systemctl status`.
fn status_line(h: &Health) -> String {
    let loaded = match (&h.ruleset_hash, &h.table) {
        (Some(hash), Some(table)) => {
            format!("table inet {table} loaded ({} rules, ruleset {}, {} reloads)", h.rules, &hash[..12], h.reloads)
        }
        _ => "no ruleset loaded by this service yet".to_string(),
    };
    match &h.last_error {
        Some(_) => format!("last reload FAILED (see the log); {loaded}"),
        None => loaded,
    }
}

/// A rule the kernel refuses is the policy's fault; anything else (nft
/// missing, out of descriptors) may pass on a retry.
fn describe(e: ApplyError, compiled: &Compiled) -> Failed {
    match e {
        ApplyError::RuleRefused(d) => render_plain(&[*d], &compiled.sources).into(),
        other => transient(other),
    }
}
