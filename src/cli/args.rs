//! Arguments shared by many subcommands, flattened into each: the policy
//! path (optional everywhere, with one default) and the state directory.

use std::path::{Path, PathBuf};

/// Where the service keeps its policy; the systemd unit loads this file.
pub const DEFAULT_POLICY: &str = "/etc/phantomc/policy.pf";

/// `[POLICY]`: the policy file, default `$PHANTOMC_POLICY`, else
/// `/etc/phantomc/policy.pf`.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct PolicyArg {
    /// The policy file [default: $PHANTOMC_POLICY, else /etc/phantomc/policy.pf].
    #[arg(value_name = "POLICY")]
    pub policy: Option<PathBuf>,
}

impl PolicyArg {
    pub fn path(&self) -> PathBuf {
        resolve_policy(self.policy.as_deref())
    }
}

/// The given policy path, else `$PHANTOMC_POLICY`, else the service's.
pub fn resolve_policy(given: Option<&Path>) -> PathBuf {
    given
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("PHANTOMC_POLICY").filter(|v| !v.is_empty()).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_POLICY))
}

/// `--state-dir DIR`: where feed caches and the adaptive mode's state live.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct StateDirArg {
    /// phantomc's state directory; feed caches live in its `feeds` directory,
    /// the adaptive mode's baseline and alerts in `adaptive`
    /// [default: $PHANTOMC_STATE_DIR, else /var/lib/phantomc].
    #[arg(long = "state-dir", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

impl StateDirArg {
    /// The directory as given on the command line (no default applied).
    pub fn given(&self) -> Option<&Path> {
        self.state_dir.as_deref()
    }

    /// The feed cache directory, defaults applied.
    pub fn feeds_dir(&self) -> PathBuf {
        crate::feeds::state_dir(self.given())
    }

    /// The adaptive mode's state directory, defaults applied.
    pub fn adaptive_dir(&self) -> PathBuf {
        crate::watch::adaptive::state_dir(&crate::feeds::state_root(self.given()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_path_defaults() {
        assert_eq!(resolve_policy(Some(Path::new("p.pf"))), PathBuf::from("p.pf"));
        // The environment is shared by the test threads: only read it here.
        let expected = std::env::var_os("PHANTOMC_POLICY")
            .filter(|v| !v.is_empty())
            .map_or_else(|| PathBuf::from(DEFAULT_POLICY), PathBuf::from);
        assert_eq!(resolve_policy(None), expected);
    }
}
