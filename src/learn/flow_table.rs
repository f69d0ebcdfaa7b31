//! The flow table: packets become [`Flow`] records (sharded by key, idle
//! timeouts, bounded memory by merging closed flows).

use std::collections::hash_map::{Entry, HashMap};
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::net::IpAddr;

use serde::Serialize;

use super::config::Config;
use super::decode::Decoded;
use super::flows::{tcp_flags, Flow, FlowKey, IcmpError, KeyHasher, TCP, UDP};
use super::summary::Summary;
use super::tcp_state::OpenFlow;

/// A flow key with the hash decoding already computed
/// ([`Decoded::key_hash`]), so the map does not hash it again.
#[derive(Clone, Copy, Debug)]
struct HashedKey {
    key: FlowKey,
    hash: u64,
}

impl PartialEq for HashedKey {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for HashedKey {}

impl Hash for HashedKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// Idle timeouts and memory bounds.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlowLimits {
    pub tcp_idle_secs: u64,
    pub udp_idle_secs: u64,
    pub other_idle_secs: u64,
    /// Open flows kept in memory; beyond this the idlest are closed early.
    pub max_open: usize,
    /// Closed flows kept one by one (with a summary: the ones the detectors
    /// read one by one); beyond this identical ones are merged.
    pub max_closed: usize,
}

impl Default for FlowLimits {
    fn default() -> Self {
        // Zeek's inactivity timeouts: tcp 5 min, udp and icmp 1 min.
        FlowLimits {
            tcp_idle_secs: 300,
            udp_idle_secs: 60,
            other_idle_secs: 60,
            max_open: 1_000_000,
            max_closed: 500_000,
        }
    }
}

impl FlowLimits {
    fn idle_us(&self, proto: u8) -> u64 {
        1_000_000
            * match proto {
                TCP => self.tcp_idle_secs,
                UDP => self.udp_idle_secs,
                _ => self.other_idle_secs,
            }
    }
}

/// One shard of the flow table (a disjoint part of the key space): its
/// open flows.
#[derive(Default)]
struct FlowShard {
    open: HashMap<HashedKey, OpenFlow, BuildHasherDefault<KeyHasher>>,
    /// Latest packet time seen by this shard (captures need not be sorted).
    clock_us: u64,
    next_sweep_us: u64,
}

impl FlowShard {
    /// Add one packet and hand each flow it closes to `close`, in closing order.
    fn add(&mut self, p: &Decoded, limits: &FlowLimits, close: &mut impl FnMut(Flow)) {
        self.clock_us = self.clock_us.max(p.ts_us);
        let key = HashedKey { key: p.key, hash: p.key_hash };
        match p.error_from {
            Some(from) => self.add_icmp_error(p, from, &key),
            None => {
                if let Some(ended) = self.add_packet(p, key, limits) {
                    close(ended.finish());
                }
            }
        }
        if self.clock_us >= self.next_sweep_us || self.open.len() > limits.max_open {
            self.sweep(limits, close);
        }
    }

    /// The flow the packet ended, if it started a new one in its place.
    fn add_packet(&mut self, p: &Decoded, key: HashedKey, limits: &FlowLimits) -> Option<OpenFlow> {
        let fresh = || {
            let mut open = OpenFlow::start(p);
            open.update(p);
            open
        };
        // One lookup per packet; a restarted flow takes its old slot.
        match self.open.entry(key) {
            Entry::Vacant(slot) => {
                slot.insert(fresh());
                None
            }
            Entry::Occupied(mut slot) => {
                let open = slot.get_mut();
                let restart = p.ts_us > open.flow.last_seen_us + limits.idle_us(p.key.proto)
                    || (p.key.proto == TCP
                        && p.tcp_flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN
                        && open.closed());
                if !restart {
                    open.update(p);
                    return None;
                }
                Some(std::mem::replace(open, fresh()))
            }
        }
    }

    /// Attach an ICMP error to the flow whose packet it quotes, but only when
    /// the quoted packet came from that flow's originator (backscatter quotes
    /// responders' packets and must not count against anyone).
    fn add_icmp_error(&mut self, p: &Decoded, from: IpAddr, key: &HashedKey) {
        if let Some(open) = self.open.get_mut(key) {
            if open.sent_by_client(p) && open.flow.icmp_error.is_none() {
                open.flow.icmp_error = Some(IcmpError { icmp_type: p.icmp_type, code: p.icmp_code, from });
                open.flow.last_seen_us = open.flow.last_seen_us.max(p.ts_us);
            }
        }
    }

