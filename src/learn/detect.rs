//! Deterministic, explainable detectors over flows. Each finding names its
//! detector, the threshold it crossed, its counts, when, and example flows.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hash};
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use super::config::Config;
use super::flows::{ConnState, Flow, KeyHasher, ICMP, ICMPV6, TCP, UDP};
use super::retain::Retained;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Detector {
    Trw,
    VerticalScan,
    HorizontalScan,
    SynFlood,
    BruteForce,
    UdpScan,
    IcmpFlood,
    PingSweep,
    ServiceProbe,
    DistributedScan,
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
            Detector::IcmpFlood => "icmp-flood",
            Detector::PingSweep => "ping-sweep",
            Detector::ServiceProbe => "service-probe",
            Detector::DistributedScan => "distributed-scan",
        }
    }

    /// Which label a source gets when several detectors fire: floods and
    /// brute force say more than a scan, a specific scan more than TRW.
    fn precedence(self) -> u8 {
        match self {
            Detector::SynFlood => 0,
            Detector::IcmpFlood => 1,
            Detector::BruteForce => 2,
            Detector::ServiceProbe => 3,
            Detector::UdpScan => 4,
            Detector::VerticalScan => 5,
            Detector::HorizontalScan => 6,
            Detector::PingSweep => 7,
            Detector::Trw => 8,
            Detector::DistributedScan => 9,
        }
    }
}

/// One detector's verdict on one source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
    /// Other detectors that fired on the same source (their findings are
    /// folded into this one: one label per source).
    pub also: Vec<Detector>,
}

/// How far beyond its threshold a value is, as a confidence in [0.5, 0.99].
pub(crate) fn confidence(value: f64, threshold: f64) -> f64 {
    let r = (value / threshold.max(f64::MIN_POSITIVE)).max(1.0);
    (1.0 - 0.5 / r).min(0.99)
}

/// A detector's verdict on one source's attempts.
type DetectorFn = fn(&Source, &Config) -> Option<Finding>;

/// Every per-source detector.
const DETECTORS: [DetectorFn; 9] =
    [trw, vertical_scan, horizontal_scan, syn_flood, brute_force, udp_scan, icmp_flood, ping_sweep, service_probe];

/// One source as the detectors see it: the attempts they need one by one
/// (see [`Attempts::add`]), in time order, its first contact with each
/// host (TRW), and counts over all of them.
pub struct Source<'a> {
    pub ip: IpAddr,
    pub flows: Vec<&'a Flow>,
    /// The earliest attempt to each host, in time order.
    pub first_contacts: Vec<&'a Flow>,
    /// Servers whose probes were cut short (see [`super::retain`]): none
    /// kept start at or after this time.
    pub probe_horizons: BTreeMap<SocketAddr, u64>,
    pub counts: SourceCounts,
}

/// Counts over every attempt of a source, kept or not.
#[derive(Clone, Debug, Default)]
pub struct SourceCounts {
    /// TCP connections attempted (the SYN flood's share of half-open ones).
    pub tcp_attempts: u64,
    /// TCP/UDP connections attempted and failed per network (see `learn::distributed`).
    pub tried: HashMap<ipnet::IpNet, NetAttempts, BuildHasherDefault<KeyHasher>>,
    /// TCP attempts that never completed the handshake (the SYN flood).
    pub half_open: HalfOpen,
}

/// A source's TCP/UDP attempts to one network.
#[derive(Clone, Copy, Debug)]
pub struct NetAttempts {
    pub tried: u64,
    pub failed: u64,
    /// First start and last packet of the failures.
    pub first_failure_us: u64,
    pub last_failure_us: u64,
}

impl Default for NetAttempts {
    fn default() -> Self {
        NetAttempts { tried: 0, failed: 0, first_failure_us: u64::MAX, last_failure_us: 0 }
    }
}

/// A source's half-open TCP attempts: the count, the targets, when they
/// started, and the earliest three (the examples).
#[derive(Clone, Debug, Default)]
pub struct HalfOpen {
    pub count: u64,
    pub targets: BTreeSet<SocketAddr>,
    pub first_us: u64,
    pub last_us: u64,
    pub earliest: Vec<Flow>,
}

impl HalfOpen {
    fn add(&mut self, f: &Flow) {
        self.first_us = if self.count == 0 { f.first_seen_us } else { self.first_us.min(f.first_seen_us) };
        self.last_us = self.last_us.max(f.first_seen_us);
        self.count += f.connections;
        self.targets.insert(f.server);
        let at = self.earliest.partition_point(|e| detect_order(e) <= detect_order(f));
        if at < 3 {
            self.earliest.insert(at, f.clone());
            self.earliest.truncate(3);
        }
    }

    fn merge(&mut self, other: HalfOpen) {
        if other.count == 0 {
            return;
        }
        self.first_us = if self.count == 0 { other.first_us } else { self.first_us.min(other.first_us) };
        self.last_us = self.last_us.max(other.last_us);
        self.count += other.count;
        self.targets.extend(other.targets);
        self.earliest.extend(other.earliest);
        self.earliest.sort_by_cached_key(detect_order);
        self.earliest.truncate(3);
    }
}

