//! `status`: the loaded ruleset's hash, the last reload and error, and
//! whether the live table still matches the policy.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::{ApiError, ApiState};
use crate::diag::render_plain;
use crate::nft::apply::Status;
use crate::nft::policy_hash;
use crate::policy::LoadError;
use crate::watch::{read_health, Health};

/// Who keeps [`ApiState::health`] current.
#[derive(Clone, Debug)]
pub enum HealthSource {
    /// A watcher in the same process.
    Watcher,
    /// `phantomc serve` on its own: the state file a watcher process
    /// writes, if there is one; otherwise what the live table shows.
    Standalone { state_file: PathBuf },
}

pub fn render_load_error(e: &LoadError) -> String {
    match e {
        LoadError::Io(..) => e.to_string(),
        LoadError::Policy(p) => render_plain(&p.diags, &p.sources),
    }
}

pub fn report(state: &ApiState) -> Result<Value, ApiError> {
    let (compiled, policy_error) = state.compiled();
    // The exact drift check loads the policy into a scratch namespace; where
    // that is not allowed (a service without CAP_SYS_ADMIN) the rest of the
    // status still answers.
    let hash = compiled.as_ref().map(|c| policy_hash(&c.ruleset));
    let (live, check_error) = match compiled.as_deref().zip(hash.as_deref()).map(|(c, h)| state.status_of(c, h)) {
        Some(Ok(s)) => (Some(s), None),
        Some(Err(e)) => (None, Some(e.to_string())),
        None => (None, None),
    };
    let loaded = match &live {
        Some(s) => *s != Status::NotLoaded,
        None => state.nft.table_exists(&state.table).map_err(|e| ApiError::internal(e.to_string()))?,
    };
    let in_sync = matches!(live, Some(Status::InSync { .. }));
    let (health, source, watcher) = match &state.health_source {
        HealthSource::Watcher => (read(state), "watch", Some("running")),
        HealthSource::Standalone { state_file } => match read_health(state_file) {
            Ok(h) => {
                let watcher = watcher_state(&h);
                (h, "watch-state-file", Some(watcher))
            }
            Err(_) => {
                let h = Health {
                    policy: state.policy.clone(),
                    // Without a watcher, the loaded ruleset is known only when it is the policy's.
                    ruleset_hash: hash.clone().filter(|_| in_sync),
                    last_error: policy_error.clone(),
                    table: Some(state.table.clone()),
                    ..Health::default()
                };
                *state.health.write().unwrap_or_else(std::sync::PoisonError::into_inner) = h.clone();
                (h, "live-table", None)
            }
        },
    };
    let (state_name, rules, entries, drift) = match &live {
        None => ("unknown", None, None, None),
        Some(Status::NotLoaded) => ("not-loaded", None, None, None),
        Some(Status::InSync { rules, entries }) => ("in-sync", Some(*rules), Some(*entries), None),
        Some(Status::Drifted(diff)) => ("drifted", None, None, Some(diff.clone())),
    };
    Ok(json!({
        "table": state.table,
        "policy": health.policy,
        "state": state_name,
        "loaded": loaded,
        "ruleset_hash": health.ruleset_hash,
        "policy_hash": hash,
        "last_reload": health.last_reload,
        "reloads": health.reloads,
        "failures": health.failures,
        "reload_duration": health.reload_duration,
        "last_error": health.last_error,
        "last_error_at": health.last_error_at,
        "policy_error": policy_error,
        "drift": drift,
        "check_error": check_error,
        "nft_rules": rules,
        "runtime_entries": entries,
        "health_source": source,
        "watcher": watcher,
        "time": super::unix_now(),
    }))
}

fn read(state: &ApiState) -> Health {
    state.health.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
}

/// Whether the watcher that wrote a state file still runs.
fn watcher_state(h: &Health) -> &'static str {
    if h.stopped_at.is_some() {
        "stopped"
    } else if Path::new(&format!("/proc/{}", h.pid)).exists() {
        "running"
    } else {
        "gone"
    }
}