    fn sweep(&mut self, limits: &FlowLimits, close: &mut impl FnMut(Flow)) {
        let now = self.clock_us;
        // Too many open flows: close the older half, whatever their timeouts.
        let median = (self.open.len() > limits.max_open).then(|| {
            let mut seen: Vec<u64> = self.open.values().map(|f| f.flow.last_seen_us).collect();
            let mid = seen.len() / 2;
            *seen.select_nth_unstable(mid).1
        });
        let cutoff = |f: &OpenFlow| match median {
            Some(median) => f.flow.last_seen_us <= median,
            None => f.flow.last_seen_us + limits.idle_us(f.flow.proto) < now,
        };
        // One pass in the map's order (no list of keys, no second lookup per flow).
        self.open.extract_if(|_, f| cutoff(f)).for_each(|(_, f)| close(f.finish()));
        // Sweeping walks every open flow: do it once per shortest timeout.
        self.next_sweep_us =
            now + 1_000_000 * limits.tcp_idle_secs.min(limits.udp_idle_secs).min(limits.other_idle_secs).max(1);
    }
}

/// Where a shard's flows go once closed: summarized (with a summary; only
/// the flows it hands back are kept) and kept under `max_closed`.
#[derive(Default)]
struct Closer {
    closed: Closed,
    summary: Option<Box<Summary>>,
}

impl Closer {
    /// Take a closed flow (in closing order).
    fn take(&mut self, flow: Flow, max_closed: usize) {
        let kept = match &mut self.summary {
            Some(summary) => summary.add(flow),
            None => Some(flow),
        };
        if let Some(flow) = kept {
            self.closed.push(flow, max_closed);
        }
    }

    /// Close the shard's still open flows and return every flow of the
    /// shard (with a summary: the ones it kept) and the summary.
    fn finish(self, shard: FlowShard) -> (Vec<Flow>, bool, Option<Summary>) {
        let merged = self.closed.compacted();
        let mut flows = self.closed.into_flows(shard.open.len());
        let mut summary = self.summary;
        let open = shard.open.into_values().map(OpenFlow::finish);
        match &mut summary {
            Some(s) => flows.extend(open.filter_map(|f| s.add(f))),
            None => flows.extend(open),
        }
        (flows, merged, summary.map(|s| *s))
    }
}

/// Closed flows of a shard. They are kept one by one until there are more
/// than `max_closed`; then flows that differ only in the client port and
/// counters (the same client address, server, protocol and state) are
/// merged into one record per group. That bounds memory on long captures.
/// Flows closed after a compaction again wait one by one, for as many flows
/// as the groups hold, and are then folded into the groups.
#[derive(Default)]
struct Closed {
    /// Closed since the last compaction, in closing order.
    recent: Vec<Flow>,
    groups: HashMap<MergeKey, Group, BuildHasherDefault<KeyHasher>>,
    /// Compactions so far.
    round: u32,
    /// Flows folded into groups so far: the closing order of the next one.
    folded: u64,
    /// Compact when holding more than this many records.
    compact_at: usize,
}

/// Where a flow stands among the members of its group: the earlier first
/// packet wins, then the earlier closing.
type Rank = (u64, u64);

/// One record standing for every flow of a merge group.
struct Group {
    flow: Flow,
    /// The member whose record (client port, history) the group shows.
    lead: Rank,
    /// The member its ICMP error came from, within the current round. A
    /// group from an earlier round ranks as its lead, before every newer flow.
    icmp_from: Option<Rank>,
    round: u32,
}

impl Group {
    fn new(flow: Flow, rank: Rank, round: u32) -> Group {
        Group { icmp_from: flow.icmp_error.map(|_| rank), lead: rank, round, flow }
    }

    /// Merge `flow`: counts add up, the earliest member leads, and the ICMP
    /// error is the earliest one's by [`Group::icmp_from`]'s ranking.
    fn absorb(&mut self, mut flow: Flow, rank: Rank, round: u32) {
        if self.round != round {
            self.round = round;
            self.icmp_from = self.flow.icmp_error.map(|_| self.lead);
        }
        if rank < self.lead {
            std::mem::swap(&mut self.flow.client, &mut flow.client);
            std::mem::swap(&mut self.flow.history, &mut flow.history);
            self.lead = rank;
        }
        if flow.icmp_error.is_some() && self.icmp_from.is_none_or(|from| rank < from) {
            self.flow.icmp_error = flow.icmp_error;
            self.icmp_from = Some(rank);
        }
        self.flow.add_counts(&flow);
    }
}

