//! Services really used: servers that completed a handshake (TCP) or answered
//! (UDP) to clients whose own attempt we saw, grouped by protocol and port.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::config::Propose;
use super::flows::{Flow, KeyHasher, TCP, UDP};

type Fast = std::hash::BuildHasherDefault<KeyHasher>;

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

/// A count per address seen, one flow at a time, for the capture host
/// ([`Endpoints::capture_host`]), and which addresses were clients (the
/// report's source count, without a set of its own to fill per flow).
#[derive(Default)]
pub struct Endpoints {
    seen: HashMap<IpAddr, Seen, Fast>,
    flows: u64,
}

/// Flows an address was at one end of, and whether it was ever the client.
#[derive(Clone, Copy, Default)]
struct Seen {
    flows: u64,
    client: bool,
}

impl Endpoints {
    pub fn add(&mut self, f: &Flow) {
        self.flows += 1;
        let client = self.seen.entry(f.client.ip()).or_default();
        client.flows += 1;
        client.client = true;
        if f.server.ip() != f.client.ip() {
            self.seen.entry(f.server.ip()).or_default().flows += 1;
        }
    }

    pub fn merge(&mut self, other: Endpoints) {
        self.flows += other.flows;
        for (ip, o) in other.seen {
            let mine = self.seen.entry(ip).or_default();
            mine.flows += o.flows;
            mine.client |= o.client;
        }
    }

    /// Distinct client addresses.
    pub fn clients(&self) -> usize {
        self.seen.values().filter(|s| s.client).count()
    }

    /// Flows counted.
    pub fn flows(&self) -> u64 {
        self.flows
    }

    /// The address every flow (nine in ten at least) has at one end: the
    /// host the capture was taken on. `None` for a capture of a whole network.
    pub fn capture_host(&self) -> Option<IpAddr> {
        let (ip, n) =
            self.seen.iter().map(|(ip, s)| (ip, s.flows)).max_by_key(|&(ip, n)| (n, std::cmp::Reverse(*ip)))?;
        (n * 10 >= self.flows * 9 && self.flows > 1).then_some(*ip)
    }
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
    let mut usage = Usage::default();
    flows.into_iter().for_each(|f| usage.add(f, cfg));
    usage.services(flagged, hosts, cfg)
}

/// [`services`] one flow at a time: connections per (client, server) pair
/// of each service port that was used, so it grows with distinct pairs,
/// not with flows. Who is flagged and which addresses are the host are
/// known only at the end, so they are applied then.
#[derive(Default)]
pub struct Usage {
    pairs: BTreeMap<(u8, u16), Pairs>,
}

/// Connections per (client, server) of one service.
type Pairs = HashMap<(IpAddr, IpAddr), u64, Fast>;

impl Usage {
    pub fn add(&mut self, f: &Flow, cfg: &Propose) {
        let used = match f.proto {
            TCP => f.attempt_seen && f.handshake_completed(),
            UDP => f.attempt_seen && f.answered(),
            _ => false,
        };
        if !used || f.server.port() >= cfg.ephemeral_from || f.server.port() == 0 {
            return;
        }
        let service = self.pairs.entry((f.proto, f.server.port())).or_default();
        *service.entry((f.client.ip(), f.server.ip())).or_default() += f.connections;
    }

    pub fn merge(&mut self, other: Usage) {
        for (port, pairs) in other.pairs {
            let mine = self.pairs.entry(port).or_default();
            for (pair, n) in pairs {
                *mine.entry(pair).or_default() += n;
            }
        }
    }

    /// See [`services`].
    pub fn services(&self, flagged: &BTreeSet<IpAddr>, hosts: &BTreeSet<IpAddr>, cfg: &Propose) -> Vec<Service> {
        let mut out = Vec::new();
        for (&(proto, port), pairs) in &self.pairs {
            let mut s = Service { proto, port, servers: BTreeSet::new(), clients: BTreeSet::new(), connections: 0 };
            for (&(client, server), n) in pairs {
                if flagged.contains(&client)
                    || (!hosts.is_empty() && (!hosts.contains(&server) || hosts.contains(&client)))
                {
                    continue;
                }
                s.servers.insert(server);
                s.clients.insert(client);
                s.connections += n;
            }
            if !s.clients.is_empty() && s.clients.len() >= cfg.min_clients {
                out.push(s);
            }
        }
        out
    }
}