impl SourceCounts {
    fn add(&mut self, f: &Flow, cfg: &Config) {
        if f.proto == TCP {
            self.tcp_attempts += f.connections;
            if !f.handshake_completed() {
                self.half_open.add(f);
            }
        }
        if (f.proto == TCP || f.proto == UDP) && unicast(f.server.ip()) {
            let net = super::distributed::network(f.server.ip(), &cfg.distributed_scan);
            let n = self.tried.entry(net).or_default();
            n.tried += f.connections;
            if f.failed() {
                n.failed += f.connections;
                n.first_failure_us = n.first_failure_us.min(f.first_seen_us);
                n.last_failure_us = n.last_failure_us.max(f.last_seen_us);
            }
        }
    }

    fn merge(&mut self, other: SourceCounts) {
        self.tcp_attempts += other.tcp_attempts;
        self.half_open.merge(other.half_open);
        for (net, o) in other.tried {
            let n = self.tried.entry(net).or_default();
            n.tried += o.tried;
            n.failed += o.failed;
            n.first_failure_us = n.first_failure_us.min(o.first_failure_us);
            n.last_failure_us = n.last_failure_us.max(o.last_failure_us);
        }
    }
}

/// What the detectors need of a stream of closed flows, gathered as they
/// close so the flows themselves can go: the counts of every source, the
/// first contact of each source with each host (TRW), the failures and
/// service probes in bounded form ([`Retained`]), and a yes for each other
/// flow some detector reads one by one ([`needed`]); the caller keeps
/// those. A source's answered attempts that no detector reads (most of a
/// busy client's traffic) leave only counts behind.
#[derive(Default)]
pub struct Attempts {
    counts: HashMap<IpAddr, SourceCounts, BuildHasherDefault<KeyHasher>>,
    /// Per (source, host): its earliest contact.
    first_contacts: HashMap<(IpAddr, IpAddr), Flow, BuildHasherDefault<KeyHasher>>,
    retained: Retained,
}

/// The order the detectors read a source's flows in: by first packet,
/// then by endpoints; only identical records tie.
pub(crate) fn detect_order(f: &Flow) -> impl Ord {
    (
        f.first_seen_us,
        f.server,
        f.client,
        f.proto,
        f.last_seen_us,
        f.state,
        f.connections,
        f.orig.packets,
        f.resp.packets,
    )
}

/// Whether a detector reads `f` itself, not only its source's counts: a
/// failed attempt (scans, distributed scans), a TCP attempt that never
/// completed its handshake (SYN flood), anything to an authentication
/// port (brute force and its session totals), ICMP (floods, sweeps), UDP
/// answered port unreachable (UDP scan), and a port probe or a short
/// one-request connection (service probe). Only attempts count.
pub fn needed(f: &Flow, cfg: &Config) -> bool {
    f.attempt_seen
        && (f.failed()
            || (f.proto == TCP && !f.handshake_completed())
            || cfg.brute_force.services.contains_key(&f.server.port())
            || is_icmp(f)
            || (f.proto == UDP && f.icmp_error.is_some_and(|e| e.port_unreachable()))
            || (f.proto == TCP && (discovery(f) || probe_connection(f, cfg.service_probe.max_duration_ms * 1000))))
}

/// The window the scan detectors' failures are thinned with (see [`Retained`]).
fn thin_window_us(cfg: &Config) -> u64 {
    cfg.scan.window_secs.min(cfg.scan.slow_window_secs) * 1_000_000
}

impl Attempts {
    /// Counts `f`; true when the caller must keep it for [`Attempts::detect`].
    pub fn add(&mut self, f: &Flow, cfg: &Config) -> bool {
        if !f.attempt_seen {
            return false;
        }
        let source = f.client.ip();
        self.counts.entry(source).or_default().add(f, cfg);
        if contact(f) {
            self.first_contact(source, f);
        }
        if !needed(f, cfg) {
            return false;
        }
        // Authentication services, ICMP and port-unreachable answers go to
        // detectors that add records up: those flows stay whole.
        let whole = cfg.brute_force.services.contains_key(&f.server.port())
            || is_icmp(f)
            || f.icmp_error.is_some_and(|e| e.port_unreachable());
        if whole {
            return true;
        }
        if (f.proto == TCP || f.proto == UDP) && f.failed() {
            self.retained.failure(f.clone(), thin_window_us(cfg));
        } else if discovery(f) {
            self.retained.discovery(f.clone());
        } else if f.proto == TCP && probe_connection(f, cfg.service_probe.max_duration_ms * 1000) {
            self.retained.probe(f.clone());
        }
        // Anything else needed is half-open (counted in `SourceCounts::half_open`)
        // or a failure no detector reads (a protocol with no answer).
        false
    }

    /// Flow records held for the detectors (not those the caller keeps).
    pub fn held(&self) -> usize {
        self.first_contacts.len()
            + self.retained.held()
            + self.counts.values().map(|c| c.half_open.earliest.len()).sum::<usize>()
    }

    fn first_contact(&mut self, source: IpAddr, f: &Flow) {
        use std::collections::hash_map::Entry;
        match self.first_contacts.entry((source, f.server.ip())) {
            Entry::Vacant(slot) => {
                slot.insert(f.clone());
            }
            Entry::Occupied(mut slot) => {
                // Most later flows start later: decided without building the orders.
                let held = slot.get().first_seen_us;
                if f.first_seen_us < held || (f.first_seen_us == held && detect_order(f) < detect_order(slot.get())) {
                    slot.insert(f.clone());
                }
            }
        }
    }

