//! Long-running service: recompile and reload when the policy changes.
//!
//! [`service`] runs the loop (file events, signals, the feed timer),
//! [`paths`] decides which files and folders to watch, and [`Health`] is what
//! the service tells the world: kept in memory for an in-process API and
//! written as JSON to a state file for other processes.

pub mod adaptive;
pub mod paths;
pub mod service;
pub mod systemd;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

pub use service::{FeedTimer, Options, Service, WatchError};

/// What a running service knows about the ruleset it keeps loaded.
/// Written by the watcher, read by the REST API.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Health {
    pub policy: PathBuf,
    /// sha256 of the loaded nft JSON, hex.
    pub ruleset_hash: Option<String>,
    /// Unix time (seconds) of the last successful reload.
    pub last_reload: Option<u64>,
    pub reloads: u64,
    /// Rendered diagnostic of the last failed reload; cleared by a good one.
    pub last_error: Option<String>,
    /// Unix time (seconds) of the last failed reload.
    pub last_error_at: Option<u64>,
    /// Failed reloads since the service started.
    pub failures: u64,
    /// Changes that compiled to the ruleset already loaded (nothing reloaded).
    pub unchanged: u64,
    /// The nft table (family inet) the service owns, once a policy compiled.
    pub table: Option<String>,
    /// nft rules in the loaded table.
    pub rules: usize,
    /// Files whose changes trigger a reload: policy, includes, local feeds.
    pub watched: Vec<PathBuf>,
    /// The service's process id.
    pub pid: u32,
    /// Unix time (seconds) the service stopped; the ruleset stays loaded.
    pub stopped_at: Option<u64>,
    /// The adaptive mode's state, when the service runs it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adaptive: Option<adaptive::Status>,
    /// How long reload attempts took (loaded or failed): a histogram with
    /// the upper bounds [`RELOAD_BUCKETS_MS`], for `/metrics`.
    pub reload_duration: ReloadDurations,
}

/// Upper bounds (milliseconds) of the reload duration buckets; one more
/// bucket counts everything slower.
pub const RELOAD_BUCKETS_MS: [u64; 9] = [25, 50, 100, 250, 500, 1000, 2500, 5000, 10000];

/// Reload attempts by duration, per bucket (not cumulative), and their sum.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReloadDurations {
    pub buckets: Vec<u64>,
    pub sum_ms: u64,
    pub count: u64,
}

impl ReloadDurations {
    pub fn observe(&mut self, ms: u64) {
        self.buckets.resize(RELOAD_BUCKETS_MS.len() + 1, 0);
        let at = RELOAD_BUCKETS_MS.iter().position(|&bound| ms <= bound).unwrap_or(RELOAD_BUCKETS_MS.len());
        self.buckets[at] += 1;
        self.sum_ms = self.sum_ms.saturating_add(ms);
        self.count += 1;
    }
}

impl Health {
    /// What `phantomc status` says about the service, one fact per line.
    pub fn summary(&self) -> String {
        let at = |secs: u64| httpdate::fmt_http_date(UNIX_EPOCH + std::time::Duration::from_secs(secs));
        let state = match self.stopped_at {
            Some(t) => format!("stopped at {} (the ruleset stays loaded)", at(t)),
            None if Path::new(&format!("/proc/{}", self.pid)).exists() => format!("running (pid {})", self.pid),
            None => format!("not running (pid {} is gone)", self.pid),
        };
        let mut out = format!("watch: {state}, policy {}\n", self.policy.display());
        match (&self.ruleset_hash, self.last_reload) {
            (Some(hash), Some(t)) => out.push_str(&format!(
                "watch: ruleset {} loaded at {} ({} rules); {} reloads, {} unchanged saves, {} failed\n",
                &hash[..hash.len().min(12)],
                at(t),
                self.rules,
                self.reloads,
                self.unchanged,
                self.failures
            )),
            _ => out.push_str("watch: no ruleset loaded by the service yet\n"),
        }
        if let Some(err) = &self.last_error {
            let when = self.last_error_at.map(at).unwrap_or_default();
            out.push_str(&format!("watch: LAST RELOAD FAILED at {when}; the last good ruleset stays loaded:\n"));
            for line in err.lines() {
                out.push_str(&format!("  {line}\n"));
            }
        }
        out
    }
}

