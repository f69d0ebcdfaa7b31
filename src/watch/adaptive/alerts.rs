//! Alerts: one JSON line per finding with what was done about it, appended
//! to `alerts.jsonl` in the adaptive state directory (rotated by size) and
//! logged through tracing.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The file name inside the adaptive state directory.
pub const FILE: &str = "alerts.jsonl";
/// Rotated at this size; `alerts.jsonl.1` .. `.KEEP` hold older lines.
const MAX_BYTES: u64 = 4 << 20;
const KEEP: u32 = 3;

/// One finding and its action.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Unix time (seconds) of the alert.
    pub time: u64,
    pub source: String,
    pub detector: String,
    /// 0.5 at the detector's threshold, towards 1 beyond it.
    pub confidence: f64,
    pub threshold: String,
    pub counts: String,
    pub examples: Vec<String>,
    /// How the source compares with the learned baseline of its service.
    pub baseline: Option<String>,
    /// `blocked`, `observed`, `protected`, `low-confidence`, `rate-capped`,
    /// `block-failed`.
    pub action: String,
    /// Why the action is what it is (protected because ..., cap reached, error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The set and the block's length and end, when blocked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<u64>,
    /// How many times this source has been blocked, this time included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offence: Option<u32>,
}

/// Appends alerts to `DIR/alerts.jsonl`.
pub struct AlertLog {
    path: PathBuf,
}

impl AlertLog {
    pub fn new(dir: &Path) -> AlertLog {
        AlertLog { path: dir.join(FILE) }
    }

    pub fn append(&self, alert: &Alert) -> std::io::Result<()> {
        if std::fs::metadata(&self.path).is_ok_and(|m| m.len() >= MAX_BYTES) {
            rotate(&self.path)?;
        }
        let mut line = serde_json::to_string(alert).expect("alerts serialize");
        line.push('\n');
        let mut f = OpenOptions::new().create(true).append(true).open(&self.path)?;
        // One write per line: readers following the file never see half a line.
        f.write_all(line.as_bytes())
    }
}

fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

fn rotate(path: &Path) -> std::io::Result<()> {
    for n in (1..KEEP).rev() {
        let from = rotated(path, n);
        if from.exists() {
            std::fs::rename(&from, rotated(path, n + 1))?;
        }
    }
    std::fs::rename(path, rotated(path, 1))
}

/// The last `limit` alerts in `dir` (the newest rotated file, then the
/// current one), oldest first. Lines that do not parse are skipped and counted.
pub fn read(dir: &Path, limit: usize) -> std::io::Result<(Vec<Alert>, usize)> {
    let path = dir.join(FILE);
    let mut out = std::collections::VecDeque::new();
    let mut bad = 0;
    for file in [rotated(&path, 1), path] {
        let f = match std::fs::File::open(&file) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for line in BufReader::new(f).lines() {
            match serde_json::from_str::<Alert>(&line?) {
                Ok(a) => {
                    out.push_back(a);
                    if out.len() > limit {
                        out.pop_front();
                    }
                }
                Err(_) => bad += 1,
            }
        }
    }
    Ok((out.into(), bad))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn alert(source: &str, action: &str) -> Alert {
        Alert {
            time: 1_795_455_694,
            source: source.into(),
            detector: "vertical-scan".into(),
            confidence: 0.75,
            threshold: "20 failed ports on one host >= 10 within 300s".into(),
            counts: "20 distinct ports of 10.0.0.1 failed".into(),
            examples: vec![],
            baseline: None,
            action: action.into(),
            reason: None,
            set: None,
            timeout: None,
            expires: None,
            offence: None,
        }
    }

    #[test]
    fn alerts_append_rotate_and_read_back_newest_last() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = AlertLog::new(dir.path());
        for i in 0..5 {
            log.append(&alert(&format!("10.0.0.{i}"), "observed")).expect("append");
        }
        let (all, bad) = read(dir.path(), 100).expect("read");
        assert_eq!((all.len(), bad), (5, 0));
        assert_eq!(all[4].source, "10.0.0.4");
        let (last2, _) = read(dir.path(), 2).expect("read");
        assert_eq!(last2.iter().map(|a| a.source.as_str()).collect::<Vec<_>>(), ["10.0.0.3", "10.0.0.4"]);
        // Rotation keeps the older lines readable in `.1`.
        rotate(&dir.path().join(FILE)).expect("rotate");
        log.append(&alert("10.0.0.9", "blocked")).expect("append");
        std::fs::write(dir.path().join("junk"), "").unwrap();
        let (all, _) = read(dir.path(), 100).expect("read");
        assert_eq!(all.len(), 6);
        assert_eq!(all[5].action, "blocked");
        let mut f = OpenOptions::new().append(true).open(dir.path().join(FILE)).unwrap();
        f.write_all(b"{half a line\n").unwrap();
        assert_eq!(read(dir.path(), 100).expect("read").1, 1, "a damaged line is counted, not fatal");
    }
}