    /// Adds another shard's attempts.
    pub fn merge(&mut self, other: Attempts, cfg: &Config) {
        for (ip, c) in other.counts {
            self.counts.entry(ip).or_default().merge(c);
        }
        for ((source, _), f) in other.first_contacts {
            self.first_contact(source, &f);
        }
        self.retained.merge(other.retained, thin_window_us(cfg));
    }

    /// Run every detector over the kept flows (those [`Attempts::add`] said
    /// yes to) and the first contacts: one finding per source (the most
    /// telling label, the others listed in [`Finding::also`]), sorted by
    /// source. Sources run in parallel (a few sources often hold most flows).
    pub fn detect<'a>(&'a mut self, kept: impl IntoIterator<Item = &'a Flow>, cfg: &Config) -> Vec<Finding> {
        use rayon::prelude::*;
        let mut by_source: BTreeMap<IpAddr, (Vec<&Flow>, Vec<&Flow>)> = BTreeMap::new();
        for f in kept.into_iter().chain(self.retained.flows()).filter(|f| f.attempt_seen) {
            by_source.entry(f.client.ip()).or_default().0.push(f);
        }
        for f in self.first_contacts.values() {
            by_source.entry(f.client.ip()).or_default().1.push(f);
        }
        let (counts, retained) = (&mut self.counts, &self.retained);
        let mut sources: Vec<Source> = by_source
            .into_iter()
            .map(|(ip, (flows, first_contacts))| {
                let probe_horizons =
                    flows.iter().filter_map(|f| Some((f.server, retained.probe_horizon(ip, f.server)?))).collect();
                Source { ip, flows, first_contacts, probe_horizons, counts: counts.remove(&ip).unwrap_or_default() }
            })
            .collect();
        sources.par_iter_mut().for_each(|s| {
            s.flows.sort_by_cached_key(|f| detect_order(f));
            s.first_contacts.sort_by_cached_key(|f| detect_order(f));
        });
        // Every (source, detector) pair is its own task: one source often holds
        // most flows, and its detectors then still share the cores.
        let found: Vec<Vec<Option<Finding>>> =
            sources.par_iter().map(|s| DETECTORS.par_iter().map(|d| d(s, cfg)).collect()).collect();
        let mut findings: Vec<Finding> = found
            .into_iter()
            .filter_map(|found| {
                let mut found: Vec<Finding> = found.into_iter().flatten().collect();
                found.sort_by_key(|f| f.detector.precedence());
                let mut iter = found.into_iter();
                let mut first = iter.next()?;
                first.also = iter.map(|f| f.detector).collect();
                Some(first)
            })
            .collect();
        // Sources quiet on their own may still be splitting a scan between them.
        let flagged: BTreeSet<IpAddr> = findings.iter().map(|f| f.source).collect();
        findings.extend(super::distributed::distributed_scans(&sources, &flagged, cfg));
        findings.sort_by_key(|f| f.source);
        findings
    }
}

/// Run every detector over `flows` (see [`Attempts::detect`]).
pub fn detect(flows: &[Flow], cfg: &Config) -> Vec<Finding> {
    let mut attempts = Attempts::default();
    let kept: Vec<&Flow> = flows.iter().filter(|f| attempts.add(f, cfg)).collect();
    attempts.detect(kept, cfg)
}

/// Events per second between the first and the last of `n` events, exact
/// to the microsecond; `None` when they all fell in the same microsecond.
pub fn rate(n: u64, first_us: u64, last_us: u64) -> Option<f64> {
    let span = last_us.saturating_sub(first_us);
    (span > 0 && n > 1).then(|| (n - 1) as f64 * 1e6 / span as f64)
}

/// `31562.4/s over 0.095s` (or `all within 1 µs`).
pub fn fmt_rate(n: u64, first_us: u64, last_us: u64) -> String {
    match rate(n, first_us, last_us) {
        Some(r) => format!("{r:.1}/s over {}", fmt_secs(last_us - first_us)),
        None => "all within 1 µs".into(),
    }
}

/// `0.095s`, `66.2s`, `20m05s`.
pub fn fmt_secs(us: u64) -> String {
    let s = us as f64 / 1e6;
    if s < 600.0 {
        format!("{s:.3}s").replace(".000s", "s")
    } else {
        format!("{}m{:02}s", us / 60_000_000, us / 1_000_000 % 60)
    }
}

pub(crate) fn examples(fs: &[&Flow]) -> Vec<String> {
    fs.iter().take(3).map(|f| f.describe()).collect()
}

fn span(fs: &[&Flow]) -> (u64, u64) {
    let first = fs.iter().map(|f| f.first_seen_us).min().unwrap_or(0);
    let last = fs.iter().map(|f| f.last_seen_us).max().unwrap_or(0);
    (first, last)
}

/// Multicast and broadcast destinations are announcements, not contacts.
pub(crate) fn unicast(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !v4.is_multicast() && !v4.is_broadcast(),
        IpAddr::V6(v6) => !v6.is_multicast(),
    }
}

/// An attempt that could have been answered by the host it went to: TCP,
/// UDP or ICMP to a unicast address. (IGMP group joins, neighbour
/// discovery and one-way tunnels such as ESP never get an answer.)
fn contact(f: &Flow) -> bool {
    matches!(f.proto, TCP | UDP | ICMP | ICMPV6) && unicast(f.server.ip())
}

