//! Deterministic, explainable detectors over flows. Each finding names its
//! detector, the threshold it crossed, its counts, when, and example flows.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, Hash};
use std::net::{IpAddr, SocketAddr};

use serde::Serialize;

use super::config::Config;
use super::flows::{Flow, KeyHasher, TCP, UDP};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Detector {
    Trw,
    VerticalScan,
    HorizontalScan,
    SynFlood,
    BruteForce,
    UdpScan,
}

impl Detector {
    pub fn name(self) -> &'static str {
        match self {
            Detector::Trw => "trw-scan",
            Detector::VerticalScan => "vertical-scan",
            Detector::HorizontalScan => "horizontal-scan",
            Detector::SynFlood => "syn-flood",
            Detector::BruteForce => "brute-force",
            Detector::UdpScan => "udp-scan",
        }
    }
}

/// One detector's verdict on one source.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Finding {
    pub source: IpAddr,
    pub detector: Detector,
    /// `likelihood ratio 256 >= 99`
    pub threshold: String,
    /// `9 hosts contacted, 9 failed`
    pub counts: String,
    pub first_seen_us: u64,
    pub last_seen_us: u64,
    /// Up to three flows that made the case, in time order.
    pub examples: Vec<String>,
    /// 0.5 at the threshold, towards 1 the further beyond it.
    pub confidence: f64,
}

/// How far beyond its threshold a value is, as a confidence in [0.5, 0.99].
fn confidence(value: f64, threshold: f64) -> f64 {
    let r = (value / threshold.max(f64::MIN_POSITIVE)).max(1.0);
    (1.0 - 0.5 / r).min(0.99)
}

/// A detector's verdict on one source's attempts, sorted by time.
type DetectorFn = fn(IpAddr, &[&Flow], &Config) -> Option<Finding>;

/// Every detector, in the order their findings are listed.
const DETECTORS: [DetectorFn; 6] = [trw, vertical_scan, horizontal_scan, syn_flood, brute_force, udp_scan];

/// Run every detector; findings sorted by source, then detector. Sources
/// and detectors run in parallel (a few sources often hold most flows).
pub fn detect(flows: &[Flow], cfg: &Config) -> Vec<Finding> {
    use rayon::prelude::*;
    let mut by_source: BTreeMap<IpAddr, Vec<&Flow>> = BTreeMap::new();
    for f in flows.iter().filter(|f| f.attempt_seen) {
        by_source.entry(f.client.ip()).or_default().push(f);
    }
    let mut sources: Vec<(IpAddr, Vec<&Flow>)> = by_source.into_iter().collect();
    sources.par_iter_mut().for_each(|(_, fs)| fs.sort_by_key(|f| (f.first_seen_us, f.server, f.client)));
    (0..sources.len() * DETECTORS.len())
        .into_par_iter()
        .filter_map(|job| {
            let (src, fs) = &sources[job / DETECTORS.len()];
            DETECTORS[job % DETECTORS.len()](*src, fs, cfg)
        })
        .collect()
}

fn examples(fs: &[&Flow]) -> Vec<String> {
    fs.iter().take(3).map(|f| f.describe()).collect()
}

fn span(fs: &[&Flow]) -> (u64, u64) {
    let first = fs.iter().map(|f| f.first_seen_us).min().unwrap_or(0);
    let last = fs.iter().map(|f| f.last_seen_us).max().unwrap_or(0);
    (first, last)
}

/// Sequential hypothesis test over first contacts to new hosts. After a
/// "benign" decision the walk restarts, so a source that behaves first and
/// scans later is still caught.
fn trw(src: IpAddr, fs: &[&Flow], cfg: &Config) -> Option<Finding> {
    let t = &cfg.trw;
    let upper = t.detection / t.false_positive;
    let lower = (1.0 - t.detection) / (1.0 - t.false_positive);
    let mut ratio = 1.0;
    let mut seen: BTreeSet<IpAddr> = BTreeSet::new();
    let mut first_contacts: Vec<&Flow> = Vec::new();
    // (ratio, first contacts so far) when the walk crossed the upper bound.
    let mut decided: Option<(f64, usize)> = None;
    for f in fs {
        if !seen.insert(f.server.ip()) {
            continue;
        }
        first_contacts.push(f);
        if decided.is_some() {
            continue;
        }
        ratio *= if f.answered() { t.theta1 / t.theta0 } else { (1.0 - t.theta1) / (1.0 - t.theta0) };
        if ratio >= upper {
            decided = Some((ratio, first_contacts.len()));
        } else if ratio <= lower {
            ratio = 1.0;
        }
    }
    let (ratio, after) = decided?;
    let failures: Vec<&Flow> = first_contacts.iter().copied().filter(|f| f.failed()).collect();
    let (first, last) = span(&first_contacts);
    Some(Finding {
        source: src,
        detector: Detector::Trw,
        threshold: format!(
            "likelihood ratio {ratio:.0} >= {upper:.0} after {after} first contacts (P_D {}, P_F {})",
            t.detection, t.false_positive
        ),
        counts: format!("{} hosts contacted, {} first contacts failed", first_contacts.len(), failures.len()),
        first_seen_us: first,
        last_seen_us: last,
        examples: examples(&failures),
        confidence: confidence(ratio, upper),
    })
}

