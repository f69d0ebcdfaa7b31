//! Behaviour baselines: per service (protocol and port), what its clients
//! normally do — connections per minute, server bytes per connection,
//! failure ratio — kept as bounded samples across runs of `learn` (or
//! windows of `watch`) in a versioned JSON file. A flagged source is then
//! stated as robust distances (median and MAD) from its service's baseline
//! and from the other clients of the same run.
//!
//! Library use (flows in, evidence out): [`observe`] the flows of a window,
//! [`Baseline::compare`] each finding's source, [`Baseline::update`] with the
//! unflagged clients' observations, [`Baseline::save`]. [`Baseline::load`]
//! refuses a corrupted file or one of another version with the path and why.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::config::Config;
use super::detect::failed_login;
use super::flows::{proto_label, Flow, KeyHasher, TCP};

type Fast = std::hash::BuildHasherDefault<KeyHasher>;

/// The file format this phantomc reads and writes.
pub const VERSION: u32 = 1;
/// Samples kept per measure and service (the most recent ones).
const SAMPLES: usize = 512;

/// What one client did with one service in one window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClientStats {
    pub connections: u64,
    pub per_minute: f64,
    pub server_bytes: f64,
    pub failure_ratio: f64,
}

/// Per service (`tcp/22`), per client: what each client did.
pub type Observations = BTreeMap<String, HashMap<IpAddr, ClientStats>>;

/// Observations of a set of flows (the attempts whose start was seen). A
/// connection failed when it was not answered, never completed its
/// handshake, or was a failed login by the brute-force detector's rules.
pub fn observe(flows: &[Flow], cfg: &Config) -> Observations {
    let mut observer = Observer::default();
    flows.iter().for_each(|f| observer.add(f, cfg));
    observer.finish()
}

/// One client's counts with one service while flows close.
#[derive(Clone, Copy)]
struct Acc {
    n: u64,
    failed: u64,
    bytes: u64,
    first: u64,
    last: u64,
}

impl Acc {
    const EMPTY: Acc = Acc { n: 0, failed: 0, bytes: 0, first: u64::MAX, last: 0 };

    fn absorb(&mut self, b: Acc) {
        self.n += b.n;
        self.failed += b.failed;
        self.bytes += b.bytes;
        self.first = self.first.min(b.first);
        self.last = self.last.max(b.last);
    }
}

/// [`observe`] one flow at a time: one counter set per (service, client),
/// whatever the number of flows.
#[derive(Default)]
pub struct Observer {
    // Keyed by (protocol, port) while counting: a string per flow would cost
    // an allocation each on captures of millions of flows.
    acc: HashMap<(u8, u16), HashMap<IpAddr, Acc, Fast>, Fast>,
}

impl Observer {
    pub fn add(&mut self, f: &Flow, cfg: &Config) {
        if !f.attempt_seen || f.server.port() == 0 {
            return;
        }
        let failed = f.failed() || (f.proto == TCP && !f.handshake_completed()) || failed_login(f, cfg);
        let one = Acc {
            n: f.connections,
            failed: if failed { f.connections } else { 0 },
            bytes: f.resp.bytes,
            first: f.first_seen_us,
            last: f.first_seen_us,
        };
        self.acc.entry((f.proto, f.server.port())).or_default().entry(f.client.ip()).or_insert(Acc::EMPTY).absorb(one);
    }

    /// Adds another observer's counts (another shard of the flow table).
    pub fn merge(&mut self, other: Observer) {
        for (svc, clients) in other.acc {
            let mine = self.acc.entry(svc).or_default();
            for (ip, b) in clients {
                mine.entry(ip).or_insert(Acc::EMPTY).absorb(b);
            }
        }
    }

    pub fn finish(self) -> Observations {
        self.acc
            .into_iter()
            .map(|((proto, port), clients)| {
                let svc = format!("{}/{port}", proto_label(proto));
                let stats = clients
                    .into_iter()
                    .map(|(ip, a)| {
                        // At least a minute: two connections a second apart are not 60/min.
                        let minutes = ((a.last - a.first) as f64 / 60e6).max(1.0);
                        let s = ClientStats {
                            connections: a.n,
                            per_minute: a.n as f64 / minutes,
                            server_bytes: a.bytes as f64 / a.n as f64,
                            failure_ratio: a.failed as f64 / a.n as f64,
                        };
                        (ip, s)
                    })
                    .collect();
                (svc, stats)
            })
            .collect()
    }
}

/// Median and median absolute deviation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Robust {
    pub median: f64,
    pub mad: f64,
}