/// Sequential hypothesis test over first contacts to new hosts. After a
/// "benign" decision the walk restarts, so a source that behaves first and
/// scans later is still caught.
fn trw(s: &Source, cfg: &Config) -> Option<Finding> {
    let (src, fs) = (s.ip, s.first_contacts.as_slice());
    let t = &cfg.trw;
    let upper = t.detection / t.false_positive;
    let lower = (1.0 - t.detection) / (1.0 - t.false_positive);
    let mut ratio = 1.0;
    let mut seen: BTreeSet<IpAddr> = BTreeSet::new();
    let mut first_contacts: Vec<&Flow> = Vec::new();
    // (ratio, first contacts so far) when the walk crossed the upper bound.
    let mut decided: Option<(f64, usize)> = None;
    for f in fs.iter().filter(|f| contact(f)) {
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
        also: Vec::new(),
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
    window_secs: u64,
    target: impl Fn(&Flow) -> T,
    varied: impl Fn(&Flow) -> K,
) -> Option<(T, usize, Vec<&'a Flow>)> {
    let mut groups: BTreeMap<T, Vec<Event<K>>> = BTreeMap::new();
    for f in fs.iter().copied().filter(|f| (f.proto == TCP || f.proto == UDP) && f.failed()) {
        groups.entry(target(f)).or_default().push((f.first_seen_us, varied(f), f));
    }
    groups
        .into_iter()
        .map(|(t, ev)| (t, densest_window(&ev, window_secs * 1_000_000)))
        .max_by_key(|(t, (n, _))| (*n, std::cmp::Reverse(*t)))
        .map(|(t, (count, window))| (t, count, window))
}

/// Failed ports of one host within the scan window, or, for a slow scan
/// (`nmap -T1`, a port every few minutes), within the slow window.
fn vertical_scan(s: &Source, cfg: &Config) -> Option<Finding> {
    let (src, fs) = (s.ip, s.flows.as_slice());
    let need = cfg.scan.vertical_ports;
    let ports = |f: &Flow| (f.proto, f.server.port());
    // The slow window holds at least as many as the short one: when it
    // misses, so does the short one, and a benign source costs one pass.
    let slow = densest_scan(fs, cfg.scan.slow_window_secs, |f| f.server.ip(), ports)?;
    if slow.1 < need {
        return None;
    }
    let (secs, (host, count, window)) = match densest_scan(fs, cfg.scan.window_secs, |f| f.server.ip(), ports) {
        Some(fast) if fast.1 >= need => (cfg.scan.window_secs, fast),
        _ => (cfg.scan.slow_window_secs, slow),
    };
    (count >= need).then(|| {
        let (first, last) = span(&window);
        Finding {
            source: src,
            detector: Detector::VerticalScan,
            threshold: format!("{count} failed ports on one host >= {need} within {secs}s"),
            counts: format!("{count} distinct ports of {host} failed"),
            first_seen_us: first,
            last_seen_us: last,
            examples: examples(&window),
            confidence: confidence(count as f64, need as f64),
            also: Vec::new(),
        }
    })
}

fn horizontal_scan(s: &Source, cfg: &Config) -> Option<Finding> {
    let (src, fs) = (s.ip, s.flows.as_slice());
    let need = cfg.scan.horizontal_hosts;
    let ((proto, port), count, window) =
        densest_scan(fs, cfg.scan.window_secs, |f| (f.proto, f.server.port()), |f| f.server.ip())?;
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
            also: Vec::new(),
        }
    })
}

fn syn_flood(s: &Source, cfg: &Config) -> Option<Finding> {
    let src = s.ip;
    let c = &cfg.syn_flood;
    let attempts = s.counts.tcp_attempts;
    let h = &s.counts.half_open;
    let half_open = h.count;
    if half_open < c.min_half_open || attempts == 0 {
        return None;
    }
    let targets = &h.targets;
    let per_target = half_open as f64 / targets.len() as f64;
    let ratio = half_open as f64 / attempts as f64;
    let (first, last) = (h.first_us, h.last_us);
    let half: Vec<&Flow> = h.earliest.iter().collect();
    let rate = rate(half_open, first, last).unwrap_or(f64::INFINITY);
    (ratio >= c.half_open_ratio && rate >= c.min_rate && per_target >= c.min_per_target).then(|| Finding {
        source: src,
        detector: Detector::SynFlood,
        threshold: format!(
            "{half_open} half-open >= {}, ratio {ratio:.2} >= {}, {rate:.1}/s >= {}/s, {per_target:.0} per target >= {}",
            c.min_half_open, c.half_open_ratio, c.min_rate, c.min_per_target
        ),
        counts: format!(
            "{attempts} TCP attempts to {} target(s), {half_open} never completed the handshake ({})",
            targets.len(),
            fmt_rate(half_open, first, last)
        ),
        first_seen_us: first,
        last_seen_us: last,
        examples: examples(&half),
        confidence: confidence(half_open as f64, c.min_half_open as f64).min(confidence(rate, c.min_rate)),
        also: Vec::new(),
    })
}

/// A completed session to an authentication service that ended before a
/// login could have worked: refused or reset by the server, or short and
/// with fewer server bytes than a successful login sends.
pub(crate) fn failed_login(f: &Flow, cfg: &Config) -> bool {
    let c = &cfg.brute_force;
    let Some(&success_bytes) = c.services.get(&f.server.port()) else { return false };
    if f.proto != TCP {
        return false;
    }
    if f.state == ConnState::REJ || (f.state == ConnState::RSTR && f.handshake_completed()) {
        return true;
    }
    // Without byte counters (conntrack without accounting) a session says nothing.
    let per_conn = f.resp.bytes / f.connections.max(1);
    f.handshake_completed()
        && f.resp.bytes > 0
        && per_conn < success_bytes
        && f.duration_us() / f.connections.max(1) <= c.max_duration_secs * 1_000_000
}