impl Closed {
    fn len(&self) -> usize {
        self.recent.len() + self.groups.len()
    }

    fn compacted(&self) -> bool {
        self.round > 0
    }

    fn push(&mut self, flow: Flow, max_closed: usize) {
        self.recent.push(flow);
        if self.len() > self.compact_at.max(max_closed) {
            self.compact();
        }
    }

    /// Fold the recent flows into the groups, in closing order.
    fn compact(&mut self) {
        self.round += 1;
        for flow in self.recent.drain(..) {
            let rank = (flow.first_seen_us, self.folded);
            self.folded += 1;
            match self.groups.entry(merge_key(&flow)) {
                Entry::Vacant(slot) => {
                    slot.insert(Group::new(flow, rank, self.round));
                }
                Entry::Occupied(mut slot) => slot.get_mut().absorb(flow, rank, self.round),
            }
        }
        // Amortized: newer flows wait one by one for as many as the groups hold.
        self.compact_at = self.groups.len() * 2;
    }

    /// Every record, with room for `more`.
    fn into_flows(self, more: usize) -> Vec<Flow> {
        let mut flows = self.recent;
        // Exact: growing by doubling would copy every record at the peak.
        flows.reserve_exact(self.groups.len() + more);
        flows.extend(self.groups.into_values().map(|g| g.flow));
        flows
    }
}

/// Client address, server address, then the address families, server port,
/// protocol, state and attempt_seen packed in plain integers: cheap to
/// compare, and equal exactly when those fields are.
type MergeKey = (u128, u128, u64);

fn merge_key(f: &Flow) -> MergeKey {
    let (client_v6, client) = ip_bits(f.client.ip());
    let (server_v6, server) = ip_bits(f.server.ip());
    let rest = (u64::from(client_v6) << 41)
        | (u64::from(server_v6) << 40)
        | (u64::from(f.server.port()) << 24)
        | (u64::from(f.proto) << 16)
        | ((f.state as u64) << 8)
        | u64::from(f.attempt_seen);
    (client, server, rest)
}

fn ip_bits(ip: IpAddr) -> (bool, u128) {
    match ip {
        IpAddr::V4(a) => (false, u128::from(u32::from(a))),
        IpAddr::V6(a) => (true, u128::from(a)),
    }
}

/// The flow table, sharded by flow key: each shard can be fed by a thread
/// of its own ([`FlowTable::into_feeders`]).
pub struct FlowTable {
    feeders: Vec<ShardFeeder>,
}

/// One shard and its closer, fed by one thread of its own, in file order:
/// the packets of its shard, which the thread parsed itself or got from the
/// thread that parsed their chunk of the file (`learn::chunked`). Flows are
/// only ever touched by one thread: a pipeline with one thread reading for
/// another's whole flow table was bimodal on this 2-core VM
/// (docs/benchmarks.md).
pub struct ShardFeeder {
    shard: FlowShard,
    closer: Closer,
    limits: FlowLimits,
}

impl ShardFeeder {
    /// Add one packet of this shard; the flows it closes are summarized at once.
    pub fn add(&mut self, p: &Decoded) {
        let (closer, max_closed) = (&mut self.closer, self.limits.max_closed);
        self.shard.add(p, &self.limits, &mut |f| closer.take(f, max_closed));
    }
}

impl FlowTable {
    /// The limits are for the whole table; each shard gets its part.
    pub fn new(shards: usize, limits: FlowLimits) -> FlowTable {
        let n = shards.max(1);
        let per_shard =
            FlowLimits { max_open: (limits.max_open / n).max(1), max_closed: (limits.max_closed / n).max(1), ..limits };
        let feeder =
            || ShardFeeder { shard: FlowShard::default(), closer: Closer::default(), limits: per_shard.clone() };
        FlowTable { feeders: (0..n).map(|_| feeder()).collect() }
    }

