//! The behaviour baseline kept online: per service of this host, how many
//! clients use it, how often and how many of their connections fail,
//! learned from the connections of sources no detector flagged.
//!
//! This is the adaptive mode's seam for the learner's baseline (issue 12):
//! when `learn` keeps its own persisted baseline profile, it replaces this.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::learn::flows::proto_label;
use crate::learn::Flow;

pub const FILE: &str = "baseline.json";
const VERSION: u32 = 1;
/// Distinct clients remembered per service; beyond it they are only counted.
const MAX_CLIENTS: usize = 4096;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceStats {
    pub connections: u64,
    pub failed: u64,
    pub clients: BTreeSet<IpAddr>,
    /// Clients seen after `clients` was full.
    pub more_clients: u64,
    /// Unix seconds of the first and last connection counted.
    pub first_seen: u64,
    pub last_seen: u64,
}

impl ServiceStats {
    fn client_count(&self) -> u64 {
        self.clients.len() as u64 + self.more_clients
    }

    /// Connections per client per minute over the time learned.
    pub fn per_client_per_minute(&self) -> f64 {
        let minutes = (self.last_seen.saturating_sub(self.first_seen) as f64 / 60.0).max(1.0);
        self.connections as f64 / self.client_count().max(1) as f64 / minutes
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    pub version: u32,
    /// `tcp/22` -> what its clients do.
    pub services: BTreeMap<String, ServiceStats>,
    /// Connections learned from, in total.
    pub learned: u64,
}

impl Baseline {
    /// An empty baseline, learning from nothing yet.
    pub fn fresh() -> Baseline {
        Baseline { version: VERSION, ..Baseline::default() }
    }

    /// Reads `DIR/baseline.json`; a file of another version or a damaged one
    /// is refused with its path and the reason.
    pub fn load(dir: &Path) -> Result<Baseline, String> {
        let path = dir.join(FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Baseline::fresh()),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let b: Baseline = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if b.version != VERSION {
            return Err(format!("{}: baseline version {} (this phantomc reads {VERSION})", path.display(), b.version));
        }
        Ok(b)
    }

    pub fn save(&self, dir: &Path) -> std::io::Result<PathBuf> {
        let path = dir.join(FILE);
        super::write_atomic(&path, &serde_json::to_vec_pretty(self).expect("baseline serializes"))?;
        Ok(path)
    }

    /// Learns from one ended connection to a service of this host.
    pub fn observe(&mut self, f: &Flow, now: u64) {
        let s = self.services.entry(service_key(f)).or_default();
        s.connections += 1;
        s.failed += u64::from(f.failed());
        let ip = f.client.ip();
        if !s.clients.contains(&ip) {
            if s.clients.len() < MAX_CLIENTS {
                s.clients.insert(ip);
            } else {
                s.more_clients += 1;
            }
        }
        if s.first_seen == 0 {
            s.first_seen = now;
        }
        s.last_seen = now;
        self.learned += 1;
    }

    /// How `flows` (one source's, inside a window of `window_secs`) compare
    /// with the baseline of the service they used most.
    pub fn compare(&self, flows: &[Flow], window_secs: u64) -> Option<String> {
        let mut per: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for f in flows {
            let e = per.entry(service_key(f)).or_default();
            e.0 += 1;
            e.1 += u64::from(f.failed());
        }
        let (key, (n, failed)) = per.into_iter().max_by_key(|(_, (n, _))| *n)?;
        let rate = n as f64 / (window_secs as f64 / 60.0).max(1.0 / 60.0);
        Some(match self.services.get(&key) {
            Some(s) => format!(
                "{key}: {rate:.1} connections/min ({failed} of {n} failed); baseline {:.2}/min per client over {} clients, {:.0}% failed",
                s.per_client_per_minute(),
                s.client_count(),
                100.0 * s.failed as f64 / s.connections.max(1) as f64
            ),
            None => format!("{key}: {rate:.1} connections/min ({failed} of {n} failed); no baseline: never used by benign clients"),
        })
    }
}

fn service_key(f: &Flow) -> String {
    format!("{}/{}", proto_label(f.proto), f.server.port())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::learn::flows::{ConnState, TCP};

    fn flow(client: &str, port: u16, failed: bool) -> Flow {
        let mut f = Flow::new(TCP, client.parse().unwrap(), format!("10.0.0.1:{port}").parse().unwrap(), 0);
        f.attempt_seen = true;
        f.state = if failed { ConnState::S0 } else { ConnState::SF };
        f.history = if failed { "S".into() } else { "ShADadFf".into() };
        f.resp.packets = u64::from(!failed);
        f
    }

    #[test]
    fn baseline_learns_persists_and_compares() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut b = Baseline::load(dir.path()).expect("fresh");
        for (i, t) in (0..10).zip((1000..).step_by(60)) {
            b.observe(&flow(&format!("10.0.0.{}:4000", 10 + i % 2), 80, false), t);
        }
        b.save(dir.path()).expect("save");
        let again = Baseline::load(dir.path()).expect("load");
        assert_eq!(again, b);
        let s = &again.services["tcp/80"];
        assert_eq!((s.connections, s.failed, s.client_count()), (10, 0, 2));
        let attack: Vec<Flow> = (0..30).map(|_| flow("10.0.0.66:5000", 80, true)).collect();
        let said = again.compare(&attack, 60).expect("compared");
        assert!(said.starts_with("tcp/80: 30.0 connections/min (30 of 30 failed); baseline 0.56/min per client over 2 clients, 0% failed"), "{said}");
        let new = again.compare(&[flow("10.0.0.66:5000", 23, true)], 60).expect("compared");
        assert!(new.contains("no baseline"), "{new}");

        std::fs::write(dir.path().join(FILE), r#"{"version": 99, "services": {}, "learned": 0}"#).unwrap();
        let err = Baseline::load(dir.path()).unwrap_err();
        assert!(err.contains("baseline.json") && err.contains("version 99"), "{err}");
        std::fs::write(dir.path().join(FILE), "{").unwrap();
        assert!(Baseline::load(dir.path()).unwrap_err().contains("baseline.json"));
    }
}
