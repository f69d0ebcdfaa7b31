//! Detector thresholds and proposal options, read from YAML. Every field has
//! a default (see `learn/detectors.yaml`), so a file only lists what it changes.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::flows::FlowLimits;

/// The commented default configuration shipped with phantomc.
pub const DEFAULT_YAML: &str = include_str!("../../learn/detectors.yaml");

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub flows: FlowLimits,
    pub trw: Trw,
    pub scan: Scan,
    pub syn_flood: SynFlood,
    pub brute_force: BruteForce,
    pub udp_scan: UdpScan,
    pub score: Score,
    pub propose: Propose,
}

/// Threshold Random Walk (Jung, Paxson, Berger, Balakrishnan 2004).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Trw {
    /// P(first contact succeeds | benign source).
    pub theta0: f64,
    /// P(first contact succeeds | scanner).
    pub theta1: f64,
    /// Wanted detection probability.
    pub detection: f64,
    /// Tolerated false positive probability.
    pub false_positive: f64,
}

impl Default for Trw {
    fn default() -> Self {
        Trw { theta0: 0.8, theta1: 0.2, detection: 0.99, false_positive: 0.01 }
    }
}

/// Counting of failed attempts to distinct ports of one host (vertical) and
/// to one port on distinct hosts (horizontal).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Scan {
    pub vertical_ports: usize,
    pub horizontal_hosts: usize,
    /// Only attempts within this many seconds of each other count together.
    pub window_secs: u64,
}

impl Default for Scan {
    fn default() -> Self {
        Scan { vertical_ports: 10, horizontal_hosts: 10, window_secs: 300 }
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SynFlood {
    /// Half-open connection attempts (handshake never completed) from one source.
    pub min_half_open: u64,
    /// Share of the source's TCP attempts that stayed half-open.
    pub half_open_ratio: f64,
    /// Attempts per second over the source's active period.
    pub min_rate: f64,
}

impl Default for SynFlood {
    fn default() -> Self {
        SynFlood { min_half_open: 100, half_open_ratio: 0.9, min_rate: 20.0 }
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BruteForce {
    /// Connections from one source to one service within the window.
    pub min_connections: u64,
    pub window_secs: u64,
    /// A connection counts when it lasts at most this long.
    pub max_duration_secs: u64,
}

impl Default for BruteForce {
    fn default() -> Self {
        BruteForce { min_connections: 20, window_secs: 60, max_duration_secs: 30 }
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct UdpScan {
    /// Distinct (host, port) pairs answered with ICMP port unreachable.
    pub min_unreachable: usize,
}

impl Default for UdpScan {
    fn default() -> Self {
        UdpScan { min_unreachable: 5 }
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Score {
    /// Neighbours for the k-NN distance.
    pub k: usize,
    /// DBSCAN radius in standard deviations of the scaled features.
    pub dbscan_eps: f64,
    pub dbscan_min_points: usize,
    /// How many sources the ranking shows.
    pub top: usize,
}

impl Default for Score {
    fn default() -> Self {
        Score { k: 3, dbscan_eps: 1.5, dbscan_min_points: 3, top: 10 }
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Propose {
    /// Name of the policy set that receives flagged sources.
    pub block_set: String,
    /// Days until a block entry should be reviewed (written in its comment).
    pub block_expiry_days: u64,
    /// Client networks of a pass rule are widened to these prefix lengths.
    pub client_prefix_v4: u8,
    pub client_prefix_v6: u8,
    /// Allow services from any source (0.0.0.0/0, ::/0) instead of the clients seen.
    pub any_source: bool,
    /// Server ports in this range are ephemeral and never get a pass rule.
    pub ephemeral_from: u16,
    /// Clients a service needs before it gets a pass rule.
    pub min_clients: usize,
}

impl Default for Propose {
    fn default() -> Self {
        Propose {
            block_set: "learned_block".into(),
            block_expiry_days: 30,
            client_prefix_v4: 24,
            client_prefix_v6: 64,
            any_source: false,
            ephemeral_from: 32768,
            min_clients: 1,
        }
    }
}

impl Config {
    /// Read a YAML file; errors name the file, line and column.
    pub fn load(path: &Path) -> Result<Config, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Config::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Config, String> {
        let cfg: Config = serde_yaml::from_str(text).map_err(|e| match e.location() {
            Some(l) => format!("line {} column {}: {e}", l.line(), l.column()),
            None => e.to_string(),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), String> {
        let t = &self.trw;
        let prob = |name: &str, v: f64| {
            if v > 0.0 && v < 1.0 {
                Ok(())
            } else {
                Err(format!("trw.{name} must be between 0 and 1 (exclusive), got {v}"))
            }
        };
        prob("theta0", t.theta0)?;
        prob("theta1", t.theta1)?;
        prob("detection", t.detection)?;
        prob("false_positive", t.false_positive)?;
        if t.theta1 >= t.theta0 {
            return Err("trw.theta1 (scanner success) must be below trw.theta0 (benign success)".into());
        }
        if self.propose.client_prefix_v4 > 32 || self.propose.client_prefix_v6 > 128 {
            return Err("propose.client_prefix_v4 must be <= 32 and client_prefix_v6 <= 128".into());
        }
        if self.score.k == 0 {
            return Err("score.k must be at least 1".into());
        }
        Ok(())
    }
}