    /// A table that summarizes flows as they close (see [`Summary`]).
    pub fn summarizing(shards: usize, cfg: &Config) -> FlowTable {
        let mut table = FlowTable::new(shards, cfg.flows.clone());
        let cfg = std::sync::Arc::new(cfg.clone());
        for feeder in &mut table.feeders {
            feeder.closer.summary = Some(Box::new(Summary::new(cfg.clone())));
        }
        table
    }

    /// Feed decoded packets (in capture order) on this thread.
    pub fn add_batch(&mut self, batch: &[Decoded]) {
        let n = self.feeders.len();
        for p in batch {
            self.feeders[p.shard(n)].add(p);
        }
    }

    /// Open and closed records held (for the memory bound).
    pub fn held(&self) -> usize {
        self.feeders.iter().map(|f| f.shard.open.len() + f.closer.closed.len()).sum()
    }

    /// The shards, in order, to be fed by threads of their own: shard `i`
    /// of `n` takes the packets whose [`Decoded::shard`]`(n)` is `i`.
    pub fn into_feeders(self) -> Vec<ShardFeeder> {
        self.feeders
    }

    /// The table the feeders of [`FlowTable::into_feeders`] make up again.
    pub fn from_feeders(feeders: Vec<ShardFeeder>) -> FlowTable {
        FlowTable { feeders }
    }

    /// All flows sorted by first packet time then by endpoints
    /// (deterministic); with a summary, the kept ones unsorted.
    pub fn finish(self) -> FlowSet {
        let mut flows = Vec::new();
        let mut compacted = false;
        let mut summary: Option<Summary> = None;
        for ShardFeeder { shard, closer, .. } in self.feeders {
            let (f, merged, s) = closer.finish(shard);
            if flows.is_empty() {
                flows = f;
            } else {
                flows.extend(f);
            }
            compacted |= merged;
            match (&mut summary, s) {
                (Some(all), Some(s)) => all.merge(s),
                (None, s) => summary = s,
                (_, None) => {}
            }
        }
        // The detectors order each source's flows themselves; only a full
        // list (for --dump-flows) needs sorting.
        if summary.is_none() {
            sort_flows(&mut flows);
        }
        FlowSet { flows, compacted, summary }
    }
}

/// The table's output.
pub struct FlowSet {
    pub flows: Vec<Flow>,
    /// Some flows were merged to bound memory (their client ports are examples).
    pub compacted: bool,
    /// From [`FlowTable::summarizing`].
    pub summary: Option<Summary>,
}

