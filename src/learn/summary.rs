//! Closed flows summarized as they close: every consumer after the flow
//! table (detectors, distributed scans, spoofed floods, the ML ranking, the
//! baseline, the services proposal, the capture host) gets its own
//! incremental summary here instead of a list of every flow. Only the flows
//! a detector reads one by one ([`super::detect::needed`]) stay, and the flow
//! table keeps those under its `max_closed` bound like before.
//!
//! What each summary holds, and so what memory grows with:
//! - the ranking and the distributed scans: per source, counts, and the
//!   distinct hosts, (protocol, port) pairs and networks it tried;
//! - the baseline: counts per (service, client); the services proposal:
//!   connections per (service, client, server); the capture host and the
//!   source count: per address, a count and whether it was a client;
//! - TRW: one flow per (source, host) pair, the earliest contact;
//! - the SYN flood: per source, counts, the targets and the earliest three;
//! - the scans and service probes: a bounded number of records per
//!   (source, target) ([`super::retain`]);
//! - spoofed floods: per TCP service, the sources of half-open attempts and
//!   16 bytes per completed handshake (the start times the busiest second
//!   of real clients is measured on).
//!
//! None grows with the number of flows between the same endpoints, except
//! the spoofed floods' handshake starts and the flows still kept whole
//! (authentication services, ICMP, port-unreachable answers), which are
//! bounded by `flows.max_closed` (beyond it identical ones are merged).

use std::net::IpAddr;
use std::sync::Arc;

use super::baseline::{Observations, Observer};
use super::config::Config;
use super::detect::{Attempts, Floods};
use super::flows::Flow;
use super::score::{self, Features};
use super::services::{Endpoints, Usage};
use super::Report;

/// Every summary of the flows closed so far.
pub struct Summary {
    cfg: Arc<Config>,
    endpoints: Endpoints,
    observer: Observer,
    features: Features,
    usage: Usage,
    floods: Floods,
    attempts: Attempts,
}

impl Summary {
    pub fn new(cfg: Arc<Config>) -> Summary {
        Summary {
            cfg,
            endpoints: Endpoints::default(),
            observer: Observer::default(),
            features: Features::default(),
            usage: Usage::default(),
            floods: Floods::default(),
            attempts: Attempts::default(),
        }
    }

    /// Count a closed flow; it comes back when a detector needs it itself.
    pub fn add(&mut self, f: Flow) -> Option<Flow> {
        let cfg = &*self.cfg;
        self.endpoints.add(&f);
        self.observer.add(&f, cfg);
        self.features.add(&f);
        self.usage.add(&f, &cfg.propose);
        self.floods.add(&f);
        self.attempts.add(&f, cfg).then_some(f)
    }

    /// Summarize `flows`; the ones the detectors need come back.
    pub fn of(flows: Vec<Flow>, cfg: &Config) -> (Summary, Vec<Flow>) {
        let mut summary = Summary::new(Arc::new(cfg.clone()));
        let kept = flows.into_iter().filter_map(|f| summary.add(f)).collect();
        (summary, kept)
    }

    /// Adds another shard's summary.
    pub fn merge(&mut self, other: Summary) {
        self.endpoints.merge(other.endpoints);
        self.observer.merge(other.observer);
        self.features.merge(other.features);
        self.usage.merge(other.usage);
        self.floods.merge(other.floods);
        self.attempts.merge(other.attempts, &self.cfg);
    }

    /// Flow records the summaries hold for the detectors (see [`super::retain`]).
    pub fn held(&self) -> usize {
        self.attempts.held()
    }

    /// Flow records summarized.
    pub fn flows(&self) -> u64 {
        self.endpoints.flows()
    }