/// The health shared between the watch loop and an API in the same process.
pub type SharedHealth = Arc<RwLock<Health>>;

/// Where a service for `table` writes its health unless told otherwise.
pub fn default_state_file(table: &str) -> PathBuf {
    PathBuf::from(format!("/run/phantomc/health-{table}.json"))
}

/// Writes the health atomically (temporary file + rename), so a reader never
/// sees half a document.
pub fn write_health(path: &Path, health: &Health) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut json = serde_json::to_string_pretty(health).expect("health always serializes");
    json.push('\n');
    write_atomic(path, json.as_bytes())
}

/// Writes `bytes` to `path` through a temporary file and a rename, so a
/// reader sees the old file or the new one, never half of one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Replaces a policy file atomically with `text`, keeping its permissions
/// and its previous text as `POLICY.bak`; the backup's path.
pub fn replace_policy(path: &Path, text: &str) -> std::io::Result<PathBuf> {
    let old = std::fs::read(path)?;
    let permissions = std::fs::metadata(path)?.permissions();
    let mut backup = path.as_os_str().to_owned();
    backup.push(".bak");
    let backup = PathBuf::from(backup);
    std::fs::write(&backup, old)?;
    write_atomic(path, text.as_bytes())?;
    std::fs::set_permissions(path, permissions)?;
    Ok(backup)
}

/// Reads a health file written by a service (maybe in another process).
pub fn read_health(path: &Path) -> std::io::Result<Health> {
    let text = std::fs::read_to_string(path)?;
    serde_json::from_str(&text)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {e}", path.display())))
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_file_round_trips_and_is_replaced_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/health-phantomc.json");
        let mut h = Health { policy: "/etc/phantomc/policy.pf".into(), reloads: 3, pid: 42, ..Health::default() };
        write_health(&path, &h).expect("write");
        assert_eq!(read_health(&path).expect("read"), h);
        h.last_error = Some("policy.pf:3: unknown keyword".into());
        write_health(&path, &h).expect("rewrite");
        assert_eq!(read_health(&path).expect("read"), h);
        let names: Vec<_> =
            std::fs::read_dir(path.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("health-phantomc.json")], "no temporary file left behind");
    }

    #[test]
    fn summary_says_what_is_loaded_and_what_failed() {
        let mut h = Health {
            policy: "/etc/phantomc/policy.pf".into(),
            ruleset_hash: Some("56a3229bd9cfce2ac561f190".into()),
            last_reload: Some(1_795_455_694),
            reloads: 4,
            unchanged: 1,
            rules: 13,
            pid: u32::MAX,
            ..Health::default()
        };
        assert_eq!(
            h.summary(),
            "watch: not running (pid 4294967295 is gone), policy /etc/phantomc/policy.pf\n\
             watch: ruleset 56a3229bd9cf loaded at Mon, 23 Nov 2026 17:41:34 GMT (13 rules); 4 reloads, 1 unchanged saves, 0 failed\n"
        );
        h.pid = std::process::id();
        h.last_error = Some("syntax\n  × unexpected `bogus`".into());
        h.last_error_at = Some(1_795_455_700);
        h.failures = 1;
        let s = h.summary();
        assert!(s.starts_with(&format!("watch: running (pid {})", h.pid)), "{s}");
        assert!(s.ends_with("watch: LAST RELOAD FAILED at Mon, 23 Nov 2026 17:41:40 GMT; the last good ruleset stays loaded:\n  syntax\n    × unexpected `bogus`\n"), "{s}");
        h.stopped_at = Some(1_795_455_800);
        assert!(
            h.summary().starts_with("watch: stopped at Mon, 23 Nov 2026 17:43:20 GMT (the ruleset stays loaded)"),
            "{}",
            h.summary()
        );
    }

    #[test]
    fn older_health_documents_still_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("h.json");
        std::fs::write(&path, r#"{"policy":"p.pf","reloads":2}"#).unwrap();
        let h = read_health(&path).expect("read");
        assert_eq!((h.reloads, h.failures, h.last_error), (2, 0, None));
        std::fs::write(&path, "{not json").unwrap();
        let err = read_health(&path).unwrap_err().to_string();
        assert!(err.contains("h.json"), "{err}");
    }
}
