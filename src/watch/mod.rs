//! Long-running service: recompile and reload when the policy changes.

use std::path::PathBuf;

use serde::Serialize;

/// What a running service knows about the ruleset it keeps loaded.
/// Written by the watcher, read by the REST API.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Health {
    pub policy: PathBuf,
    /// sha256 of the loaded nft JSON, hex.
    pub ruleset_hash: Option<String>,
    /// Unix time (seconds) of the last successful reload.
    pub last_reload: Option<u64>,
    pub reloads: u64,
    /// Rendered diagnostic of the last failed reload; cleared by a good one.
    pub last_error: Option<String>,
}