/// An attempt at a time, keyed by what a scan varies (port or host).
type Event<'a, K> = (u64, K, &'a Flow);

/// The most distinct keys among events inside any window of `window_us`,
/// with the events of that window. Events must be sorted by time.
fn densest_window<'a, K: Eq + Hash + Copy>(events: &[Event<'a, K>], window_us: u64) -> (usize, Vec<&'a Flow>) {
    // Keys become small numbers first: the window then counts in a plain array.
    let mut ids: HashMap<K, usize, BuildHasherDefault<KeyHasher>> = HashMap::default();
    let id: Vec<usize> = events
        .iter()
        .map(|e| {
            let next = ids.len();
            *ids.entry(e.1).or_insert(next)
        })
        .collect();
    let mut counts = vec![0usize; ids.len()];
    let (mut distinct, mut best, mut best_range) = (0, 0, 0..0);
    let mut lo = 0;
    for hi in 0..events.len() {
        counts[id[hi]] += 1;
        distinct += usize::from(counts[id[hi]] == 1);
        while events[hi].0 - events[lo].0 > window_us {
            counts[id[lo]] -= 1;
            distinct -= usize::from(counts[id[lo]] == 0);
            lo += 1;
        }
        if distinct > best {
            best = distinct;
            best_range = lo..hi + 1;
        }
    }
    (best, events[best_range].iter().map(|e| e.2).collect())
}

/// Failed TCP/UDP attempts grouped by `target`, counting the distinct
/// `varied` keys in each group's densest window: the group with the most
/// (ties: the lowest target), its count and that window's flows.
fn densest_scan<'a, T: Ord + Copy, K: Eq + Hash + Copy>(
    fs: &[&'a Flow],
    cfg: &Config,
    target: impl Fn(&Flow) -> T,
    varied: impl Fn(&Flow) -> K,
) -> Option<(T, usize, Vec<&'a Flow>)> {
    let mut groups: BTreeMap<T, Vec<Event<K>>> = BTreeMap::new();
    for f in fs.iter().copied().filter(|f| (f.proto == TCP || f.proto == UDP) && f.failed()) {
        groups.entry(target(f)).or_default().push((f.first_seen_us, varied(f), f));
    }
    groups
        .into_iter()
        .map(|(t, ev)| (t, densest_window(&ev, cfg.scan.window_secs * 1_000_000)))
        .max_by_key(|(t, (n, _))| (*n, std::cmp::Reverse(*t)))
        .map(|(t, (count, window))| (t, count, window))
}

fn vertical_scan(src: IpAddr, fs: &[&Flow], cfg: &Config) -> Option<Finding> {
    let need = cfg.scan.vertical_ports;
    let (host, count, window) = densest_scan(fs, cfg, |f| f.server.ip(), |f| (f.proto, f.server.port()))?;
    (count >= need).then(|| {
        let (first, last) = span(&window);
        Finding {
            source: src,
            detector: Detector::VerticalScan,
            threshold: format!("{count} failed ports on one host >= {need} within {}s", cfg.scan.window_secs),
            counts: format!("{count} distinct ports of {host} failed"),
            first_seen_us: first,
            last_seen_us: last,
            examples: examples(&window),
            confidence: confidence(count as f64, need as f64),
        }
    })
}