pub fn sort_flows(flows: &mut [Flow]) {
    // The key is complete enough that only identical records tie.
    let key = |f: &Flow| {
        (
            f.first_seen_us,
            f.proto,
            f.client,
            f.server,
            f.last_seen_us,
            f.state,
            f.connections,
            f.orig.packets,
            f.resp.packets,
        )
    };
    if flows.is_sorted_by(|a, b| key(a) <= key(b)) {
        return;
    }
    // Large records: sort small (first seen, index) pairs packed in one
    // integer (a plain integer sort, no comparator), the full key only
    // breaking ties of first seen, then move each record once. Stable, like
    // `sort_by_cached_key`, without its copy of every key.
    let mut packed: Vec<u128> =
        flows.iter().zip(0u32..).map(|(f, i)| u128::from(f.first_seen_us) << 32 | u128::from(i)).collect();
    packed.sort_unstable();
    let mut order: Vec<u32> = packed.iter().map(|p| *p as u32).collect();
    drop(packed);
    let mut start = 0;
    while start < order.len() {
        let first_seen = flows[order[start] as usize].first_seen_us;
        let len = order[start..].iter().take_while(|i| flows[**i as usize].first_seen_us == first_seen).count();
        // Already by index within the run: the stable sort keeps that for equal keys.
        order[start..start + len].sort_by(|a, b| key(&flows[*a as usize]).cmp(&key(&flows[*b as usize])));
        start += len;
    }
    // Apply the permutation in place: position `i` takes the record that
    // belongs there, following earlier swaps to where it went.
    for i in 0..order.len() {
        let mut from = order[i] as usize;
        while from < i {
            from = order[from] as usize;
        }
        order[i] = from as u32;
        flows.swap(i, from);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::learn::decode::Decoded;
    use crate::learn::flows::{ConnState, Endpoint};
    use tcp_flags::*;

    const C: &str = "10.0.0.2:40000";
    const S: &str = "10.0.0.1:22";

    fn pkt(t: u64, from: &str, to: &str, proto: u8, flags: u8, payload: u32) -> Decoded {
        let endpoint = |s: &str| {
            let a: std::net::SocketAddrV4 = s.parse().unwrap();
            Endpoint { port: a.port(), ..Endpoint::v4(&a.ip().octets()) }
        };
        let (key, from_lo) = FlowKey::new(proto, false, endpoint(from), endpoint(to));
        Decoded {
            ts_us: t * 1_000_000,
            key,
            from_lo,
            tcp_flags: flags,
            icmp_type: 0,
            icmp_code: 0,
            ip_len: 40 + payload,
            payload_len: payload,
            error_from: None,
            key_hash: key.hash_u64(),
        }
    }

    fn run(pkts: &[Decoded], limits: FlowLimits) -> Vec<Flow> {
        let mut t = FlowTable::new(1, limits);
        t.add_batch(pkts);
        t.finish().flows
    }

    fn states(pkts: &[Decoded]) -> Vec<(ConnState, String, String)> {
        run(pkts, FlowLimits::default())
            .into_iter()
            .map(|f| (f.state, f.client.to_string(), f.history.to_string()))
            .collect()
    }

    #[test]
    fn zeek_states_from_handshakes() {
        let s = |v: &[Decoded]| states(v).into_iter().map(|(st, c, h)| format!("{st} {c} {h}")).collect::<Vec<_>>();
        assert_eq!(s(&[pkt(1, C, S, TCP, SYN, 0)]), ["S0 10.0.0.2:40000 S"]);
        assert_eq!(s(&[pkt(1, C, S, TCP, SYN, 0), pkt(1, S, C, TCP, RST | ACK, 0)]), ["REJ 10.0.0.2:40000 Sr"]);
        let full = [
            pkt(1, C, S, TCP, SYN, 0),
            pkt(1, S, C, TCP, SYN | ACK, 0),
            pkt(1, C, S, TCP, ACK, 0),
            pkt(2, C, S, TCP, ACK, 100),
            pkt(2, S, C, TCP, ACK, 300),
            pkt(3, C, S, TCP, FIN | ACK, 0),
            pkt(3, S, C, TCP, FIN | ACK, 0),
        ];
        assert_eq!(s(&full), ["SF 10.0.0.2:40000 ShADdFf"]);
        assert_eq!(s(&full[..5]), ["S1 10.0.0.2:40000 ShADd"]);
        assert_eq!(s(&[pkt(1, C, S, TCP, SYN, 0), pkt(1, C, S, TCP, RST, 0)]), ["RSTOS0 10.0.0.2:40000 SR"]);
        // Mid-stream data first, then a handshake packet from the other side:
        // the SYN-ACK decides the roles, whatever spoke first.
        assert_eq!(s(&[pkt(1, C, S, TCP, ACK, 10), pkt(2, S, C, TCP, SYN | ACK, 0)]), ["OTH 10.0.0.2:40000 Dh"]);
        assert_eq!(s(&[pkt(1, S, C, TCP, ACK, 10), pkt(2, S, C, TCP, SYN | ACK, 0)]), ["OTH 10.0.0.2:40000 dh"]);
    }

    #[test]
    fn roles_ignore_port_numbers() {
        // A "server" on a high port and a client on port 80: the SYN decides.
        let f = &run(
            &[
                pkt(1, "10.0.0.9:80", "10.0.0.1:50000", TCP, SYN, 0),
                pkt(1, "10.0.0.1:50000", "10.0.0.9:80", TCP, SYN | ACK, 0),
            ],
            FlowLimits::default(),
        )[0];
        assert_eq!(f.client.to_string(), "10.0.0.9:80");
        assert_eq!(f.server.to_string(), "10.0.0.1:50000");
    }

    #[test]
    fn udp_is_confirmed_only_with_both_directions() {
        let one = run(&[pkt(1, C, "10.0.0.1:53", UDP, 0, 30)], FlowLimits::default());
        assert_eq!((one[0].state, one[0].answered()), (ConnState::S0, false));
        let both =
            run(&[pkt(1, C, "10.0.0.1:53", UDP, 0, 30), pkt(1, "10.0.0.1:53", C, UDP, 0, 90)], FlowLimits::default());
        assert_eq!((both[0].state, both[0].answered()), (ConnState::SF, true));
    }

    #[test]
    fn idle_timeout_and_reused_ports_start_new_flows() {
        let limits = FlowLimits::default();
        let udp = run(&[pkt(1, C, "10.0.0.1:53", UDP, 0, 1), pkt(1 + 61, C, "10.0.0.1:53", UDP, 0, 1)], limits.clone());
        assert_eq!(udp.len(), 2);
        let udp = run(&[pkt(1, C, "10.0.0.1:53", UDP, 0, 1), pkt(1 + 59, C, "10.0.0.1:53", UDP, 0, 1)], limits.clone());
        assert_eq!(udp.len(), 1);
        // A closed TCP connection, then a new SYN on the same ports: two flows.
        let tcp = run(
            &[
                pkt(1, C, S, TCP, SYN, 0),
                pkt(1, S, C, TCP, RST | ACK, 0),
                pkt(2, C, S, TCP, SYN, 0),
                pkt(2, C, S, TCP, SYN, 0),
            ],
            limits,
        );
        assert_eq!(tcp.iter().map(|f| f.state).collect::<Vec<_>>(), [ConnState::REJ, ConnState::S0]);
    }

    #[test]
    fn memory_is_bounded_by_limits() {
        // 10,000 one-packet UDP flows from one client: open flows are closed
        // early beyond max_open, and identical closed ones are merged.
        let limits = FlowLimits { max_open: 100, max_closed: 50, ..FlowLimits::default() };
        let pkts: Vec<Decoded> = (0..10_000u64)
            .map(|i| pkt(1 + i / 1000, &format!("10.0.0.2:{}", 1024 + i), "10.0.0.1:53", UDP, 0, 1))
            .collect();
        let mut t = FlowTable::new(1, limits);
        let mut peak = 0;
        for chunk in pkts.chunks(100) {
            t.add_batch(chunk);
            peak = peak.max(t.held());
        }
        assert!(peak <= 300, "peak {peak}");
        let set = t.finish();
        assert!(set.compacted);
        assert_eq!(set.flows.iter().map(|f| f.connections).sum::<u64>(), 10_000);
        assert!(set.flows.len() < 300, "{}", set.flows.len());
    }

    /// Shards fed by threads of their own, as `read_into` runs them, keep
    /// the same flows as one table fed packet by packet, with one shard and
    /// with three; and three shards keep the same flows as one when the
    /// limits are not reached.
    #[test]
    fn shards_fed_apart_keep_the_same_flows() {
        // Short UDP and TCP flows from a few clients, idle gaps that make
        // sweeps close many flows at once.
        let pkts: Vec<Decoded> = (0..6_000u64)
            .flat_map(|i| {
                let client = format!("10.0.{}.2:{}", i % 7, 1024 + i);
                let t = 1 + i / 50 * 70;
                [pkt(t, &client, "10.0.0.1:53", UDP, 0, 30), pkt(t, "10.0.0.1:53", &client, UDP, 0, 90)]
                    .into_iter()
                    .chain((i % 3 == 0).then(|| pkt(t, &client, S, TCP, SYN, 0)))
            })
            .collect();
        let mut one_shard = None;
        for (shards, max_closed) in [(1, 500_000), (3, 500_000), (1, 200), (3, 200)] {
            let limits = FlowLimits { max_closed, ..FlowLimits::default() };
            let mut whole = FlowTable::new(shards, limits.clone());
            whole.add_batch(&pkts);
            let mut feeders = FlowTable::new(shards, limits).into_feeders();
            std::thread::scope(|s| {
                for (i, feeder) in feeders.iter_mut().enumerate() {
                    let pkts = &pkts;
                    s.spawn(move || pkts.iter().filter(|p| p.shard(shards) == i).for_each(|p| feeder.add(p)));
                }
            });
            let (a, b) = (whole.finish(), FlowTable::from_feeders(feeders).finish());
            assert_eq!(a.compacted, b.compacted);
            assert_eq!(a.compacted, max_closed == 200, "{shards} shards");
            assert_eq!(a.flows, b.flows, "{shards} shards, max_closed {max_closed}");
            assert!(a.flows.len() > 100);
            if max_closed == 500_000 {
                assert_eq!(one_shard.get_or_insert_with(|| a.flows.clone()), &a.flows, "{shards} shards");
            }
        }
    }
}
