//! The last good copy of each feed, on disk: `NAME.nets` (aggregated
//! networks, one a line) and `NAME.meta.json` (where it came from, HTTP
//! validators, counts, status of the latest attempt). Written to a temporary
//! file and renamed, so a crash never leaves half a file.

use std::io::Write;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::fetch::Validators;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub source: String,
    pub format: String,
    pub column: usize,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    /// Unix seconds when the cached copy was fetched (0: never).
    pub fetched_at: u64,
    /// Unix seconds of the latest attempt.
    pub checked_at: u64,
    pub v4: usize,
    pub v6: usize,
    /// `ok`, `not-modified` or `kept-last-good`.
    pub status: String,
    /// Why the latest attempt was refused, if it was.
    pub message: Option<String>,
    /// A local source's modification time (ns) at the latest attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_mtime_ns: Option<u128>,
    /// The provider preset the feed uses, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Unix seconds before which the source must not be asked again (its
    /// `Retry-After`, or backing off after repeated 429/503 answers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<u64>,
    /// Failed attempts since the last good one.
    #[serde(default)]
    pub failures: u32,
    /// Failed or refused attempts ever: a counter for `/metrics` that a
    /// good copy does not reset.
    #[serde(default)]
    pub failures_total: u64,
    /// Unix seconds of the next scheduled attempt (0: unknown).
    #[serde(default)]
    pub next_at: u64,
    /// The latest error of any attempt, kept after later successes, and when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error_at: Option<u64>,
    /// A feed of several URLs: each one's own record (see [`super::parts`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<Part>,
}

/// One URL of a feed of several: its HTTP validators, its last good copy's
/// time (the copy is `NAME.partN`) and its latest error.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Part {
    pub url: String,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    /// Unix seconds when its cached copy was fetched (0: never).
    pub fetched_at: u64,
    /// Failed attempts since its last good one, and when it may be asked again.
    pub failures: u32,
    pub retry_at: Option<u64>,
    /// Why its latest attempt failed (`None` once it succeeds again), and when.
    pub error: Option<String>,
    pub error_at: Option<u64>,
}

impl Part {
    pub fn validators(&self) -> Validators {
        Validators { etag: self.etag.clone(), last_modified: self.last_modified.clone() }
    }
}

impl Meta {
    pub fn validators(&self) -> Validators {
        Validators { etag: self.etag.clone(), last_modified: self.last_modified.clone() }
    }
}

pub struct Cache {
    pub dir: PathBuf,
}

impl Cache {
    pub fn new(dir: PathBuf) -> Cache {
        Cache { dir }
    }

    fn meta_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.meta.json"))
    }

    fn nets_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.nets"))
    }

    pub fn meta(&self, name: &str) -> Result<Option<Meta>, String> {
        match std::fs::read_to_string(self.meta_path(name)) {
            Ok(text) => {
                serde_json::from_str(&text).map(Some).map_err(|e| format!("{}: {e}", self.meta_path(name).display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", self.meta_path(name).display())),
        }
    }

    /// The cached networks; `None` if the feed was never fetched successfully.
    pub fn nets(&self, name: &str) -> Result<Option<Vec<IpNet>>, String> {
        let path = self.nets_path(name);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        text.lines()
            .enumerate()
            .map(|(i, l)| l.parse::<IpNet>().map_err(|_| format!("{}:{}: not a network: {l:?}", path.display(), i + 1)))
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    fn part_path(&self, name: &str, index: usize) -> PathBuf {
        self.dir.join(format!("{name}.part{index}"))
    }

    /// The last good text of URL `index` of a feed of several.
    pub fn part(&self, name: &str, index: usize) -> Result<Option<String>, String> {
        let path = self.part_path(name, index);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// Saves the text of URL `index` (before the metadata that names its validators).
    pub fn store_part(&self, name: &str, index: usize, text: &str) -> Result<(), String> {
        write_atomic(&self.part_path(name, index), text.as_bytes())
    }

    /// Saves a new good copy, then its metadata.
    pub fn store(&self, name: &str, nets: &[IpNet], meta: &Meta) -> Result<(), String> {
        let mut text = String::with_capacity(nets.len() * 18);
        for n in nets {
            text.push_str(&n.to_string());
            text.push('\n');
        }
        write_atomic(&self.nets_path(name), text.as_bytes())?;
        self.store_meta(name, meta)
    }

    /// Records an attempt (keeps the cached networks as they are).
    pub fn store_meta(&self, name: &str, meta: &Meta) -> Result<(), String> {
        let json = serde_json::to_string_pretty(meta).expect("metadata always serializes") + "\n";
        write_atomic(&self.meta_path(name), json.as_bytes())
    }

    /// Names of all cached feeds, sorted.
    pub fn names(&self) -> Result<Vec<String>, String> {
        let dir = match std::fs::read_dir(&self.dir) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(format!("{}: {e}", self.dir.display())),
        };
        let mut names: Vec<String> =
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".meta.json").map(str::to_string)).collect();
        names.sort();
        Ok(names)
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let fail = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    std::fs::create_dir_all(path.parent().unwrap_or(Path::new("."))).map_err(fail)?;
    // Same directory, so the rename is atomic; the pid keeps two updates apart.
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let written = std::fs::File::create(&tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()
    });
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(fail(e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_listing() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path().join("feeds"));
        assert_eq!(cache.nets("drop").unwrap(), None);
        let nets: Vec<IpNet> = vec!["192.0.2.0/24".parse().unwrap(), "2001:db8::/32".parse().unwrap()];
        let meta = Meta { source: "x".into(), v4: 1, v6: 1, status: "ok".into(), ..Meta::default() };
        cache.store("drop", &nets, &meta).unwrap();
        assert_eq!(cache.nets("drop").unwrap(), Some(nets));
        assert_eq!(cache.meta("drop").unwrap(), Some(meta));
        assert_eq!(cache.names().unwrap(), vec!["drop".to_string()]);
    }
}