impl Robust {
    pub fn of(values: &[f64]) -> Option<Robust> {
        let mid = median(values.to_vec())?;
        let mad = median(values.iter().map(|v| (v - mid).abs()).collect())?;
        Some(Robust { median: mid, mad })
    }

    /// How many (scaled) MADs `x` lies from the median; a floor of 5% of the
    /// median (or 0.01) keeps a constant baseline from making every
    /// difference infinite.
    pub fn distance(&self, x: f64) -> f64 {
        let scale = (1.4826 * self.mad).max(0.05 * self.median.abs()).max(0.01);
        (x - self.median) / scale
    }
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 { v[m] } else { (v[m - 1] + v[m]) / 2.0 })
}

/// One service's samples.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceProfile {
    /// Distinct clients seen, across runs (bounded like the samples).
    pub clients: BTreeSet<IpAddr>,
    pub per_minute: Vec<f64>,
    pub server_bytes: Vec<f64>,
    pub failure_ratio: Vec<f64>,
}

/// The baseline file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Baseline {
    pub version: u32,
    /// Runs (or windows) that updated it.
    pub updates: u64,
    pub services: BTreeMap<String, ServiceProfile>,
}

impl Default for Baseline {
    fn default() -> Self {
        Baseline { version: VERSION, updates: 0, services: BTreeMap::new() }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    #[error("{path}: cannot read the baseline: {reason}")]
    Read { path: String, reason: String },
    #[error("{path}: not a phantomc baseline (corrupted?): {reason}")]
    Corrupt { path: String, reason: String },
    #[error("{path}: baseline format version {found}, this phantomc reads version {VERSION}; move it away to start a new one")]
    Version { path: String, found: u64 },
    #[error("{path}: cannot write the baseline: {reason}")]
    Write { path: String, reason: String },
}

impl Baseline {
    /// Reads a baseline; a missing file is an empty baseline, anything
    /// unreadable, corrupted or of another version is an error.
    pub fn load(path: &Path) -> Result<Baseline, BaselineError> {
        let p = path.display().to_string();
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Baseline::default()),
            Err(e) => return Err(BaselineError::Read { path: p, reason: e.to_string() }),
        };
        // The version first, so a newer format is named as such, not as corrupt.
        let value: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| BaselineError::Corrupt { path: p.clone(), reason: e.to_string() })?;
        match value.get("version").and_then(serde_json::Value::as_u64) {
            Some(v) if v == u64::from(VERSION) => {}
            Some(found) => return Err(BaselineError::Version { path: p, found }),
            None => return Err(BaselineError::Corrupt { path: p, reason: "no \"version\" field".into() }),
        }
        serde_json::from_value(value).map_err(|e| BaselineError::Corrupt { path: p, reason: e.to_string() })
    }

    /// Writes atomically (a temporary file renamed over the old one).
    pub fn save(&self, path: &Path) -> Result<(), BaselineError> {
        let fail = |e: std::io::Error| BaselineError::Write { path: path.display().to_string(), reason: e.to_string() };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(fail)?;
        }
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(self).expect("a baseline serializes");
        std::fs::write(&tmp, text + "\n").map_err(fail)?;
        std::fs::rename(&tmp, path).map_err(fail)
    }

    /// Adds the observations of the clients not in `flagged`.
    pub fn update(&mut self, obs: &Observations, flagged: &BTreeSet<IpAddr>) {
        for (svc, clients) in obs {
            let p = self.services.entry(svc.clone()).or_default();
            let mut ips: Vec<&IpAddr> = clients.keys().filter(|ip| !flagged.contains(ip)).collect();
            ips.sort();
            for ip in ips {
                let s = clients[ip];
                if p.clients.len() < SAMPLES || p.clients.contains(ip) {
                    p.clients.insert(*ip);
                }
                for (v, x) in [
                    (&mut p.per_minute, s.per_minute),
                    (&mut p.server_bytes, s.server_bytes),
                    (&mut p.failure_ratio, s.failure_ratio),
                ] {
                    v.push(x);
                    if v.len() > SAMPLES {
                        v.remove(0);
                    }
                }
            }
        }
        self.updates += 1;
    }

    /// `tcp/22 baseline (3 updates, 14 clients): 0.4/min, MAD 0.2; this source
    /// 640.0/min (+3199 MAD), ...; peers now: median 0.5/min` for the service
    /// `source` used most, or `None` when it used no service.
    pub fn compare(&self, source: IpAddr, obs: &Observations) -> Option<String> {
        let (svc, me) = obs
            .iter()
            .filter_map(|(svc, clients)| clients.get(&source).map(|s| (svc, *s)))
            .max_by_key(|(_, s)| s.connections)?;
        let mut out = format!(
            "{svc}: this source {:.1}/min, {:.0} server bytes per connection, {:.0}% failed",
            me.per_minute,
            me.server_bytes,
            me.failure_ratio * 100.0
        );
        let peers: Vec<&ClientStats> = obs[svc].iter().filter(|(ip, _)| **ip != source).map(|(_, s)| s).collect();
        let peer_rate = Robust::of(&peers.iter().map(|s| s.per_minute).collect::<Vec<_>>());
        match peer_rate {
            Some(r) => out.push_str(&format!(
                "; {} other clients now: median {:.1}/min ({:+.0} MAD)",
                peers.len(),
                r.median,
                r.distance(me.per_minute)
            )),
            None => out.push_str("; no other clients now"),
        }
        match self.services.get(svc) {
            Some(p) if !p.per_minute.is_empty() => {
                let rate = Robust::of(&p.per_minute).expect("not empty");
                let fail = Robust::of(&p.failure_ratio).expect("same length");
                out.push_str(&format!(
                    "; baseline ({} updates, {} clients): median {:.1}/min ({:+.0} MAD), {:.0}% failed ({:+.0} MAD)",
                    self.updates,
                    p.clients.len(),
                    rate.median,
                    rate.distance(me.per_minute),
                    fail.median * 100.0,
                    fail.distance(me.failure_ratio)
                ));
            }
            _ if self.updates > 0 => out.push_str("; baseline: never seen before"),
            _ => {}
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::learn::flows::{ConnState, Counters};

    fn conn(client: &str, port: u16, t_s: u64, ok: bool) -> Flow {
        let mut f =
            Flow::new(TCP, client.parse().unwrap(), format!("10.0.0.1:{port}").parse().unwrap(), t_s * 1_000_000);
        f.attempt_seen = true;
        f.state = if ok { ConnState::SF } else { ConnState::REJ };
        f.history = if ok { "ShADadFf" } else { "Sr" }.into();
        f.resp = Counters { packets: 4, bytes: if ok { 40_000 } else { 40 } };
        f
    }

    #[test]
    fn a_source_is_stated_against_its_peers_and_the_baseline() {
        // Yesterday: five clients, one SSH login every ten minutes each.
        let old: Vec<Flow> =
            (0..5).flat_map(|c| (0..6).map(move |i| conn(&format!("10.0.1.{c}:4000"), 22, i * 600, true))).collect();
        let mut b = Baseline::default();
        b.update(&observe(&old, &Config::default()), &BTreeSet::new());
        // Today: the same clients, and a guesser at 2 per second, all failing.
        let mut today = old.clone();
        today.extend((0..120).map(|i| conn("10.0.9.9:5000", 22, i / 2, false)));
        let obs = observe(&today, &Config::default());
        let text = b.compare("10.0.9.9".parse().unwrap(), &obs).unwrap();
        assert!(text.starts_with("tcp/22: this source 120.0/min"), "{text}");
        assert!(text.contains("5 other clients now: median 0.1/min"), "{text}");
        assert!(
            text.contains("baseline (1 updates, 5 clients): median 0.1/min (+11988 MAD), 0% failed (+100 MAD)"),
            "{text}"
        );
    }

    #[test]
    fn load_refuses_corrupt_and_other_versions_with_path_and_reason() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("baseline.json");
        assert_eq!(Baseline::load(&path).unwrap(), Baseline::default());
        let mut b = Baseline::default();
        b.update(&observe(&[conn("10.0.1.1:4000", 80, 0, true)], &Config::default()), &BTreeSet::new());
        b.save(&path).unwrap();
        assert_eq!(Baseline::load(&path).unwrap(), b);
        std::fs::write(&path, "{\"version\": 1, \"updates\": ").unwrap();
        let err = Baseline::load(&path).unwrap_err().to_string();
        assert!(err.starts_with(&format!("{}: not a phantomc baseline", path.display())), "{err}");
        std::fs::write(&path, "{\"version\": 7, \"anything\": 1}").unwrap();
        let err = Baseline::load(&path).unwrap_err().to_string();
        assert!(err.contains("baseline format version 7, this phantomc reads version 1"), "{err}");
        std::fs::write(&path, "{\"version\": 1, \"updates\": 1, \"services\": {}, \"extra\": 2}").unwrap();
        assert!(Baseline::load(&path).unwrap_err().to_string().contains("extra"));
    }
}