fn horizontal_scan(src: IpAddr, fs: &[&Flow], cfg: &Config) -> Option<Finding> {
    let need = cfg.scan.horizontal_hosts;
    let ((proto, port), count, window) = densest_scan(fs, cfg, |f| (f.proto, f.server.port()), |f| f.server.ip())?;
    (count >= need).then(|| {
        let (first, last) = span(&window);
        Finding {
            source: src,
            detector: Detector::HorizontalScan,
            threshold: format!("{count} failed hosts on one port >= {need} within {}s", cfg.scan.window_secs),
            counts: format!("{count} distinct hosts failed on {}/{port}", super::flows::proto_label(proto)),
            first_seen_us: first,
            last_seen_us: last,
            examples: examples(&window),
            confidence: confidence(count as f64, need as f64),
        }
    })
}

fn syn_flood(src: IpAddr, fs: &[&Flow], cfg: &Config) -> Option<Finding> {
    let c = &cfg.syn_flood;
    let tcp: Vec<&Flow> = fs.iter().copied().filter(|f| f.proto == TCP).collect();
    let attempts: u64 = tcp.iter().map(|f| f.connections).sum();
    let half: Vec<&Flow> = tcp.iter().copied().filter(|f| !f.handshake_completed()).collect();
    let half_open: u64 = half.iter().map(|f| f.connections).sum();
    if half_open < c.min_half_open || attempts == 0 {
        return None;
    }
    let ratio = half_open as f64 / attempts as f64;
    let (first, last) = span(&tcp);
    let secs = ((last - first) as f64 / 1e6).max(1.0);
    let rate = attempts as f64 / secs;
    (ratio >= c.half_open_ratio && rate >= c.min_rate).then(|| Finding {
        source: src,
        detector: Detector::SynFlood,
        threshold: format!(
            "{half_open} half-open >= {}, ratio {ratio:.2} >= {}, {rate:.1}/s >= {}/s",
            c.min_half_open, c.half_open_ratio, c.min_rate
        ),
        counts: format!("{attempts} TCP attempts, {half_open} never completed the handshake"),
        first_seen_us: first,
        last_seen_us: last,
        examples: examples(&half),
        confidence: confidence(half_open as f64, c.min_half_open as f64).min(confidence(rate, c.min_rate)),
    })
}

fn brute_force(src: IpAddr, fs: &[&Flow], cfg: &Config) -> Option<Finding> {
    let c = &cfg.brute_force;
    let mut per_service: BTreeMap<(u8, SocketAddr), Vec<&Flow>> = BTreeMap::new();
    for f in fs
        .iter()
        .copied()
        .filter(|f| f.proto == TCP && f.handshake_completed() && f.duration_us() <= c.max_duration_secs * 1_000_000)
    {
        per_service.entry((f.proto, f.server)).or_default().push(f);
    }
    let window_us = c.window_secs * 1_000_000;
    let mut best: Option<(u64, SocketAddr, Vec<&Flow>)> = None;
    for ((_, server), flows) in per_service {
        // Connections (merged records count several) inside the densest window.
        let mut lo = 0;
        let mut sum = 0u64;
        for hi in 0..flows.len() {
            sum += flows[hi].connections;
            while flows[hi].first_seen_us - flows[lo].first_seen_us > window_us {
                sum -= flows[lo].connections;
                lo += 1;
            }
            if best.as_ref().is_none_or(|(n, _, _)| sum > *n) {
                best = Some((sum, server, flows[lo..=hi].to_vec()));
            }
        }
    }
    let (count, server, window) = best?;
    (count >= c.min_connections).then(|| {
        let (first, last) = span(&window);
        Finding {
            source: src,
            detector: Detector::BruteForce,
            threshold: format!("{count} short connections >= {} within {}s", c.min_connections, c.window_secs),
            counts: format!("{count} connections to tcp {server}, each under {}s", c.max_duration_secs),
            first_seen_us: first,
            last_seen_us: last,
            examples: examples(&window),
            confidence: confidence(count as f64, c.min_connections as f64),
        }
    })
}

