//! The rolling window of flows the detectors look at: per source, the
//! latest state of each connection, with the sources changed since the
//! detectors last ran.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use crate::host::conntrack::CtTuple;
use crate::learn::Flow;

/// A conntrack entry's identity: kernel id, protocol, original tuple.
pub type Key = (Option<u32>, u8, CtTuple);

#[derive(Default)]
pub struct FlowWindow {
    by_source: HashMap<IpAddr, HashMap<Key, Flow>>,
    dirty: HashSet<IpAddr>,
    len: usize,
}

impl FlowWindow {
    /// Records the latest state of a connection.
    pub fn upsert(&mut self, key: Key, flow: Flow) {
        let src = flow.client.ip();
        if self.by_source.entry(src).or_default().insert(key, flow).is_none() {
            self.len += 1;
        }
        self.dirty.insert(src);
    }

    /// Drops connections whose last packet is before `since_us`; while more
    /// than `cap` remain, the oldest half of the window goes too. Returns
    /// the oldest time kept.
    pub fn prune(&mut self, since_us: u64, now_us: u64, cap: usize) -> u64 {
        let mut since = since_us;
        loop {
            self.by_source.retain(|_, flows| {
                flows.retain(|_, f| f.last_seen_us >= since);
                !flows.is_empty()
            });
            self.len = self.by_source.values().map(HashMap::len).sum();
            if self.len <= cap || since >= now_us {
                return since;
            }
            since += (now_us - since).div_ceil(2);
        }
    }

    /// Forgets a source (its evidence was acted on).
    pub fn forget(&mut self, src: IpAddr) {
        if let Some(flows) = self.by_source.remove(&src) {
            self.len -= flows.len();
        }
        self.dirty.remove(&src);
    }

    /// The flows of every source changed since the last call.
    pub fn take_dirty(&mut self) -> Vec<Flow> {
        let mut out = Vec::new();
        for src in self.dirty.drain() {
            out.extend(self.by_source.get(&src).into_iter().flat_map(|m| m.values().cloned()));
        }
        out
    }

    /// Every flow in the window.
    pub fn flows(&self) -> impl Iterator<Item = &Flow> {
        self.by_source.values().flat_map(HashMap::values)
    }

    pub fn source_flows(&self, src: IpAddr) -> Vec<Flow> {
        self.by_source.get(&src).map(|m| m.values().cloned().collect()).unwrap_or_default()
    }

    pub fn has_dirty(&self) -> bool {
        !self.dirty.is_empty()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn sources(&self) -> usize {
        self.by_source.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(client: &str, port: u16, t_s: u64) -> (Key, Flow) {
        let mut f = Flow::new(6, client.parse().unwrap(), format!("10.0.0.1:{port}").parse().unwrap(), t_s * 1_000_000);
        f.last_seen_us = t_s * 1_000_000;
        let key = (
            Some(u32::from(port)),
            6,
            CtTuple { src: f.client.ip(), dst: f.server.ip(), sport: f.client.port(), dport: port },
        );
        (key, f)
    }

    #[test]
    fn window_keeps_latest_state_prunes_and_reports_changed_sources() {
        let mut w = FlowWindow::default();
        for (port, t) in [(22, 10), (23, 20), (24, 30)] {
            let (k, f) = flow("10.0.0.5:4000", port, t);
            w.upsert(k, f);
        }
        let (k, mut f) = flow("10.0.0.5:4000", 24, 30);
        f.last_seen_us += 5_000_000;
        w.upsert(k, f);
        let (k, f) = flow("10.0.0.6:4000", 80, 40);
        w.upsert(k, f);
        assert_eq!((w.len(), w.sources()), (4, 2));
        assert_eq!(w.take_dirty().len(), 4);
        assert!(!w.has_dirty());
        assert_eq!(w.prune(15_000_000, 40_000_000, 100), 15_000_000);
        assert_eq!(w.len(), 3);
        // Over the cap: the older half of what is left goes.
        let kept = w.prune(15_000_000, 41_000_000, 1);
        assert_eq!((kept, w.len()), (37_750_000, 1));
        let (k, f) = flow("10.0.0.5:4000", 25, 41);
        w.upsert(k, f);
        w.forget("10.0.0.5".parse().unwrap());
        assert_eq!((w.len(), w.sources(), w.has_dirty()), (1, 1, false));
    }
}
