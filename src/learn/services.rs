//! Services really used: servers that completed a handshake (TCP) or answered
//! (UDP) to clients whose own attempt we saw, grouped by protocol and port.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::config::Propose;
use super::flows::{Flow, TCP, UDP};

/// One service (protocol + port) and who used it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    pub proto: u8,
    pub port: u16,
    pub servers: BTreeSet<IpAddr>,
    pub clients: BTreeSet<IpAddr>,
    pub connections: u64,
}

impl Service {
    /// Client networks widened to the configured prefixes and aggregated.
    pub fn client_nets(&self, cfg: &Propose) -> Vec<IpNet> {
        let nets: Vec<IpNet> = self
            .clients
            .iter()
            .map(|ip| {
                let len = if ip.is_ipv4() { cfg.client_prefix_v4 } else { cfg.client_prefix_v6 };
                IpNet::new(*ip, len).expect("prefix validated").trunc()
            })
            .collect();
        IpNet::aggregate(&nets)
    }
}

/// The address every flow (nine in ten at least) has at one end: the host
/// the capture was taken on. `None` for a capture of a whole network.
pub fn capture_host(flows: &[Flow]) -> Option<IpAddr> {
    let mut seen: std::collections::HashMap<IpAddr, u64, std::hash::BuildHasherDefault<super::flows::KeyHasher>> =
        Default::default();
    for f in flows {
        *seen.entry(f.client.ip()).or_default() += 1;
        if f.server.ip() != f.client.ip() {
            *seen.entry(f.server.ip()).or_default() += 1;
        }
    }
    let (ip, n) = seen.into_iter().max_by_key(|(ip, n)| (*n, std::cmp::Reverse(*ip)))?;
    (n * 10 >= flows.len() as u64 * 9 && flows.len() > 1).then_some(ip)
}

/// Inbound services used by clients that were not flagged, sorted by
/// protocol and port: servers among `hosts` (every server when `hosts` is
/// empty, for a capture of a whole network). Ephemeral server ports never
/// count (they are the far end of some other flow), nor do the hosts' own
/// outbound connections.
pub fn services<'a>(
    flows: impl IntoIterator<Item = &'a Flow>,
    flagged: &BTreeSet<IpAddr>,
    hosts: &BTreeSet<IpAddr>,
    cfg: &Propose,
) -> Vec<Service> {
    let mut by_port: BTreeMap<(u8, u16), Service> = BTreeMap::new();
    for f in flows {
        let used = match f.proto {
            TCP => f.attempt_seen && f.handshake_completed(),
            UDP => f.attempt_seen && f.answered(),
            _ => false,
        };
        if !used || flagged.contains(&f.client.ip()) || f.server.port() >= cfg.ephemeral_from || f.server.port() == 0 {
            continue;
        }
        if !hosts.is_empty() && (!hosts.contains(&f.server.ip()) || hosts.contains(&f.client.ip())) {
            continue;
        }
        let s = by_port.entry((f.proto, f.server.port())).or_insert_with(|| Service {
            proto: f.proto,
            port: f.server.port(),
            servers: BTreeSet::new(),
            clients: BTreeSet::new(),
            connections: 0,
        });
        s.servers.insert(f.server.ip());
        s.clients.insert(f.client.ip());
        s.connections += f.connections;
    }
    by_port.into_values().filter(|s| s.clients.len() >= cfg.min_clients).collect()
}
