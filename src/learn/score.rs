//! Advisory ML ranking of sources with linfa: standardized per-source
//! features, DBSCAN noise and the mean distance to the k nearest neighbours.
//! It explains (top features) and ranks; it never blocks anything by itself.
//! Deterministic: no random initialisation, sources in address order.
//! Built with the `ml` cargo feature (on by default); without it
//! [`rank_features`] ranks nothing and [`BUILT_IN`] is false.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;

#[cfg(feature = "ml")]
use linfa::traits::Transformer;
#[cfg(feature = "ml")]
use linfa_clustering::Dbscan;
#[cfg(feature = "ml")]
use linfa_nn::{distance::L2Dist, CommonNearestNeighbour, NearestNeighbour};
#[cfg(feature = "ml")]
use ndarray::{Array2, Axis};
use serde::Serialize;

use super::config::Score;
use super::flows::{Flow, KeyHasher, TCP};

type Fast = std::hash::BuildHasherDefault<KeyHasher>;

/// Whether this build ranks (the `ml` cargo feature).
pub const BUILT_IN: bool = cfg!(feature = "ml");

/// What `learn` says where the ranking would be, in a build without it.
pub const NOT_BUILT_IN: &str =
    "ML ranking (advisory): not built in (phantomc was built without the `ml` cargo feature)";

pub const FEATURES: [&str; 8] = [
    "attempts",
    "hosts",
    "ports",
    "failed_ratio",
    "half_open_ratio",
    "rate_per_sec",
    "bytes_per_conn",
    "icmp_error_ratio",
];

/// One source's place in the ranking.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Ranked {
    pub source: IpAddr,
    /// Mean distance (in standard deviations) to its k nearest neighbours.
    pub knn_distance: f64,
    /// DBSCAN left it outside every cluster.
    pub noise: bool,
    /// The features furthest from the mean, as (name, z-score).
    pub top_features: Vec<(&'static str, f64)>,
}

/// One source's counts behind its features.
#[derive(Default)]
struct Acc {
    attempts: u64,
    failed: u64,
    tcp: u64,
    half_open: u64,
    icmp_errors: u64,
    bytes: u64,
    hosts: HashSet<IpAddr, Fast>,
    ports: HashSet<(u8, u16), Fast>,
    first: u64,
    last: u64,
}

impl Acc {
    fn absorb(&mut self, b: Acc) {
        self.attempts += b.attempts;
        self.failed += b.failed;
        self.tcp += b.tcp;
        self.half_open += b.half_open;
        self.icmp_errors += b.icmp_errors;
        self.bytes += b.bytes;
        self.hosts.extend(b.hosts);
        self.ports.extend(b.ports);
        self.first = self.first.min(b.first);
        self.last = self.last.max(b.last);
    }
}

/// The raw feature vector of each source that originated flows, counted one
/// flow at a time ([`Features::finish`]). It holds per source its counts and the
/// distinct hosts and (protocol, port) pairs it tried: it grows with
/// sources and what they contacted, never with repeated flows.
#[derive(Default)]
pub struct Features {
    acc: HashMap<IpAddr, Acc, Fast>,
}

impl Features {
    pub fn add(&mut self, f: &Flow) {
        if !f.attempt_seen {
            return;
        }
        let a = self.acc.entry(f.client.ip()).or_insert_with(|| Acc { first: u64::MAX, ..Default::default() });
        a.attempts += f.connections;
        a.failed += if f.failed() { f.connections } else { 0 };
        if f.proto == TCP {
            a.tcp += f.connections;
            a.half_open += if f.handshake_completed() { 0 } else { f.connections };
        }
        a.icmp_errors += u64::from(f.icmp_error.is_some()) * f.connections;
        a.bytes += f.orig.bytes + f.resp.bytes;
        a.hosts.insert(f.server.ip());
        a.ports.insert((f.proto, f.server.port()));
        a.first = a.first.min(f.first_seen_us);
        a.last = a.last.max(f.last_seen_us);
    }

    /// Adds another shard's counts.
    pub fn merge(&mut self, other: Features) {
        for (ip, b) in other.acc {
            self.acc.entry(ip).or_insert_with(|| Acc { first: u64::MAX, ..Default::default() }).absorb(b);
        }
    }

