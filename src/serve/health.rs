//! `status`: the loaded ruleset's hash, the last reload and error, and
//! whether the live table still matches the policy.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::{ApiError, ApiState};
use crate::diag::render_plain;
use crate::nft::apply::{self, Status};
use crate::nft::policy_hash;
use crate::policy::LoadError;
use crate::watch::Health;

/// Who keeps [`ApiState::health`] current.
#[derive(Clone, Debug)]
pub enum HealthSource {
    /// A watcher in the same process.
    Watcher,
    /// `phantomc serve` on its own: the state file a watcher process
    /// writes, if there is one; otherwise what the live table shows.
    Standalone { state_file: PathBuf },
}

/// Where `phantomc watch` keeps its health for other processes.
pub fn health_file(table: &str) -> PathBuf {
    crate::watch::default_state_file(table)
}

pub fn render_load_error(e: &LoadError) -> String {
    match e {
        LoadError::Io(..) => e.to_string(),
        LoadError::Policy(p) => render_plain(&p.diags, &p.sources),
    }
}

pub fn report(state: &ApiState) -> Result<Value, ApiError> {
    let (compiled, policy_error) = state.compiled();
    let live = match &compiled {
        Some(c) => Some(apply::status(&state.nft, c).map_err(|e| ApiError::internal(e.to_string()))?),
        None => None,
    };
    let hash = compiled.as_ref().map(|c| policy_hash(&c.ruleset));
    let in_sync = matches!(live, Some(Status::InSync { .. }));
    let (health, source) = match &state.health_source {
        HealthSource::Watcher => (read(state), "watch"),
        HealthSource::Standalone { state_file } => match read_state_file(state_file) {
            Some(h) => (h, "watch-state-file"),
            None => (
                Health {
                    policy: state.policy.clone(),
                    // Without a watcher, the loaded ruleset is known only when it is the policy's.
                    ruleset_hash: hash.clone().filter(|_| in_sync),
                    last_reload: None,
                    reloads: 0,
                    last_error: policy_error.clone(),
                    ..Health::default()
                },
                "live-table",
            ),
        },
    };
    if let HealthSource::Standalone { .. } = state.health_source {
        *state.health.write().unwrap_or_else(std::sync::PoisonError::into_inner) = health.clone();
    }
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
        "loaded": matches!(live, Some(Status::InSync { .. } | Status::Drifted(_))),
        "ruleset_hash": health.ruleset_hash,
        "policy_hash": hash,
        "last_reload": health.last_reload,
        "reloads": health.reloads,
        "last_error": health.last_error,
        "policy_error": policy_error,
        "drift": drift,
        "nft_rules": rules,
        "runtime_entries": entries,
        "health_source": source,
        "time": super::unix_now(),
    }))
}

fn read(state: &ApiState) -> Health {
    state.health.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
}

/// The watcher's state file; fields a newer watcher adds are ignored and
/// missing ones default, so versions need not match.
fn read_state_file(path: &Path) -> Option<Health> {
    crate::watch::read_health(path).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_file_is_read_leniently() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("health-phantomc.json");
        assert!(read_state_file(&f).is_none(), "missing file");
        std::fs::write(&f, r#"{"policy":"/etc/p.pf","ruleset_hash":"ab","last_reload":7,"reloads":3,"last_error":null,"extra":1}"#).expect("write");
        let h = read_state_file(&f).expect("parsed");
        assert_eq!((h.ruleset_hash.as_deref(), h.last_reload, h.reloads, h.last_error), (Some("ab"), Some(7), 3, None));
        std::fs::write(&f, "{half").expect("write");
        assert!(read_state_file(&f).is_none(), "broken file");
    }
}