fn brute_force(s: &Source, cfg: &Config) -> Option<Finding> {
    let (src, fs) = (s.ip, s.flows.as_slice());
    let c = &cfg.brute_force;
    let mut per_service: BTreeMap<SocketAddr, Vec<&Flow>> = BTreeMap::new();
    for f in fs.iter().copied().filter(|f| failed_login(f, cfg)) {
        per_service.entry(f.server).or_default().push(f);
    }
    let window_us = c.window_secs * 1_000_000;
    let mut best: Option<(u64, SocketAddr, Vec<&Flow>)> = None;
    for (server, flows) in per_service {
        // Failures (merged records count several) inside the densest window.
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
    (count >= c.min_failures).then(|| {
        let (first, last) = span(&window);
        let refused: u64 = window.iter().filter(|f| f.state == ConnState::REJ).map(|f| f.connections).sum();
        let success = c.services[&server.port()];
        let total: u64 = fs
            .iter()
            .filter(|f| f.server == server && f.first_seen_us >= first && f.first_seen_us <= last)
            .map(|f| f.connections)
            .sum();
        let starts = window.iter().map(|f| f.first_seen_us).max().unwrap_or(first);
        Finding {
            source: src,
            detector: Detector::BruteForce,
            threshold: format!("{count} failed logins >= {} within {}s", c.min_failures, c.window_secs),
            counts: format!(
                "{count} of {total} sessions to tcp {server} failed ({refused} refused or reset, {} ended under {success} server bytes and {}s; {})",
                count - refused,
                c.max_duration_secs,
                fmt_rate(count, first, starts).replace("/s", " per second")
            ),
            first_seen_us: first,
            last_seen_us: last,
            examples: examples(&window),
            confidence: confidence(count as f64, c.min_failures as f64),
            also: Vec::new(),
        }
    })
}

fn udp_scan(s: &Source, cfg: &Config) -> Option<Finding> {
    let (src, fs) = (s.ip, s.flows.as_slice());
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
            also: Vec::new(),
        }
    })
}

fn is_icmp(f: &Flow) -> bool {
    f.proto == ICMP || f.proto == ICMPV6
}

fn icmp_flood(s: &Source, cfg: &Config) -> Option<Finding> {
    let (src, fs) = (s.ip, s.flows.as_slice());
    let c = &cfg.icmp_flood;
    let icmp: Vec<&Flow> = fs.iter().copied().filter(|f| is_icmp(f)).collect();
    let packets: u64 = icmp.iter().map(|f| f.orig.packets).sum();
    if packets < c.min_packets {
        return None;
    }
    // The busiest flow (one ping run) decides the rate; a slow ping left
    // running all day next to it does not dilute it.
    let busiest = icmp.iter().max_by_key(|f| f.orig.packets)?;
    let n = busiest.orig.packets;
    let r = rate(n, busiest.first_seen_us, busiest.last_seen_us).unwrap_or(f64::INFINITY);
    let hosts: BTreeSet<IpAddr> = icmp.iter().map(|f| f.server.ip()).collect();
    (n >= c.min_packets && r >= c.min_rate).then(|| Finding {
        source: src,
        detector: Detector::IcmpFlood,
        threshold: format!(
            "{n} packets >= {} at {} >= {}/s",
            c.min_packets,
            if r.is_finite() { format!("{r:.1}/s") } else { "no measurable interval".into() },
            c.min_rate
        ),
        counts: format!(
            "{packets} ICMP packets to {} host(s); busiest run {n} packets to {} ({})",
            hosts.len(),
            busiest.server.ip(),
            fmt_rate(n, busiest.first_seen_us, busiest.last_seen_us)
        ),
        first_seen_us: busiest.first_seen_us,
        last_seen_us: busiest.last_seen_us,
        examples: examples(&[busiest]),
        confidence: confidence(r, c.min_rate).min(confidence(n as f64, c.min_packets as f64)),
        also: Vec::new(),
    })
}

fn ping_sweep(s: &Source, cfg: &Config) -> Option<Finding> {
    let (src, fs) = (s.ip, s.flows.as_slice());
    let c = &cfg.ping_sweep;
    let events: Vec<Event<IpAddr>> =
        fs.iter().copied().filter(|f| is_icmp(f)).map(|f| (f.first_seen_us, f.server.ip(), f)).collect();
    let (count, window) = densest_window(&events, c.window_secs * 1_000_000);
    (count >= c.min_hosts).then(|| {
        let (first, last) = span(&window);
        let answered = window.iter().filter(|f| f.resp.packets > 0).count();
        Finding {
            source: src,
            detector: Detector::PingSweep,
            threshold: format!("{count} hosts pinged >= {} within {}s", c.min_hosts, c.window_secs),
            counts: format!("{count} distinct hosts sent ICMP, {answered} answered ({})", fmt_secs(last - first)),
            first_seen_us: first,
            last_seen_us: last,
            examples: examples(&window),
            confidence: confidence(count as f64, c.min_hosts as f64),
            also: Vec::new(),
        }
    })
}