    pub fn finish(self) -> BTreeMap<IpAddr, [f64; 8]> {
        // Sources in address order: the ranking is deterministic.
        let acc: BTreeMap<IpAddr, Acc> = self.acc.into_iter().collect();
        acc.into_iter()
            .map(|(ip, a)| {
                let n = a.attempts as f64;
                let secs = ((a.last - a.first) as f64 / 1e6).max(1.0);
                let v = [
                    n.ln_1p(),
                    (a.hosts.len() as f64).ln_1p(),
                    (a.ports.len() as f64).ln_1p(),
                    a.failed as f64 / n,
                    if a.tcp > 0 { a.half_open as f64 / a.tcp as f64 } else { 0.0 },
                    (n / secs).ln_1p(),
                    (a.bytes as f64 / n).ln_1p(),
                    a.icmp_errors as f64 / n,
                ];
                (ip, v)
            })
            .collect()
    }
}

/// Without the `ml` feature nothing is ranked (see [`BUILT_IN`]).
#[cfg(not(feature = "ml"))]
pub fn rank_features(_feats: BTreeMap<IpAddr, [f64; 8]>, _cfg: &Score) -> Vec<Ranked> {
    Vec::new()
}

/// Rank sources by k-NN distance (most unusual first). Empty when there are
/// too few sources for k neighbours.
#[cfg(feature = "ml")]
pub fn rank_features(feats: BTreeMap<IpAddr, [f64; 8]>, cfg: &Score) -> Vec<Ranked> {
    let n = feats.len();
    if n <= cfg.k {
        return Vec::new();
    }
    let sources: Vec<IpAddr> = feats.keys().copied().collect();
    let mut x = Array2::<f64>::zeros((n, FEATURES.len()));
    for (i, v) in feats.values().enumerate() {
        for (j, value) in v.iter().enumerate() {
            x[[i, j]] = *value;
        }
    }
    // Standardize; a constant feature says nothing and stays 0.
    let mean = x.mean_axis(Axis(0)).expect("n > 0");
    let std = x.std_axis(Axis(0), 0.0).mapv(|s| if s > 1e-12 { s } else { 1.0 });
    let z = (&x - &mean) / &std;

    let clusters = Dbscan::params(cfg.dbscan_min_points)
        .tolerance(cfg.dbscan_eps)
        .transform(&z)
        .map(|c| c.to_vec())
        .unwrap_or_else(|_| vec![None; n]);
    let index = CommonNearestNeighbour::KdTree.from_batch(&z, L2Dist).expect("non-empty, finite features");
    let mut ranked: Vec<Ranked> = (0..n)
        .map(|i| {
            let row = z.row(i);
            let neighbours = index.k_nearest(row, cfg.k + 1).unwrap_or_default();
            let dists: Vec<f64> = neighbours
                .iter()
                .filter(|(_, j)| *j != i)
                .take(cfg.k)
                .map(|(p, _)| p.iter().zip(row.iter()).map(|(a, b)| (a - b).powi(2)).sum::<f64>().sqrt())
                .collect();
            let knn_distance = dists.iter().sum::<f64>() / dists.len().max(1) as f64;
            let mut top: Vec<(&'static str, f64)> =
                FEATURES.iter().copied().zip(row.iter().copied()).filter(|(_, v)| v.abs() >= 1.0).collect();
            top.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()).then(a.0.cmp(b.0)));
            top.truncate(3);
            Ranked { source: sources[i], knn_distance, noise: clusters[i].is_none(), top_features: top }
        })
        .collect();
    ranked.sort_by(|a, b| b.knn_distance.total_cmp(&a.knn_distance).then(a.source.cmp(&b.source)));
    ranked
}

/// `rank 1/512, k-NN distance 4.21, DBSCAN noise; failed_ratio +3.1, hosts +2.5`
pub fn explain(r: &Ranked, index: usize, of: usize) -> String {
    let top: Vec<String> = r.top_features.iter().map(|(n, z)| format!("{n} {z:+.1}")).collect();
    format!(
        "rank {}/{of}, k-NN distance {:.2}, {}{}{}",
        index + 1,
        r.knn_distance,
        if r.noise { "DBSCAN noise" } else { "in a DBSCAN cluster" },
        if top.is_empty() { "" } else { "; " },
        top.join(", ")
    )
}
