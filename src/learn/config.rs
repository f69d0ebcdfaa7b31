//! Detector thresholds and proposal options, read from YAML. Every field has
//! a default (see `learn/detectors.yaml`), so a file only lists what it changes.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::flow_table::FlowLimits;

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
    pub icmp_flood: IcmpFlood,
    pub ping_sweep: PingSweep,
    pub service_probe: ServiceProbe,
    pub spoofed_flood: SpoofedFlood,
    pub distributed_scan: DistributedScan,
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
    /// Vertical scans also count within this longer window (slow scans).
    pub slow_window_secs: u64,
}

impl Default for Scan {
    fn default() -> Self {
        Scan { vertical_ports: 10, horizontal_hosts: 10, window_secs: 300, slow_window_secs: 86_400 }
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
    /// Attempts per distinct target (host and port): a flood hammers a few
    /// services, a port scan touches each once.
    pub min_per_target: f64,
}

impl Default for SynFlood {
    fn default() -> Self {
        SynFlood { min_half_open: 100, half_open_ratio: 0.9, min_rate: 20.0, min_per_target: 10.0 }
    }
}

/// Failed logins against authentication services (Zeek's SSH guessing
/// heuristic at flow level: many short sessions that never moved enough
/// data for a successful login, over a long window).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BruteForce {
    /// Authentication services by TCP port, each with the server bytes (IP
    /// bytes per connection) below which a completed session counts as a
    /// failed login. Other ports are never brute-forced.
    pub services: BTreeMap<u16, u64>,
    /// Failed logins from one source to one service within the window.
    pub min_failures: u64,
    pub window_secs: u64,
    /// A session longer than this is a working login, whatever its size.
    pub max_duration_secs: u64,
}

impl Default for BruteForce {
    fn default() -> Self {
        let services = [
            (21, 1_200),    // ftp
            (22, 5_500),    // ssh (Zeek's old authentication_data_size)
            (23, 1_500),    // telnet
            (110, 1_200),   // pop3
            (143, 1_500),   // imap
            (389, 1_200),   // ldap
            (445, 3_000),   // smb
            (465, 8_000),   // smtps (TLS handshake included)
            (587, 1_500),   // submission
            (636, 8_000),   // ldaps
            (993, 8_000),   // imaps
            (995, 8_000),   // pop3s
            (1433, 1_500),  // mssql
            (1521, 1_500),  // oracle
            (2222, 5_500),  // ssh, alternative port
            (3306, 1_200),  // mysql
            (3389, 8_000),  // rdp
            (5432, 1_200),  // postgresql
            (5900, 1_200),  // vnc
            (6379, 400),    // redis AUTH
            (27017, 1_500), // mongodb
        ]
        .into_iter()
        .collect();
        BruteForce { services, min_failures: 10, window_secs: 1800, max_duration_secs: 30 }
    }
}

/// Echo floods from one source.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct IcmpFlood {
    pub min_packets: u64,
    /// Packets per second over the source's ICMP activity.
    pub min_rate: f64,
}

impl Default for IcmpFlood {
    fn default() -> Self {
        IcmpFlood { min_packets: 100, min_rate: 50.0 }
    }
}

/// ICMP to many hosts (a ping sweep).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PingSweep {
    pub min_hosts: usize,
    pub window_secs: u64,
}

impl Default for PingSweep {
    fn default() -> Self {
        PingSweep { min_hosts: 10, window_secs: 300 }
    }
}

/// Version probing (`nmap -sV`): a port probe (a handshake reset or left
/// without data), then a burst of short one-request connections to the same
/// service, nearly each with a different request.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceProbe {
    pub min_probes: u64,
    /// Distinct request sizes as a share of the probes.
    pub distinct_ratio: f64,
    /// A probe connection lasts at most this long.
    pub max_duration_ms: u64,
    /// Probes count within this many seconds after the port probe.
    pub window_secs: u64,
}

impl Default for ServiceProbe {
    fn default() -> Self {
        ServiceProbe { min_probes: 4, distinct_ratio: 0.5, max_duration_ms: 1000, window_secs: 30 }
    }
}

/// SYN floods from many (spoofed) sources against one service: proposed as
/// a rate limit, never as one block per source.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpoofedFlood {
    pub min_half_open: u64,
    pub min_sources: usize,
    pub min_rate: f64,
}

impl Default for SpoofedFlood {
    fn default() -> Self {
        SpoofedFlood { min_half_open: 200, min_sources: 50, min_rate: 50.0 }
    }
}

/// A scan split between several sources, each too quiet to flag alone
/// (see `learn::distributed`).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DistributedScan {
    /// Distinct failed targets (protocol, host, port) the group covers together.
    pub min_targets: usize,
    /// Sources in the group.
    pub min_sources: usize,
    /// Distinct failed targets a source needs to count as a prober.
    pub min_per_source: usize,
    /// Share of a prober's attempts to the network that failed.
    pub min_failed_share: f64,
    /// Distinct targets as a share of all the members' targets together.
    pub min_distinct_share: f64,
    /// Probers whose failures chain together with gaps up to this long form a group.
    pub window_secs: u64,
    /// The scanned network: servers' addresses cut to these prefix lengths.
    pub prefix_v4: u8,
    pub prefix_v6: u8,
}

impl Default for DistributedScan {
    fn default() -> Self {
        DistributedScan {
            min_targets: 12,
            min_sources: 2,
            min_per_source: 3,
            min_failed_share: 0.8,
            min_distinct_share: 0.8,
            window_secs: 3600,
            prefix_v4: 24,
            prefix_v6: 64,
        }
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
        if self.scan.slow_window_secs < self.scan.window_secs {
            return Err("scan.slow_window_secs must be at least scan.window_secs".into());
        }
        let d = &self.distributed_scan;
        if d.prefix_v4 > 32 || d.prefix_v6 > 128 {
            return Err("distributed_scan.prefix_v4 must be <= 32 and prefix_v6 <= 128".into());
        }
        if self.score.k == 0 {
            return Err("score.k must be at least 1".into());
        }
        Ok(())
    }
}
