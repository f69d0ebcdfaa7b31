//! Distributed scans: several sources, each too quiet to flag on its own,
//! splitting the scan of one network between them.
//!
//! In the manner of Zeek's scan.zeek, which counts each originator's failed
//! attempts and compares unique counts with thresholds, but keyed by the
//! network being scanned instead of the scanner:
//!
//! 1. A source is a *prober* of a network when most of its TCP/UDP attempts
//!    there failed and they failed against at least `min_per_source`
//!    distinct targets (protocol, host, port).
//! 2. Probers of one network whose failures fall within `window_secs` of
//!    each other form a group.
//! 3. The group is a distributed scan when it has `min_sources` members,
//!    together failed against `min_targets` distinct targets, and split them
//!    (distinct targets are at least `min_distinct_share` of all the members'
//!    targets: scanners divide the work, clients of a dead service all fail
//!    against the same one).
//!
//! Sources that a per-source detector already flagged are left out: they
//! need no group, and a loud scanner must not pull a quiet client into one.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;

use super::config::{Config, DistributedScan};
use super::detect::{examples, unicast, Detector, Finding, NetAttempts, Source};
use super::flows::{proto_label, Flow, TCP, UDP};

/// A place a scan probes: protocol, host, port.
type Target = (u8, IpAddr, u16);

/// One source's attempts against one network.
struct Prober<'a> {
    source: IpAddr,
    /// Distinct targets that failed.
    targets: BTreeSet<Target>,
    failures: Vec<&'a Flow>,
    first_us: u64,
    last_us: u64,
}

/// The network a server belongs to, at the configured prefix lengths.
pub(crate) fn network(ip: IpAddr, c: &DistributedScan) -> IpNet {
    let prefix = if ip.is_ipv4() { c.prefix_v4 } else { c.prefix_v6 };
    IpNet::new(ip, prefix).map(|n| n.trunc()).unwrap_or_else(|_| IpNet::from(ip))
}

/// Findings for the members of every distributed scan, one per member.
/// `sources` hold each source's failed attempts (at least) sorted by time
/// and its attempts per network; `flagged` are the sources already flagged
/// on their own.
pub fn distributed_scans(sources: &[Source], flagged: &BTreeSet<IpAddr>, cfg: &Config) -> Vec<Finding> {
    let c = &cfg.distributed_scan;
    let mut probers: BTreeMap<IpNet, Vec<Prober>> = BTreeMap::new();
    for source in sources.iter().filter(|s| !flagged.contains(&s.ip)) {
        let mut by_network: BTreeMap<IpNet, Vec<&Flow>> = BTreeMap::new();
        for f in source.flows.iter().copied().filter(|f| (f.proto == TCP || f.proto == UDP) && unicast(f.server.ip())) {
            by_network.entry(network(f.server.ip(), c)).or_default().push(f);
        }
        for (net, attempts) in by_network {
            let tried = source.counts.tried.get(&net).copied().unwrap_or_default();
            if let Some(p) = prober(source.ip, &attempts, &tried, c) {
                probers.entry(net).or_default().push(p);
            }
        }
    }
    let mut found = Vec::new();
    for (net, mut ps) in probers {
        ps.sort_by_key(|p| (p.first_us, p.source));
        for group in within_window(ps, c.window_secs * 1_000_000) {
            found.extend(judge(net, &group, c));
        }
    }
    found
}

/// `attempts` (one source, one network, at least one failure per target,
/// the earliest ones) as a prober, if it is one; `tried` counts every
/// attempt there and every failure.
fn prober<'a>(source: IpAddr, attempts: &[&'a Flow], tried: &NetAttempts, c: &DistributedScan) -> Option<Prober<'a>> {
    let failures: Vec<&Flow> = attempts.iter().copied().filter(|f| f.failed()).collect();
    let targets: BTreeSet<Target> = failures.iter().map(|f| (f.proto, f.server.ip(), f.server.port())).collect();
    if failures.is_empty()
        || targets.len() < c.min_per_source
        || (tried.failed as f64) < c.min_failed_share * tried.tried as f64
    {
        return None;
    }
    let (first_us, last_us) = (tried.first_failure_us, tried.last_failure_us);
    Some(Prober { source, targets, failures, first_us, last_us })
}

