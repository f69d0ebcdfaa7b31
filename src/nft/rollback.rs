//! Confirm-or-rollback: a new ruleset stays only if the operator confirms it
//! in time. The rollback is done by a detached guard process (its own
//! session, no terminal), so it still happens when the applying process,
//! its terminal or the SSH session dies.
//!
//! The guard and `phantomc confirm` meet in a state file under
//! `/run/phantomc`, keyed by network namespace and table; both hold an
//! exclusive lock while they read and change it, so a confirmation and a
//! rollback cannot both win. One confirmation per table is pending at a
//! time: `arm` refuses while another waits, since a second one would record
//! the first's unconfirmed table as the one to come back.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::record::{self, FeedRecord, FeedSource, TableRecord};
use super::NftError;

const STATE_DIR: &str = "/run/phantomc";

/// The folder of confirmation records: $PHANTOMC_RUN_DIR, else /run/phantomc.
fn state_dir() -> PathBuf {
    std::env::var_os("PHANTOMC_RUN_DIR").map_or_else(|| PathBuf::from(STATE_DIR), PathBuf::from)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// The new ruleset is live and waits for confirmation.
    Pending,
    Confirmed,
    RolledBack,
    /// The rollback itself failed (the message says why).
    Failed,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Pending {
    pub table: String,
    /// The table before the apply, read over netlink (feed sets by
    /// reference to the feed cache); `None` if there was none.
    pub previous: Option<TableRecord>,
    pub deadline_ms: u64,
    pub phase: Phase,
    pub message: Option<String>,
    /// How long the rollback's restore took, once it ran.
    #[serde(default)]
    pub restore_ms: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum RollbackError {
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("bad state file {0}: {1}")]
    State(PathBuf, serde_json::Error),
    #[error("no apply is waiting for confirmation (table inet {0})")]
    NothingPending(String),
    #[error("too late: the deadline passed and table inet {0} was rolled back")]
    TooLate(String),
    #[error("another `apply --confirm` of table inet {table} is waiting for confirmation ({state}, deadline {when}): confirm it with `phantomc confirm` or let it roll back first; nothing was changed")]
    AlreadyPending { table: String, state: PathBuf, when: String },
    #[error("the confirmation record {0} disappeared: check `nft list table inet {1}` by hand")]
    Vanished(PathBuf, String),
    #[error(transparent)]
    Nft(#[from] NftError),
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The state file of `table` in this process's network namespace.
pub fn state_path(table: &str) -> Result<PathBuf, RollbackError> {
    let ns = fs::metadata("/proc/self/ns/net").map_err(|e| RollbackError::Io("/proc/self/ns/net".into(), e))?.ino();
    Ok(state_dir().join(format!("confirm-{ns}-{table}.json")))
}

/// An exclusive lock on a state file, released on drop.
struct Locked {
    _file: File,
}

fn lock(state: &Path) -> Result<Locked, RollbackError> {
    let dir = state.parent().unwrap_or(Path::new(STATE_DIR));
    fs::create_dir_all(dir).map_err(|e| RollbackError::Io(dir.to_path_buf(), e))?;
    let path = state.with_extension("lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| RollbackError::Io(path.clone(), e))?;
    // An flock(2) lock on Linux, waited for: one rollback state writer at a time.
    file.lock().map_err(|e| RollbackError::Io(path, e))?;
    Ok(Locked { _file: file })
}

pub fn read(state: &Path) -> Result<Option<Pending>, RollbackError> {
    match fs::read_to_string(state) {
        Ok(text) => serde_json::from_str(&text).map(Some).map_err(|e| RollbackError::State(state.to_path_buf(), e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(RollbackError::Io(state.to_path_buf(), e)),
    }
}

/// Writes the state atomically; the caller holds the lock (so the folder exists).
fn write(state: &Path, p: &Pending) -> Result<(), RollbackError> {
    let tmp = state.with_extension("tmp");
    let text = serde_json::to_string(p).expect("state serializes");
    let io = |e| RollbackError::Io(tmp.clone(), e);
    let mut f = File::create(&tmp).map_err(io)?;
    f.write_all(text.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    fs::rename(&tmp, state).map_err(|e| RollbackError::Io(state.to_path_buf(), e))
}

/// Records the current table and starts the guard. Call before loading the
/// new ruleset, so there is never a moment with no way back. `feeds` says
/// where the live feed sets' entries come from (by nft set name).
pub fn arm(table: &str, timeout: Duration, feeds: &BTreeMap<String, FeedSource>) -> Result<PathBuf, RollbackError> {
    let state = state_path(table)?;
    let _lock = lock(&state)?;
    if let Some(p) = read(&state)?.filter(|p| p.phase == Phase::Pending) {
        let now = now_ms();
        let when = if p.deadline_ms >= now {
            format!("in {}s", (p.deadline_ms - now).div_ceil(1000))
        } else {
            format!(
                "passed {}s ago; if its guard died, check the table and remove the record",
                (now - p.deadline_ms) / 1000
            )
        };
        return Err(RollbackError::AlreadyPending { table: table.to_string(), state, when });
    }
    let previous = record::read(table, feeds, now_ms()).map_err(NftError::Kernel)?;
    let deadline_ms = now_ms() + u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
    write(
        &state,
        &Pending {
            table: table.to_string(),
            previous,
            deadline_ms,
            phase: Phase::Pending,
            message: None,
            restore_ms: None,
        },
    )?;
    spawn_guard(&state)?;
    Ok(state)
}

/// Starts `phantomc rollback-guard STATE` in a new session with no terminal.
fn spawn_guard(state: &Path) -> Result<(), RollbackError> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().map_err(|e| RollbackError::Io("current executable".into(), e))?;
    let mut cmd = Command::new(&exe);
    cmd.arg("rollback-guard").arg(state).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    // SAFETY: setsid is async-signal-safe; it detaches the child from our
    // session and terminal, so hangups and kills of ours do not reach it.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn().map(drop).map_err(|e| RollbackError::Io(exe, e))
}

/// Stands the guard down after a failed load: nothing new is live.
pub fn disarm(state: &Path) -> Result<(), RollbackError> {
    let _lock = lock(state)?;
    let _ = fs::remove_file(state);
    Ok(())
}

/// Keeps the new ruleset (what `phantomc confirm` and typing `yes` do).
pub fn confirm(state: &Path, table: &str) -> Result<(), RollbackError> {
    let _lock = lock(state)?;
    let Some(mut p) = read(state)? else { return Err(RollbackError::NothingPending(table.to_string())) };
    match p.phase {
        Phase::Pending => {
            p.phase = Phase::Confirmed;
            write(state, &p)
        }
        Phase::Confirmed => Ok(()),
        Phase::RolledBack | Phase::Failed => Err(RollbackError::TooLate(table.to_string())),
    }
}

/// Reads a recorded feed's cached networks of its family.
pub type FeedNets<'a> = &'a dyn Fn(&FeedRecord) -> Result<Vec<ipnet::IpNet>, String>;

/// The guard: waits for the deadline, then restores the previous table
/// unless the apply was confirmed.
pub fn guard(state: &Path, feed_nets: FeedNets<'_>) -> Result<Phase, RollbackError> {
    loop {
        let _lock = lock(state)?;
        // Gone: disarmed after a failed load, nothing new is live.
        let Some(mut p) = read(state)? else { return Ok(Phase::RolledBack) };
        // A decided record stays for the applying process to report and remove.
        if p.phase != Phase::Pending {
            return Ok(p.phase);
        }
        if now_ms() >= p.deadline_ms {
            let started = now_ms();
            let restored = record::restore(&p.table, p.previous.as_ref(), started, feed_nets);
            p.restore_ms = Some(now_ms().saturating_sub(started));
            match restored {
                Ok(()) => p.phase = Phase::RolledBack,
                Err(e) => {
                    p.phase = Phase::Failed;
                    p.message = Some(e.to_string());
                }
            }
            write(state, &p)?;
            return Ok(p.phase);
        }
        drop(_lock);
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until the guard has decided (bounded by the deadline plus grace).
/// A missing record is never read as confirmed.
pub fn wait_outcome(state: &Path, table: &str) -> Result<Phase, RollbackError> {
    let give_up = read(state)?.map_or(0, |p| p.deadline_ms) + 10_000;
    loop {
        match read(state)? {
            None => return Err(RollbackError::Vanished(state.to_path_buf(), table.to_string())),
            Some(p) if p.phase != Phase::Pending => return Ok(p.phase),
            Some(_) if now_ms() > give_up => return Ok(Phase::Pending),
            Some(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}