    /// The baseline's observations and the report, from the summaries and
    /// the `kept` flows. `hosts` as for [`super::analyze`]. The passes that
    /// do not depend on each other run in parallel.
    pub fn report(self, kept: &[Flow], hosts: &[IpAddr]) -> (Observations, Report) {
        let Summary { cfg, endpoints, observer, features, usage, floods, mut attempts } = self;
        let cfg = &*cfg;
        let ((findings, ranking), (floods, observed)) = rayon::join(
            || rayon::join(|| attempts.detect(kept, cfg), || score::rank_features(features.finish(), &cfg.score)),
            || rayon::join(|| floods.finish(cfg), || observer.finish()),
        );
        let capture_host = endpoints.capture_host();
        let flagged = findings.iter().map(|f| f.source).collect();
        let mut host_set: std::collections::BTreeSet<IpAddr> = hosts.iter().copied().collect();
        if host_set.is_empty() {
            host_set.extend(capture_host);
        }
        let services = usage.services(&flagged, &host_set, &cfg.propose);
        let report = Report {
            flows: endpoints.flows() as usize,
            sources: endpoints.clients(),
            findings,
            floods,
            services,
            ranking,
            capture_host,
        };
        (observed, report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::learn::detect::tests::flow;
    use crate::learn::detect::Detector;
    use crate::learn::flows::{ConnState, TCP, UDP};

    #[test]
    fn answered_flows_leave_counts_only_and_failures_stay() {
        let cfg = Config::default();
        // A busy client: 50,000 answered DNS queries to one server, each from a new port.
        let mut flows: Vec<Flow> = (0..50_000u64)
            .map(|i| {
                let client = format!("10.0.0.8:{}", 1024 + i % 60_000);
                flow(&client, "10.0.0.1:53", UDP, ConnState::SF, "Dd", i * 10)
            })
            .collect();
        // A scanner: 20 refused ports (none an authentication service).
        flows.extend(
            (0..20u64).map(|i| flow("10.0.0.66:4000", &format!("10.0.0.1:{}", 2000 + i), TCP, ConnState::REJ, "Sr", i)),
        );
        let (summary, kept) = Summary::of(flows, &cfg);
        // The failures only, held by the summary: the client's queries are counted, not kept.
        assert!(kept.is_empty());
        // 20 failures, 2 first contacts, the earliest 3 half-open attempts.
        assert_eq!(summary.held(), 25);
        assert_eq!(summary.flows(), 50_020);
        let (observed, report) = summary.report(&kept, &[]);
        assert_eq!(report.flows, 50_020);
        assert_eq!(report.sources, 2);
        assert_eq!(report.flagged(), vec!["10.0.0.66".parse::<IpAddr>().unwrap()]);
        assert_eq!(report.findings[0].detector, Detector::VerticalScan);
        let dns = report.services.iter().find(|s| s.port == 53).expect("dns service");
        assert_eq!(dns.connections, 50_000);
        assert_eq!(observed["udp/53"][&"10.0.0.8".parse::<IpAddr>().unwrap()].connections, 50_000);
    }

    #[test]
    fn sources_are_the_clients_also_across_merged_shards() {
        let cfg = Config::default();
        // 10.0.0.1 is only ever a server; 10.0.0.2 is a server in one shard
        // and a client in the other.
        let a = vec![flow("10.0.0.2:4000", "10.0.0.1:80", TCP, ConnState::SF, "ShADadFf", 1)];
        let b = vec![
            flow("10.0.0.3:4000", "10.0.0.2:53", UDP, ConnState::SF, "Dd", 2),
            flow("10.0.0.3:4001", "10.0.0.1:53", UDP, ConnState::SF, "Dd", 3),
        ];
        let (mut merged, mut kept) = Summary::of(a.clone(), &cfg);
        let (other, other_kept) = Summary::of(b.clone(), &cfg);
        merged.merge(other);
        kept.extend(other_kept);
        let (_, report) = merged.report(&kept, &[]);
        let (whole, whole_kept) = Summary::of(a.into_iter().chain(b).collect(), &cfg);
        let (_, whole_report) = whole.report(&whole_kept, &[]);
        assert_eq!((report.sources, report.flows), (2, 3));
        assert_eq!((whole_report.sources, whole_report.capture_host), (2, report.capture_host));
    }

    /// One copy of a LAN capture with new client ports, `k` copies of 7 s
    /// after the start: a name lookup to a multicast group nobody answers,
    /// a client of a dead service, a short web request, a half-open
    /// connection and an answered DNS query; a vertical scan in copy 0.
    fn lan_copy(k: u64) -> Vec<Flow> {
        let t = k * 7_000;
        let port = 1024 + k % 60_000;
        let mut web = flow(&format!("10.0.0.8:{port}"), "10.0.0.1:80", TCP, ConnState::SF, "ShADadFf", t + 3);
        web.last_seen_us = web.first_seen_us + 200_000;
        let mut copy = vec![
            flow(&format!("10.0.0.5:{port}"), "224.0.0.252:5355", UDP, ConnState::S0, "D", t),
            flow(&format!("10.0.0.6:{port}"), "10.0.0.1:8080", TCP, ConnState::REJ, "Sr", t + 1),
            flow(&format!("10.0.0.7:{port}"), "10.0.0.2:443", TCP, ConnState::S0, "S", t + 2),
            web,
            flow(&format!("10.0.0.8:{port}"), "10.0.0.1:53", UDP, ConnState::SF, "Dd", t + 4),
        ];
        if k == 0 {
            copy.extend(
                (0..30u64)
                    .map(|i| flow("10.0.0.66:4000", &format!("10.0.0.1:{}", 2000 + i), TCP, ConnState::REJ, "Sr", i)),
            );
        }
        copy
    }

    #[test]
    fn held_state_is_the_same_for_a_capture_twice_as_long() {
        let cfg = Config::default();
        let run = |copies: u64| {
            let (summary, kept) = Summary::of((0..copies).flat_map(lan_copy).collect(), &cfg);
            let held = summary.held() + kept.len();
            let (_, report) = summary.report(&kept, &[]);
            (held, report.findings.iter().map(|f| (f.source, f.detector, f.counts.clone())).collect::<Vec<_>>())
        };
        let (once, twice) = (run(3_000), run(6_000));
        assert_eq!(once.0, twice.0, "records held for 3,000 copies and for 6,000");
        // The same decisions: the scanner, nobody else.
        assert_eq!(once.1, twice.1);
        assert_eq!(once.1.len(), 1, "{:?}", once.1);
        assert_eq!(once.1[0].1, Detector::VerticalScan);
        // Far fewer than the 3,000 failures each of three clients made.
        assert!(once.0 < 1_000, "{}", once.0);
    }
}