/// Port discovery before a version probe: a handshake the client reset or
/// left without sending anything (`nmap -sS` / `-sT`).
fn discovery(f: &Flow) -> bool {
    f.proto == TCP && f.answered() && !f.history.contains('D') && f.history.contains('R')
}

/// A version probe's connection: answered, short, one request.
fn probe_connection(f: &Flow, max_us: u64) -> bool {
    f.handshake_completed() && f.connections == 1 && f.history.contains('D') && f.duration_us() <= max_us
}

fn service_probe(s: &Source, cfg: &Config) -> Option<Finding> {
    let (src, fs) = (s.ip, s.flows.as_slice());
    let c = &cfg.service_probe;
    let window_us = c.window_secs * 1_000_000;
    let mut per_service: BTreeMap<SocketAddr, Vec<&Flow>> = BTreeMap::new();
    for f in fs.iter().copied().filter(|f| f.proto == TCP) {
        per_service.entry(f.server).or_default().push(f);
    }
    per_service
        .into_iter()
        .filter_map(|(server, flows)| {
            let found = flows.iter().copied().find(|d| discovery(d))?;
            // Probes were cut short before the window ends: not judged (see `retain`).
            if s.probe_horizons.get(&server).is_some_and(|h| found.first_seen_us + window_us >= *h) {
                return None;
            }
            // The probes: short one-request connections in the window after discovery.
            let probes: Vec<&Flow> = flows
                .iter()
                .copied()
                .filter(|f| {
                    f.first_seen_us >= found.first_seen_us
                        && f.first_seen_us - found.first_seen_us <= window_us
                        && probe_connection(f, c.max_duration_ms * 1000)
                })
                .collect();
            let sizes: BTreeSet<u64> = probes.iter().map(|f| f.orig.bytes).collect();
            let n = probes.len() as u64;
            // Every probe different: a client repeating its request is not probing.
            let distinct = sizes.len();
            (n >= c.min_probes && distinct as f64 >= c.distinct_ratio * n as f64)
                .then_some((server, found, probes, distinct))
        })
        .max_by_key(|(_, _, probes, _)| probes.len())
        .map(|(server, found, probes, distinct)| {
            let last = probes.iter().map(|f| f.last_seen_us).max().unwrap_or(found.last_seen_us);
            let n = probes.len();
            let mut ex = vec![found];
            ex.extend(probes.iter().take(2));
            Finding {
                source: src,
                detector: Detector::ServiceProbe,
                threshold: format!(
                    "{n} one-request connections >= {} with {distinct} distinct requests (>= {:.0}%) within {}s of a port probe",
                    c.min_probes,
                    c.distinct_ratio * 100.0,
                    c.window_secs
                ),
                counts: format!(
                    "port probe of tcp {server} ({}), then {n} probes in {}",
                    found.history,
                    fmt_secs(last - found.first_seen_us)
                ),
                first_seen_us: found.first_seen_us,
                last_seen_us: last,
                examples: examples(&ex),
                confidence: confidence(n as f64, c.min_probes as f64),
                also: Vec::new(),
            }
        })
}

/// A SYN flood on one service from many sources, each too small to flag
/// (spoofed addresses). The answer is a rate limit on the service.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SpoofedFlood {
    pub target: SocketAddr,
    pub half_open: u64,
    pub sources: usize,
    /// Half-open attempts per second, exact.
    pub rate: f64,
    pub first_seen_us: u64,
    pub last_seen_us: u64,
    /// New connections per second that the service's real clients made at most.
    pub benign_rate: f64,
    pub threshold: String,
}

/// Services flooded with half-open attempts from many sources.
pub fn spoofed_floods(flows: &[Flow], cfg: &Config) -> Vec<SpoofedFlood> {
    let mut floods = Floods::default();
    flows.iter().for_each(|f| floods.add(f));
    floods.finish(cfg)
}

/// One TCP service's attempts, for [`spoofed_floods`].
#[derive(Default)]
struct FloodTarget {
    half_open: u64,
    /// Sources of the half-open attempts.
    sources: HashSet<IpAddr, BuildHasherDefault<KeyHasher>>,
    /// First and last start of a half-open attempt.
    first: u64,
    last: u64,
    /// Start and connections of every completed handshake (the benign rate).
    done: Vec<(u64, u64)>,
}

/// [`spoofed_floods`] one flow at a time: per TCP service, counts, the
/// half-open attempts' sources (that is what a spoofed flood is made of)
/// and the start of each completed handshake (16 bytes each: the busiest
/// second of real clients needs them all).
#[derive(Default)]
pub struct Floods {
    targets: HashMap<SocketAddr, FloodTarget, BuildHasherDefault<KeyHasher>>,
}

impl Floods {
    pub fn add(&mut self, f: &Flow) {
        if f.proto != TCP || !f.attempt_seen {
            return;
        }
        let t = self.targets.entry(f.server).or_insert_with(|| FloodTarget { first: u64::MAX, ..Default::default() });
        if f.handshake_completed() {
            t.done.push((f.first_seen_us, f.connections));
        } else {
            t.half_open += f.connections;
            t.sources.insert(f.client.ip());
            t.first = t.first.min(f.first_seen_us);
            t.last = t.last.max(f.first_seen_us);
        }
    }

    pub fn merge(&mut self, other: Floods) {
        for (target, o) in other.targets {
            let t = self.targets.entry(target).or_insert_with(|| FloodTarget { first: u64::MAX, ..Default::default() });
            t.half_open += o.half_open;
            t.sources.extend(o.sources);
            t.first = t.first.min(o.first);
            t.last = t.last.max(o.last);
            t.done.extend(o.done);
        }
    }

