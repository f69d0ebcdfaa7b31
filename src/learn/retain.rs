//! The flows the detectors read one by one, held in memory bounded by the
//! distinct (source, target) pairs instead of by the number of flows: a
//! client that fails against the same dead service all day, or fetches the
//! same page every few seconds, leaves a bounded number of records behind.
//!
//! - Failed TCP/UDP attempts (the scans) per (source, server, protocol):
//!   a record that every window of the scan detectors also sees through an
//!   earlier and a later one of the same target is dropped ([`thin`]), which
//!   keeps every window's distinct count exact; beyond
//!   [`FAILURES_PER_TARGET`] records only the earliest stay, so a window
//!   after them can count less, never more (no false positive).
//! - Service probes per (source, server): the earliest port discovery (the
//!   only one the detector reads) and the earliest [`PROBES_PER_SERVICE`]
//!   one-request connections; a window that reaches past them is not judged.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::net::{IpAddr, SocketAddr};

use super::flows::{Flow, KeyHasher};

/// Failed attempts kept per (source, server, protocol) after thinning.
pub const FAILURES_PER_TARGET: usize = 64;
/// One-request connections kept per (source, server).
pub const PROBES_PER_SERVICE: usize = 256;

type Fast = BuildHasherDefault<KeyHasher>;

/// Records of one target in detector order, the earliest `cap` at most.
#[derive(Default)]
pub struct Series {
    flows: Vec<Flow>,
    /// Records were dropped from the end: none start before this.
    pub horizon: Option<u64>,
}

impl Series {
    pub fn flows(&self) -> &[Flow] {
        &self.flows
    }

    /// Add `f`; past twice `cap`, thin (with a window of `thin_us`, if any)
    /// and keep the earliest `cap`. A record after the horizon would never
    /// be among them: it is dropped at once.
    fn push(&mut self, f: Flow, cap: usize, thin_us: Option<u64>) {
        if self.horizon.is_some_and(|h| f.first_seen_us > h) {
            return;
        }
        self.flows.push(f);
        if self.flows.len() > 2 * cap {
            self.bound(cap, thin_us);
        }
    }

    fn bound(&mut self, cap: usize, thin_us: Option<u64>) {
        self.flows.sort_by_cached_key(super::detect::detect_order);
        if let Some(w) = thin_us {
            thin(&mut self.flows, w);
        }
        if self.flows.len() > cap {
            self.flows.truncate(cap);
            let last = self.flows[cap - 1].first_seen_us;
            self.horizon = Some(self.horizon.map_or(last, |h| h.min(last)));
        }
    }

    fn merge(&mut self, other: Series, cap: usize, thin_us: Option<u64>) {
        self.horizon = match (self.horizon, other.horizon) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let horizon = self.horizon;
        self.flows.extend(other.flows.into_iter().filter(|f| horizon.is_none_or(|h| f.first_seen_us <= h)));
        if self.flows.len() > 2 * cap {
            self.bound(cap, thin_us);
        }
    }
}

/// Drop each record (after the first three, which are examples) that any
/// window of `window_us` holding it also holds through the record before it
/// or the one after it: those two start at most `window_us` apart. Every
/// window then still sees the target, so distinct counts per window stay
/// exact. `flows` are one target's, sorted by start.
pub fn thin(flows: &mut Vec<Flow>, window_us: u64) {
    const EXAMPLES: usize = 3;
    if flows.len() <= EXAMPLES + 1 {
        return;
    }
    let mut keep = vec![true; flows.len()];
    let mut before = EXAMPLES - 1;
    for i in EXAMPLES..flows.len() - 1 {
        if flows[i + 1].first_seen_us - flows[before].first_seen_us <= window_us {
            keep[i] = false;
        } else {
            before = i;
        }
    }
    let mut i = 0;
    flows.retain(|_| {
        i += 1;
        keep[i - 1]
    });
}

/// Port discoveries and probes of one (source, server).
#[derive(Default)]
pub struct Probing {
    /// The earliest discovery.
    pub discovery: Option<Flow>,
    pub probes: Series,
}

/// See the module documentation.
#[derive(Default)]
pub struct Retained {
    failures: HashMap<(IpAddr, SocketAddr, u8), Series, Fast>,
    probing: HashMap<(IpAddr, SocketAddr), Probing, Fast>,
}

impl Retained {
    pub fn failure(&mut self, f: Flow, thin_us: u64) {
        self.failures.entry((f.client.ip(), f.server, f.proto)).or_default().push(
            f,
            FAILURES_PER_TARGET,
            Some(thin_us),
        );
    }

    pub fn discovery(&mut self, f: Flow) {
        let p = self.probing.entry((f.client.ip(), f.server)).or_default();
        earliest(&mut p.discovery, f);
    }

    pub fn probe(&mut self, f: Flow) {
        self.probing.entry((f.client.ip(), f.server)).or_default().probes.push(f, PROBES_PER_SERVICE, None);
    }

    pub fn merge(&mut self, other: Retained, thin_us: u64) {
        for (k, s) in other.failures {
            self.failures.entry(k).or_default().merge(s, FAILURES_PER_TARGET, Some(thin_us));
        }
        for (k, p) in other.probing {
            let mine = self.probing.entry(k).or_default();
            if let Some(d) = p.discovery {
                earliest(&mut mine.discovery, d);
            }
            mine.probes.merge(p.probes, PROBES_PER_SERVICE, None);
        }
    }

    /// Every record held, with its source.
    pub fn flows(&self) -> impl Iterator<Item = &Flow> {
        let failures = self.failures.values().flat_map(|s| s.flows.iter());
        let probing = self.probing.values().flat_map(|p| p.discovery.iter().chain(p.probes.flows.iter()));
        failures.chain(probing)
    }

    /// Where the probes of `source` to `server` were cut short, if they were.
    pub fn probe_horizon(&self, source: IpAddr, server: SocketAddr) -> Option<u64> {
        self.probing.get(&(source, server)).and_then(|p| p.probes.horizon)
    }

    /// Records held (for the bound's test).
    pub fn held(&self) -> usize {
        self.flows().count()
    }
}

/// Keep the earlier of `slot` and `f` in detector order.
pub fn earliest(slot: &mut Option<Flow>, f: Flow) {
    use super::detect::detect_order;
    if slot.as_ref().is_none_or(|s| detect_order(&f) < detect_order(s)) {
        *slot = Some(f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::learn::detect::tests::flow;
    use crate::learn::flows::{ConnState, UDP};

    #[test]
    fn thinning_keeps_one_record_per_window_edge() {
        // A failure every second for 100 s, a window of 10 s: every window
        // still holds one, the first three stay as examples.
        let mut fs: Vec<Flow> =
            (0..100u64).map(|i| flow("10.0.0.8:5355", "224.0.0.252:5355", UDP, ConnState::S0, "D", i * 1000)).collect();
        thin(&mut fs, 10_000_000);
        let starts: Vec<u64> = fs.iter().map(|f| f.first_seen_us / 1_000_000).collect();
        assert_eq!(&starts[..3], [0, 1, 2]);
        assert!(starts.windows(2).all(|w| w[1] - w[0] <= 10), "{starts:?}");
        assert!(starts.len() < 25, "{starts:?}");
        assert_eq!(starts.last(), Some(&99));
    }
}