/// Probers (sorted by first failure) cut into groups whose activity chains
/// together with gaps of at most `window_us`.
fn within_window(probers: Vec<Prober>, window_us: u64) -> Vec<Vec<Prober>> {
    let mut groups: Vec<Vec<Prober>> = Vec::new();
    let mut group_last = 0u64;
    for p in probers {
        match groups.last_mut() {
            Some(g) if p.first_us <= group_last.saturating_add(window_us) => {
                group_last = group_last.max(p.last_us);
                g.push(p);
            }
            _ => {
                group_last = p.last_us;
                groups.push(vec![p]);
            }
        }
    }
    groups
}

/// The group's members' findings when it is a distributed scan.
fn judge(net: IpNet, group: &[Prober], c: &DistributedScan) -> Vec<Finding> {
    let union: BTreeSet<Target> = group.iter().flat_map(|p| p.targets.iter().copied()).collect();
    let each: usize = group.iter().map(|p| p.targets.len()).sum();
    let share = union.len() as f64 / each.max(1) as f64;
    if group.len() < c.min_sources || union.len() < c.min_targets || share < c.min_distinct_share {
        return Vec::new();
    }
    let first = group.iter().map(|p| p.first_us).min().unwrap_or(0);
    let last = group.iter().map(|p| p.last_us).max().unwrap_or(0);
    let members: Vec<String> = group.iter().map(|p| p.source.to_string()).collect();
    let threshold = format!(
        "{} sources >= {} failed against {} distinct targets of {net} >= {} within {}s, {:.0}% distinct >= {:.0}%",
        group.len(),
        c.min_sources,
        union.len(),
        c.min_targets,
        c.window_secs,
        share * 100.0,
        c.min_distinct_share * 100.0
    );
    let confidence = super::detect::confidence(union.len() as f64, c.min_targets as f64);
    group
        .iter()
        .map(|p| Finding {
            source: p.source,
            detector: Detector::DistributedScan,
            threshold: threshold.clone(),
            counts: format!(
                "this source failed against {} targets ({}); the group: {} ({})",
                p.targets.len(),
                describe(&p.targets),
                members.join(", "),
                super::detect::fmt_secs(last - first)
            ),
            first_seen_us: p.first_us,
            last_seen_us: p.last_us,
            examples: examples(&p.failures),
            confidence,
            also: Vec::new(),
        })
        .collect()
}

/// `tcp 10.0.0.1 ports 1000-1005` for one host, else `tcp 4 hosts, ports 22, 80`.
fn describe(targets: &BTreeSet<Target>) -> String {
    let hosts: BTreeSet<IpAddr> = targets.iter().map(|t| t.1).collect();
    let ports: BTreeSet<u16> = targets.iter().map(|t| t.2).collect();
    let protos: BTreeSet<String> = targets.iter().map(|t| proto_label(t.0)).collect();
    let protos = protos.into_iter().collect::<Vec<_>>().join("+");
    let where_ = match hosts.iter().next() {
        Some(h) if hosts.len() == 1 => h.to_string(),
        _ => format!("{} hosts", hosts.len()),
    };
    format!("{protos} {where_} ports {}", port_ranges(&ports))
}