    pub fn finish(self, cfg: &Config) -> Vec<SpoofedFlood> {
        let c = &cfg.spoofed_flood;
        let targets: BTreeMap<SocketAddr, FloodTarget> = self.targets.into_iter().collect();
        let mut out = Vec::new();
        for (target, t) in targets {
            let (half_open, sources, first, last) = (t.half_open, t.sources.len(), t.first, t.last);
            if sources == 0 || half_open < c.min_half_open || sources < c.min_sources {
                continue;
            }
            let r = rate(half_open, first, last).unwrap_or(f64::INFINITY);
            if r < c.min_rate {
                continue;
            }
            out.push(SpoofedFlood {
                target,
                half_open,
                sources,
                rate: r,
                first_seen_us: first,
                last_seen_us: last,
                benign_rate: busiest_second(t.done),
                threshold: format!(
                    "{half_open} half-open >= {}, {sources} sources >= {}, {r:.1}/s >= {}/s",
                    c.min_half_open, c.min_sources, c.min_rate
                ),
            });
        }
        out
    }
}

/// The most connections that started within any one second, from (start, connections).
fn busiest_second(mut starts: Vec<(u64, u64)>) -> f64 {
    starts.sort_unstable();
    let (mut lo, mut sum, mut best) = (0, 0u64, 0u64);
    for hi in 0..starts.len() {
        sum += starts[hi].1;
        while starts[hi].0 - starts[lo].0 >= 1_000_000 {
            sum -= starts[lo].1;
            lo += 1;
        }
        best = best.max(sum);
    }
    best as f64
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::learn::flows::{ConnState, Counters, IcmpError};

    /// A flow as a conntrack reader would build it.
    pub(crate) fn flow(client: &str, server: &str, proto: u8, state: ConnState, history: &str, t_ms: u64) -> Flow {
        let mut f = Flow::new(proto, client.parse().unwrap(), server.parse().unwrap(), t_ms * 1000);
        f.state = state;
        f.history = history.into();
        f.attempt_seen = true;
        f.orig = Counters { packets: 3, bytes: 180 };
        f.resp = Counters { packets: u64::from(state != ConnState::S0), bytes: 60 };
        f.last_seen_us = f.first_seen_us + 500_000;
        f
    }

    pub(crate) fn detectors(flows: &[Flow]) -> Vec<(String, Detector)> {
        detect(flows, &Config::default()).into_iter().map(|f| (f.source.to_string(), f.detector)).collect()
    }

    #[test]
    fn syn_flood_needs_many_fast_half_open_attempts_to_few_targets() {
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
    fn brute_force_is_failed_logins_to_an_authentication_service() {
        // hydra -t 1: one guess every 20 s for 20 minutes (60 guesses).
        let guesses: Vec<Flow> = (0..60)
            .map(|i| flow(&format!("10.0.0.7:{}", 2000 + i), "10.0.0.1:22", TCP, ConnState::SF, "ShADadFf", i * 20_000))
            .collect();
        let found = detect(&guesses, &Config::default());
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].detector, Detector::BruteForce);
        assert!(found[0].counts.starts_with("60 of 60 sessions to tcp 10.0.0.1:22 failed"), "{}", found[0].counts);
        // Exact rate: 59 intervals of 20 s.
        assert!(found[0].counts.contains("0.1 per second over 19m40s"), "{}", found[0].counts);
        // A handful of failed logins is a user who mistyped.
        assert_eq!(detectors(&guesses[..5]), []);
        // The same sessions moving enough data are logins that worked.
        let admin: Vec<Flow> = guesses
            .iter()
            .cloned()
            .map(|mut f| {
                f.resp.bytes = 40_000;
                f
            })
            .collect();
        assert_eq!(detectors(&admin), []);
    }

    #[test]
    fn many_short_web_or_api_connections_are_never_brute_force() {
        // A web client without keep-alive: 10 requests a second for a minute.
        let web: Vec<Flow> = (0..600)
            .map(|i| flow(&format!("10.0.0.8:{}", 2000 + i), "10.0.0.1:80", TCP, ConnState::SF, "ShADadFf", i * 100))
            .collect();
        assert_eq!(detectors(&web), []);
    }

    #[test]
    fn syn_flood_rate_is_exact_and_a_port_scan_is_only_a_scan() {
        // 3000 SYNs 10 µs apart: 100,000/s, not 3000/s.
        let flood: Vec<Flow> = (0..3000)
            .map(|i| {
                let mut f = flow(&format!("10.0.0.66:{}", 1024 + i), "10.0.0.1:80", TCP, ConnState::S0, "S", 0);
                f.first_seen_us = i * 10;
                f.last_seen_us = f.first_seen_us;
                f
            })
            .collect();
        let found = detect(&flood, &Config::default());
        assert_eq!(found.len(), 1);
        assert!(found[0].counts.contains("(100000.0/s over 0.030s)"), "{}", found[0].counts);
        // nmap -sS over 1000 ports in a second: one label, vertical-scan.
        let scan: Vec<Flow> = (0..1000)
            .map(|i| {
                let mut f = flow("10.0.0.67:4444", &format!("10.0.0.1:{}", i + 1), TCP, ConnState::REJ, "Sr", 0);
                f.first_seen_us = i * 1000;
                f
            })
            .collect();
        let found = detect(&scan, &Config::default());
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].detector, Detector::VerticalScan);
        assert!(found[0].also.contains(&Detector::Trw) || found[0].also.is_empty(), "{:?}", found[0].also);
        assert!(!found[0].also.contains(&Detector::SynFlood));
    }

    #[test]
    fn icmp_flood_and_ping_sweep() {
        // ping -f: 120 echo requests in 18 ms, one flow.
        let mut flood = flow("10.0.0.20:77", "10.0.0.1:0", ICMP, ConnState::SF, "DD", 0);
        flood.orig.packets = 120;
        flood.last_seen_us = 18_000;
        assert_eq!(detectors(&[flood.clone()]), [("10.0.0.20".to_string(), Detector::IcmpFlood)]);
        // ping -c 120 at 1/s: not a flood.
        flood.last_seen_us = 119_000_000;
        assert_eq!(detectors(&[flood]), []);
        let sweep: Vec<Flow> =
            (0..20).map(|i| flow("10.0.0.21:9", &format!("10.0.1.{i}:0"), ICMP, ConnState::S0, "D", i * 50)).collect();
        assert_eq!(detectors(&sweep), [("10.0.0.21".to_string(), Detector::PingSweep)]);
        assert!(!detectors(&sweep[..5]).iter().any(|(_, d)| *d == Detector::PingSweep));
    }

    #[test]
    fn spoofed_syn_flood_is_one_finding_for_the_service_not_per_source() {
        let flood: Vec<Flow> = (0..2000u64)
            .map(|i| {
                let src = format!("{}.{}.{}.{}:{}", 11 + i % 200, i / 200 % 256, i % 251, 1 + i % 250, 1024 + i);
                let mut f = flow(&src, "10.0.0.1:80", TCP, ConnState::S0, "S", 0);
                f.first_seen_us = i * 100;
                f
            })
            .collect();
        assert_eq!(detectors(&flood), []);
        let floods = spoofed_floods(&flood, &Config::default());
        assert_eq!(floods.len(), 1);
        assert_eq!(floods[0].target, "10.0.0.1:80".parse().unwrap());
        assert_eq!(floods[0].half_open, 2000);
        assert!((floods[0].rate - 10_000.0).abs() < 1.0, "{}", floods[0].rate);
    }

    #[test]
    fn service_probe_needs_a_port_probe_then_different_requests() {
        let mut fs = vec![flow("10.0.0.30:4000", "10.0.0.1:80", TCP, ConnState::RSTO, "ShR", 0)];
        for i in 0..6u64 {
            let mut f = flow(&format!("10.0.0.30:{}", 5000 + i), "10.0.0.1:80", TCP, ConnState::SF, "ShADadFf", 10 + i);
            f.orig.bytes = 200 + i * 37;
            f.last_seen_us = f.first_seen_us + 20_000;
            fs.push(f);
        }
        assert_eq!(detectors(&fs), [("10.0.0.30".to_string(), Detector::ServiceProbe)]);
        // The same request again and again is a client, not a probe.
        for f in &mut fs[1..] {
            f.orig.bytes = 200;
        }
        assert_eq!(detectors(&fs), []);
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

    #[test]
    fn a_slow_vertical_scan_is_caught_in_the_slow_window() {
        // nmap -T1 style: a closed port every 10 minutes, 12 ports in 2 hours.
        let slow: Vec<Flow> = (0..12u64)
            .map(|i| flow("10.0.0.40:4000", &format!("10.0.0.1:{}", 100 + i), TCP, ConnState::REJ, "Sr", i * 600_000))
            .collect();
        let found = detect(&slow, &Config::default());
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].detector, Detector::VerticalScan);
        assert_eq!(found[0].threshold, "12 failed ports on one host >= 10 within 86400s");
        // Fast, it is reported in the short window.
        let fast: Vec<Flow> = (0..12u64)
            .map(|i| flow("10.0.0.40:4000", &format!("10.0.0.1:{}", 100 + i), TCP, ConnState::REJ, "Sr", i * 1000))
            .collect();
        assert_eq!(detect(&fast, &Config::default())[0].threshold, "12 failed ports on one host >= 10 within 300s");
        // Nine ports over the day stay under the threshold.
        assert_eq!(detectors(&slow[..9]), []);
    }

    #[test]
    fn trw_counts_no_multicast_and_no_one_way_protocols() {
        // IGMP joins to 150 groups (Zeek's igmp-many-groups trace) and ESP
        // to 12 peers (ip6_esp): never answered, never a scan.
        let joins: Vec<Flow> =
            (0..150).map(|i| flow("10.0.0.7:0", &format!("239.1.0.{i}:0"), 2, ConnState::S0, "D", i)).collect();
        assert_eq!(detectors(&joins), []);
        let esp: Vec<Flow> =
            (0..12).map(|i| flow("[3ffe::1]:0", &format!("[3ffe::{}]:0", i + 2), 50, ConnState::S0, "D", i)).collect();
        assert_eq!(detectors(&esp), []);
        // Unanswered SYNs to unicast hosts are a scan.
        let syns: Vec<Flow> = (0..8)
            .map(|i| flow("[3ffe::1]:4000", &format!("[3ffe::{}]:22", i + 2), TCP, ConnState::S0, "S", i))
            .collect();
        assert_eq!(detectors(&syns), [("3ffe::1".to_string(), Detector::Trw)]);
    }
}