fn udp_scan(src: IpAddr, fs: &[&Flow], cfg: &Config) -> Option<Finding> {
    let need = cfg.udp_scan.min_unreachable;
    let hits: Vec<&Flow> =
        fs.iter().copied().filter(|f| f.proto == UDP && f.icmp_error.is_some_and(|e| e.port_unreachable())).collect();
    let distinct: BTreeSet<SocketAddr> = hits.iter().map(|f| f.server).collect();
    (distinct.len() >= need).then(|| {
        let (first, last) = span(&hits);
        let hosts: BTreeSet<IpAddr> = distinct.iter().map(|s| s.ip()).collect();
        Finding {
            source: src,
            detector: Detector::UdpScan,
            threshold: format!("{} ports answered ICMP port unreachable >= {need}", distinct.len()),
            counts: format!("{} udp ports on {} host(s) closed", distinct.len(), hosts.len()),
            first_seen_us: first,
            last_seen_us: last,
            examples: examples(&hits),
            confidence: confidence(distinct.len() as f64, need as f64),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::learn::flows::{ConnState, Counters, IcmpError};

    /// A flow as a conntrack reader would build it.
    fn flow(client: &str, server: &str, proto: u8, state: ConnState, history: &str, t_ms: u64) -> Flow {
        let mut f = Flow::new(proto, client.parse().unwrap(), server.parse().unwrap(), t_ms * 1000);
        f.state = state;
        f.history = history.into();
        f.attempt_seen = true;
        f.orig = Counters { packets: 3, bytes: 180 };
        f.resp = Counters { packets: u64::from(state != ConnState::S0), bytes: 60 };
        f.last_seen_us = f.first_seen_us + 500_000;
        f
    }

    fn detectors(flows: &[Flow]) -> Vec<(String, Detector)> {
        detect(flows, &Config::default()).into_iter().map(|f| (f.source.to_string(), f.detector)).collect()
    }

    #[test]
    fn syn_flood_needs_many_fast_half_open_attempts() {
        let flood: Vec<Flow> = (0..500)
            .map(|i| flow(&format!("10.0.0.66:{}", 1024 + i), "10.0.0.1:80", TCP, ConnState::S0, "S", i * 5))
            .collect();
        assert_eq!(detectors(&flood), [("10.0.0.66".to_string(), Detector::SynFlood)]);
        // The same attempts spread over an hour are not a flood.
        let slow: Vec<Flow> = (0..500)
            .map(|i| flow(&format!("10.0.0.66:{}", 1024 + i), "10.0.0.1:80", TCP, ConnState::S0, "S", i * 7_200))
            .collect();
        assert_eq!(detectors(&slow), []);
    }

    #[test]
    fn brute_force_is_many_short_connections_to_one_service() {
        let guesses: Vec<Flow> = (0..30)
            .map(|i| flow(&format!("10.0.0.7:{}", 2000 + i), "10.0.0.1:22", TCP, ConnState::SF, "ShADadFf", i * 1000))
            .collect();
        let found = detect(&guesses, &Config::default());
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].detector, Detector::BruteForce);
        assert!(found[0].counts.starts_with("30 connections to tcp 10.0.0.1:22"), "{}", found[0].counts);
        // A handful of sessions is a user, not a brute force.
        assert_eq!(detectors(&guesses[..5]), []);
    }

    #[test]
    fn udp_scan_from_port_unreachable_replies() {
        let probes: Vec<Flow> = (0..8u16)
            .map(|i| {
                let mut f =
                    flow("10.0.0.9:5353", &format!("10.0.0.1:{}", 100 + i), UDP, ConnState::S0, "D", u64::from(i));
                f.icmp_error = Some(IcmpError { icmp_type: 3, code: 3, from: "10.0.0.1".parse().unwrap() });
                f
            })
            .collect();
        assert!(detectors(&probes).contains(&("10.0.0.9".to_string(), Detector::UdpScan)));
        assert!(!detectors(&probes[..4]).iter().any(|(_, d)| *d == Detector::UdpScan));
    }

    #[test]
    fn trw_flags_failures_and_spares_a_busy_benign_client() {
        let scan: Vec<Flow> =
            (0..6).map(|i| flow("10.0.0.5:4000", &format!("10.0.1.{i}:445"), TCP, ConnState::S0, "S", i)).collect();
        assert_eq!(detectors(&scan), [("10.0.0.5".to_string(), Detector::Trw)]);
        // Twenty hosts that answer, then three that do not: benign.
        let mut busy: Vec<Flow> = (0..20)
            .map(|i| flow("10.0.0.6:4000", &format!("10.0.2.{i}:443"), TCP, ConnState::SF, "ShADadFf", i))
            .collect();
        busy.extend((20..23).map(|i| flow("10.0.0.6:4000", &format!("10.0.2.{i}:443"), TCP, ConnState::S0, "S", i)));
        assert_eq!(detectors(&busy), []);
    }
}