/// `1000-1005, 2000` from sorted ports.
fn port_ranges(ports: &BTreeSet<u16>) -> String {
    let mut runs: Vec<(u16, u16)> = Vec::new();
    for &p in ports {
        match runs.last_mut() {
            Some((_, hi)) if u32::from(*hi) + 1 == u32::from(p) => *hi = p,
            _ => runs.push((p, p)),
        }
    }
    runs.iter()
        .map(|(lo, hi)| if lo == hi { lo.to_string() } else { format!("{lo}-{hi}") })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use crate::learn::detect::tests::{detectors, flow};
    use crate::learn::detect::{detect, Detector};
    use crate::learn::flows::{ConnState, Flow, TCP};
    use crate::learn::Config;

    /// `source` refused on `ports` of 10.0.0.1, one attempt every 100 ms from `t_ms`.
    fn refused(source: &str, ports: std::ops::Range<u16>, t_ms: u64) -> Vec<Flow> {
        ports
            .enumerate()
            .map(|(i, p)| {
                flow(
                    &format!("{source}:40000"),
                    &format!("10.0.0.1:{p}"),
                    TCP,
                    ConnState::REJ,
                    "Sr",
                    t_ms + i as u64 * 100,
                )
            })
            .collect()
    }

    /// `source` fetching from port 80 `n` times.
    fn served(source: &str, n: u64) -> Vec<Flow> {
        (0..n)
            .map(|i| flow(&format!("{source}:{}", 30000 + i), "10.0.0.1:80", TCP, ConnState::SF, "ShADadFf", i * 10))
            .collect()
    }

    #[test]
    fn three_quiet_sources_splitting_a_port_range_are_one_scan() {
        let mut flows = refused("10.9.0.1", 1000..1006, 0);
        flows.extend(refused("10.9.0.2", 1006..1012, 1_000));
        flows.extend(refused("10.9.0.3", 1012..1018, 2_000));
        flows.extend(served("10.0.0.50", 40));
        // Each alone is under every per-source threshold.
        for quiet in flows.chunks(6).take(3) {
            assert_eq!(detectors(quiet), []);
        }
        let found = detect(&flows, &Config::default());
        let labels: Vec<(String, Detector)> = found.iter().map(|f| (f.source.to_string(), f.detector)).collect();
        let scan = Detector::DistributedScan;
        assert_eq!(labels, [("10.9.0.1".into(), scan), ("10.9.0.2".into(), scan), ("10.9.0.3".into(), scan)]);
        assert!(found[1]
            .threshold
            .starts_with("3 sources >= 2 failed against 18 distinct targets of 10.0.0.0/24 >= 12"));
        assert!(found[1].threshold.contains("100% distinct"), "{}", found[1].threshold);
        assert!(
            found[1].counts.starts_with("this source failed against 6 targets (tcp 10.0.0.1 ports 1006-1011); the group: 10.9.0.1, 10.9.0.2, 10.9.0.3"),
            "{}",
            found[1].counts
        );
    }

    #[test]
    fn clients_of_a_dead_service_and_busy_clients_are_not_a_scan() {
        // Ten clients all failing against the same three ports: nothing split.
        let dead: Vec<Flow> = (1..=10).flat_map(|i| refused(&format!("10.9.1.{i}"), 8080..8083, i * 50)).collect();
        assert_eq!(detectors(&dead), []);
        // Four sources sweeping nearly the same ports (9 each, shifted by
        // one): each under the vertical threshold, together 12 targets but
        // only 33% distinct.
        let overlapping: Vec<Flow> =
            (1..=4u16).flat_map(|i| refused(&format!("10.9.2.{i}"), 2000 + i..2009 + i, u64::from(i) * 10)).collect();
        assert_eq!(detectors(&overlapping), []);
        // Clients that mostly got answers are not probing, whatever failed.
        let mut busy = Vec::new();
        for (i, ports) in [(1u8, 3000..3006), (2, 3006..3012), (3, 3012..3018)] {
            let src = format!("10.9.3.{i}");
            busy.extend(refused(&src, ports, 0));
            busy.extend(served(&src, 30));
        }
        assert_eq!(detectors(&busy), []);
    }

    #[test]
    fn a_group_needs_its_members_within_the_window() {
        let hour_ms = 3_600_000;
        let mut flows = refused("10.9.0.1", 1000..1006, 0);
        flows.extend(refused("10.9.0.2", 1006..1012, 2 * hour_ms));
        assert_eq!(detectors(&flows), []);
        // Within the hour they are one group, even hours after a first member.
        flows.extend(refused("10.9.0.3", 1012..1018, 2 * hour_ms + 60_000));
        assert_eq!(
            detectors(&flows),
            [("10.9.0.2".into(), Detector::DistributedScan), ("10.9.0.3".into(), Detector::DistributedScan)]
        );
    }

    #[test]
    fn a_loud_scanner_does_not_pull_a_quiet_source_into_a_group() {
        let mut flows = refused("10.9.0.1", 1000..1100, 0);
        flows.extend(refused("10.9.0.2", 2000..2003, 500));
        assert_eq!(detectors(&flows), [("10.9.0.1".into(), Detector::VerticalScan)]);
    }
}
