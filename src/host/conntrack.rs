//! Reads the kernel's connection tracking table over ctnetlink (the same
//! netlink dump `conntrack -L` asks for), in the network namespace of the
//! calling thread.
//!
//! A table dump only shows live entries, and the kernel deletes an entry at
//! once when the only answer was a RST (a SYN to a closed port), so a scan of
//! closed ports leaves nothing to dump. [`watch`] therefore also follows the
//! conntrack events (like `conntrack -E`) for a while and returns the
//! connections that ended meanwhile together with the table at the end.
//!
//! Sockets, requests and message framing are the shared [`crate::netlink`]
//! layer's; tuples, TCP state and status flags are decoded by
//! netlink-packet-netfilter; the counters (`nf_conntrack_acct=1`) and
//! timestamps (`nf_conntrack_timestamp=1`) it leaves as raw attributes are
//! decoded here. The learner turns entries into flows
//! ([`crate::learn::conntrack`]).

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use netlink_packet_core::{
    DefaultNla, Emitable, Nla, NlaBuffer, NlasIterator, ParseableParametrized, NLA_TYPE_MASK, NLM_F_CREATE,
};
use netlink_packet_netfilter::conntrack::{
    ConntrackAttribute, ConntrackMessage, IPTuple, ProtoInfo, ProtoInfoTCP, ProtoTuple, Status, Tuple,
};
use netlink_sys::Socket;

use crate::netlink::{self, Malformed, Reply};

// include/uapi/linux/netfilter/nfnetlink.h
const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const NFNLGRP_CONNTRACK_NEW: u32 = 1;
const NFNLGRP_CONNTRACK_UPDATE: u32 = 2;
const NFNLGRP_CONNTRACK_DESTROY: u32 = 3;
// include/uapi/linux/netfilter/nfnetlink_conntrack.h
const IPCTNL_MSG_CT_GET: u16 = 1;
const CTA_COUNTERS_ORIG: u16 = 9;
const CTA_COUNTERS_REPLY: u16 = 10;
const CTA_ID: u16 = 12;
const CTA_TIMESTAMP: u16 = 20;
const CTA_COUNTERS_PACKETS: u16 = 1;
const CTA_COUNTERS_BYTES: u16 = 2;
const CTA_COUNTERS32_PACKETS: u16 = 3;
const CTA_COUNTERS32_BYTES: u16 = 4;
const CTA_TIMESTAMP_START: u16 = 1;
const CTA_TIMESTAMP_STOP: u16 = 2;

/// One direction of a connection as conntrack saw it first (`orig`) or
/// expects the answer (`reply`). Ports are 0 for protocols without ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CtTuple {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
}

/// Packet and byte counters of one direction (only with `nf_conntrack_acct=1`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub packets: u64,
    pub bytes: u64,
}

/// TCP states of `enum tcp_conntrack` (include/uapi/linux/netfilter/nf_conntrack_tcp.h).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TcpState {
    None,
    SynSent,
    SynRecv,
    Established,
    FinWait,
    CloseWait,
    LastAck,
    TimeWait,
    Close,
    SynSent2,
    Other(u8),
}

impl From<u8> for TcpState {
    fn from(v: u8) -> Self {
        match v {
            0 => TcpState::None,
            1 => TcpState::SynSent,
            2 => TcpState::SynRecv,
            3 => TcpState::Established,
            4 => TcpState::FinWait,
            5 => TcpState::CloseWait,
            6 => TcpState::LastAck,
            7 => TcpState::TimeWait,
            8 => TcpState::Close,
            9 => TcpState::SynSent2,
            n => TcpState::Other(n),
        }
    }
}

impl fmt::Display for TcpState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            TcpState::None => "NONE",
            TcpState::SynSent => "SYN_SENT",
            TcpState::SynRecv => "SYN_RECV",
            TcpState::Established => "ESTABLISHED",
            TcpState::FinWait => "FIN_WAIT",
            TcpState::CloseWait => "CLOSE_WAIT",
            TcpState::LastAck => "LAST_ACK",
            TcpState::TimeWait => "TIME_WAIT",
            TcpState::Close => "CLOSE",
            TcpState::SynSent2 => "SYN_SENT2",
            TcpState::Other(n) => return write!(f, "STATE_{n}"),
        };
        f.write_str(name)
    }
}

/// One conntrack table entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CtEntry {
    /// IP protocol number (6 TCP, 17 UDP, 1 ICMP, ...).
    pub proto: u8,
    pub orig: CtTuple,
    pub reply: CtTuple,
    pub tcp_state: Option<TcpState>,
    /// A packet was seen in the reply direction.
    pub seen_reply: bool,
    /// Conntrack judged the connection a real one (e.g. TCP handshake done).
    pub assured: bool,
    pub orig_counters: Option<Counters>,
    pub reply_counters: Option<Counters>,
    /// Nanoseconds since the epoch (only with `nf_conntrack_timestamp=1`).
    pub start_ns: Option<u64>,
    pub stop_ns: Option<u64>,
    /// Seconds left before the entry expires.
    pub timeout: Option<u32>,
    /// The kernel's id of the entry (tells apart entries that reuse a tuple).
    pub id: Option<u32>,
}

impl CtEntry {
    /// Takes what a later event says; update events carry only what changed.
    fn absorb(&mut self, later: CtEntry) {
        self.tcp_state = later.tcp_state.or(self.tcp_state);
        self.seen_reply |= later.seen_reply;
        self.assured |= later.assured;
        self.orig_counters = later.orig_counters.or(self.orig_counters);
        self.reply_counters = later.reply_counters.or(self.reply_counters);
        // The kernel's timestamp beats the time we saw the creation event.
        self.start_ns = later.start_ns.or(self.start_ns);
        self.stop_ns = later.stop_ns.or(self.stop_ns);
        self.timeout = later.timeout.or(self.timeout);
    }

    pub fn key(&self) -> (Option<u32>, u8, CtTuple) {
        (self.id, self.proto, self.orig)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConntrackError {
    #[error("cannot open a netfilter netlink socket: {0}")]
    Socket(std::io::Error),
    #[error("conntrack dump failed: {0} (is nf_conntrack loaded? reading it needs CAP_NET_ADMIN)")]
    Kernel(std::io::Error),
    #[error("malformed conntrack message at byte {offset} of a netlink reply: {reason}")]
    Malformed { offset: usize, reason: String },
}

impl ConntrackError {
    /// A reply that did not parse is `Malformed`; anything else the kernel's.
    fn from_reply(e: io::Error) -> ConntrackError {
        match Malformed::of(&e) {
            Some(m) => ConntrackError::Malformed { offset: m.offset.unwrap_or(0), reason: m.reason.clone() },
            None => ConntrackError::Kernel(e),
        }
    }
}

/// Dumps the conntrack table (IPv4 and IPv6) of the calling thread's network
/// namespace, sorted by protocol and original tuple.
pub fn dump() -> Result<Vec<CtEntry>, ConntrackError> {
    let request = netlink::dump_request(ct_kind(IPCTNL_MSG_CT_GET), libc::AF_UNSPEC as u8, &[]);
    let mut entries = Vec::new();
    netlink::dump(&request, &mut |m| each_entry(m, &mut |_, e| entries.push(e))).map_err(ConntrackError::from_reply)?;
    entries.sort_by_key(|e| (e.proto, e.orig));
    Ok(entries)
}

/// Asks the kernel for single entries: event messages carry the counters
/// only when an entry is destroyed, which a closed TCP connection is only
/// seconds (CLOSE) or minutes (TIME_WAIT) later.
pub struct Lookup {
    socket: Socket,
    buf: Vec<u8>,
}

impl Lookup {
    pub fn open() -> Result<Lookup, ConntrackError> {
        let socket = netlink::socket().map_err(ConntrackError::Socket)?;
        Ok(Lookup { socket, buf: Vec::with_capacity(1 << 12) })
    }

    /// The entry with `proto` and original tuple `orig` as the kernel has it
    /// now (counters and all); `None` when it is gone.
    pub fn get(&mut self, proto: u8, orig: CtTuple) -> Result<Option<CtEntry>, ConntrackError> {
        let family = if orig.src.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 } as u8;
        let tuple = vec![
            Tuple::Ip(vec![IPTuple::SourceAddress(orig.src), IPTuple::DestinationAddress(orig.dst)]),
            Tuple::Proto(vec![
                ProtoTuple::Protocol(proto.into()),
                ProtoTuple::SourcePort(orig.sport),
                ProtoTuple::DestinationPort(orig.dport),
            ]),
        ];
        let attrs = [ConntrackAttribute::CtaTupleOrig(tuple)];
        let mut encoded = vec![0; attrs.as_slice().buffer_len()];
        attrs.as_slice().emit(&mut encoded);
        let bytes = netlink::request_with(ct_kind(IPCTNL_MSG_CT_GET), 0, family, &encoded);
        self.socket.send(&bytes, 0).map_err(ConntrackError::Kernel)?;
        self.buf.clear();
        self.socket.recv(&mut self.buf, 0).map_err(ConntrackError::Kernel)?;
        let mut found = None;
        match parse_datagram(&self.buf, &mut |_, e| found = Some(e)) {
            Ok(_) => Ok(found),
            Err(ConntrackError::Kernel(e)) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Entries seen by [`watch`]: those that ended while watching (in event
/// order), then the live table at the end.
#[derive(Debug, Default)]
pub struct Watched {
    /// Destroyed entries, then those that expired without a destroy event
    /// yet (the kernel reaps expired entries lazily; a dump skips them).
    pub destroyed: Vec<CtEntry>,
    pub live: Vec<CtEntry>,
    /// Event datagrams the kernel dropped because we read too slowly (ENOBUFS).
    pub lost_overruns: u64,
}

/// Event buffer: a scan of a thousand closed ports makes two thousand
/// events within a second.
const EVENT_BUFFER_BYTES: libc::c_int = 16 << 20;

/// Follows conntrack events during `duration` (or until `stop` says so),
/// then dumps the table. Entries created or changed meanwhile that are
/// neither destroyed nor live at the end expired unreaped; they count as
/// ended at their last event.
pub fn watch(duration: Duration, stop: &dyn Fn() -> bool) -> Result<Watched, ConntrackError> {
    let mut events = Events::subscribe()?;
    let mut tracker = Tracker::default();
    let mut watched = Watched::default();
    let deadline = Instant::now() + duration;
    while !stop() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        events.next(left.min(Duration::from_millis(200)), &mut |event, e, now_ns| {
            if let Some(ended) = tracker.absorb(event, e, now_ns) {
                watched.destroyed.push(ended);
            }
        })?;
    }
    watched.lost_overruns = events.lost_overruns;
    watched.live = dump()?;
    for e in &mut watched.live {
        if let Some(known) = tracker.open.remove(&e.key()) {
            e.start_ns = e.start_ns.or(known.0.start_ns);
        }
    }
    let mut expired: Vec<CtEntry> =
        tracker.open.into_values().map(|(e, last_ns)| CtEntry { stop_ns: Some(last_ns), ..e }).collect();
    expired.sort_by_key(|e| (e.stop_ns, e.proto, e.orig));
    watched.destroyed.extend(expired);
    Ok(watched)
}

/// A subscription to the conntrack event groups (new, update, destroy) of
/// the calling thread's network namespace.
pub struct Events {
    socket: Socket,
    buf: Vec<u8>,
    /// Event datagrams the kernel dropped because we read too slowly (ENOBUFS).
    pub lost_overruns: u64,
}

impl Events {
    pub fn subscribe() -> Result<Events, ConntrackError> {
        let groups = [NFNLGRP_CONNTRACK_NEW, NFNLGRP_CONNTRACK_UPDATE, NFNLGRP_CONNTRACK_DESTROY];
        let socket = netlink::subscribe(&groups, EVENT_BUFFER_BYTES).map_err(ConntrackError::Socket)?;
        Ok(Events { socket, buf: Vec::with_capacity(1 << 16), lost_overruns: 0 })
    }

    /// Waits up to `timeout` for one datagram and hands each event in it to
    /// `out` with the time it was read (ns since the epoch). Returns whether
    /// a datagram came.
    pub fn next(
        &mut self,
        timeout: Duration,
        out: &mut dyn FnMut(Event, CtEntry, u64),
    ) -> Result<bool, ConntrackError> {
        if !netlink::readable(&self.socket, timeout) {
            return Ok(false);
        }
        self.buf.clear();
        match self.socket.recv(&mut self.buf, 0) {
            Ok(_) => {
                let now_ns = unix_ns();
                parse_datagram(&self.buf, &mut |event, e| out(event, e, now_ns))?;
                Ok(true)
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                self.lost_overruns += 1;
                Ok(true)
            }
            Err(e) => Err(ConntrackError::Kernel(e)),
        }
    }
}

/// The entries known from events, merged: update events carry only what
/// changed, so each event is folded into what earlier ones said.
#[derive(Default)]
pub struct Tracker {
    /// Open entries by key, with the time of their last event (ns).
    open: HashMap<(Option<u32>, u8, CtTuple), (CtEntry, u64)>,
}

impl Tracker {
    /// Folds one event in; returns the whole entry when it ended.
    pub fn absorb(&mut self, event: Event, mut e: CtEntry, now_ns: u64) -> Option<CtEntry> {
        let known = self.open.remove(&e.key());
        if event == Event::Destroyed {
            if let Some((mut earlier, _)) = known {
                earlier.absorb(e);
                e = earlier;
            }
            // Without kernel timestamps: the event comes as it happens.
            e.stop_ns = e.stop_ns.or(Some(now_ns));
            return Some(e);
        }
        let entry = match known {
            Some((mut earlier, _)) => {
                earlier.absorb(e);
                earlier
            }
            None if event == Event::Created => CtEntry { start_ns: e.start_ns.or(Some(now_ns)), ..e },
            // Created before the watch: its start stays unknown.
            None => e,
        };
        self.open.insert(entry.key(), (entry, now_ns));
        None
    }

    /// The open entry with this key, as merged so far.
    pub fn get_key(&self, key: &(Option<u32>, u8, CtTuple)) -> Option<&CtEntry> {
        self.open.get(key).map(|(e, _)| e)
    }

    /// Forgets entries whose last event is older than `before_ns` (they
    /// expired without a destroy event) and returns them as ended then.
    pub fn expire(&mut self, before_ns: u64) -> Vec<CtEntry> {
        let old: Vec<_> = self.open.iter().filter(|(_, (_, at))| *at < before_ns).map(|(k, _)| *k).collect();
        old.into_iter()
            .filter_map(|k| self.open.remove(&k))
            .map(|(e, last_ns)| CtEntry { stop_ns: e.stop_ns.or(Some(last_ns)), ..e })
            .collect()
    }

    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }
}

fn unix_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// Conntrack message `msg` (`IPCTNL_MSG_CT_*`) as a netfilter message kind.
fn ct_kind(msg: u16) -> u16 {
    NFNL_SUBSYS_CTNETLINK << 8 | msg
}

/// What a message says about its entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A dump line or an update event.
    Exists,
    /// A new-connection event.
    Created,
    Destroyed,
}

/// Decodes one datagram of a dump reply or of events (several netlink
/// messages); `out` gets each entry with what happened to it.
fn parse_datagram(buf: &[u8], out: &mut dyn FnMut(Event, CtEntry)) -> Result<Reply, ConntrackError> {
    netlink::walk_datagram(buf, &mut |m| each_entry(m, out)).map_err(ConntrackError::from_reply)
}

/// The entry of one conntrack message, if it has one, with its event.
fn each_entry(m: netlink::Message<'_>, out: &mut dyn FnMut(Event, CtEntry)) -> io::Result<()> {
    if m.kind >> 8 != NFNL_SUBSYS_CTNETLINK {
        return Ok(());
    }
    let message = ConntrackMessage::parse_with_param(m.body, (m.kind & 0xff) as u8)
        .map_err(|e| netlink::malformed_at(m.offset, &e.to_string()))?;
    // Dump replies and new/update events are NEW messages, destroy events DELETE.
    let (event, attrs) = match message {
        // New-connection events are flagged like a create request.
        ConntrackMessage::New(attrs) if m.flags & NLM_F_CREATE != 0 => (Event::Created, attrs),
        ConntrackMessage::New(attrs) => (Event::Exists, attrs),
        ConntrackMessage::Delete(attrs) => (Event::Destroyed, attrs),
        _ => return Ok(()),
    };
    if let Some(entry) = entry_from(&attrs).map_err(|reason| netlink::malformed_at(m.offset, &reason))? {
        out(event, entry);
    }
    Ok(())
}

/// Builds an entry from the attributes of one `IPCTNL_MSG_CT_NEW` message;
/// `None` for entries without both tuples (the kernel always sends them).
fn entry_from(attrs: &[ConntrackAttribute]) -> Result<Option<CtEntry>, String> {
    let (mut orig, mut reply, mut proto) = (None, None, 0);
    let mut entry = CtEntry {
        proto: 0,
        orig: CtTuple { src: [0u8; 4].into(), dst: [0u8; 4].into(), sport: 0, dport: 0 },
        reply: CtTuple { src: [0u8; 4].into(), dst: [0u8; 4].into(), sport: 0, dport: 0 },
        tcp_state: None,
        seen_reply: false,
        assured: false,
        orig_counters: None,
        reply_counters: None,
        start_ns: None,
        stop_ns: None,
        timeout: None,
        id: None,
    };
    for attr in attrs {
        match attr {
            ConntrackAttribute::CtaTupleOrig(t) => {
                let (tuple, p) = tuple_from(t)?;
                orig = Some(tuple);
                proto = p;
            }
            ConntrackAttribute::CtaTupleReply(t) => reply = Some(tuple_from(t)?.0),
            ConntrackAttribute::CtaStatus(s) => {
                entry.seen_reply = s.contains(Status::SeenReply);
                entry.assured = s.contains(Status::Assured);
            }
            ConntrackAttribute::CtaProtoInfo(infos) => {
                for info in infos {
                    if let ProtoInfo::TCP(tcp) = info {
                        for item in tcp {
                            if let ProtoInfoTCP::State(s) = item {
                                entry.tcp_state = Some(TcpState::from(*s));
                            }
                        }
                    }
                }
            }
            ConntrackAttribute::CtaTimeout(t) => entry.timeout = Some(*t),
            ConntrackAttribute::Other(nla) => match nla.kind() & NLA_TYPE_MASK {
                CTA_ID => entry.id = raw_value(nla).try_into().ok().map(u32::from_be_bytes),
                CTA_COUNTERS_ORIG => entry.orig_counters = Some(counters_from(nla)?),
                CTA_COUNTERS_REPLY => entry.reply_counters = Some(counters_from(nla)?),
                CTA_TIMESTAMP => (entry.start_ns, entry.stop_ns) = timestamps_from(nla)?,
                _ => {}
            },
            _ => {}
        }
    }
    let (Some(orig), Some(reply)) = (orig, reply) else { return Ok(None) };
    entry.proto = proto;
    entry.orig = orig;
    entry.reply = reply;
    Ok(Some(entry))
}

fn tuple_from(parts: &[Tuple]) -> Result<(CtTuple, u8), String> {
    let (mut src, mut dst, mut sport, mut dport, mut proto) = (None, None, 0, 0, None);
    for part in parts {
        match part {
            Tuple::Ip(ips) => {
                for ip in ips {
                    match ip {
                        IPTuple::SourceAddress(a) => src = Some(*a),
                        IPTuple::DestinationAddress(a) => dst = Some(*a),
                        _ => {}
                    }
                }
            }
            Tuple::Proto(items) => {
                for item in items {
                    match item {
                        ProtoTuple::Protocol(p) => proto = Some(u8::from(*p)),
                        ProtoTuple::SourcePort(p) => sport = *p,
                        ProtoTuple::DestinationPort(p) => dport = *p,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    match (src, dst, proto) {
        (Some(src), Some(dst), Some(proto)) => Ok((CtTuple { src, dst, sport, dport }, proto)),
        _ => Err("tuple without addresses or protocol".into()),
    }
}

/// The raw value of an attribute the netfilter crate does not decode.
fn raw_value(nla: &DefaultNla) -> Vec<u8> {
    let mut value = vec![0; nla.value_len()];
    nla.emit_value(&mut value);
    value
}

/// Calls `f(kind, value)` for each attribute nested in `nla`.
fn each_nested(nla: &DefaultNla, mut f: impl FnMut(u16, &[u8]) -> Result<(), String>) -> Result<(), String> {
    let value = raw_value(nla);
    for inner in NlasIterator::new(&value[..]) {
        let inner: NlaBuffer<&[u8]> = inner.map_err(|e| e.to_string())?;
        f(inner.kind(), inner.value())?;
    }
    Ok(())
}

fn be_u64(v: &[u8]) -> Result<u64, String> {
    match v.len() {
        8 => Ok(u64::from_be_bytes(v.try_into().expect("8 bytes"))),
        4 => Ok(u32::from_be_bytes(v.try_into().expect("4 bytes")).into()),
        n => Err(format!("counter of {n} bytes")),
    }
}

fn counters_from(nla: &DefaultNla) -> Result<Counters, String> {
    let mut c = Counters::default();
    each_nested(nla, |kind, v| {
        match kind {
            CTA_COUNTERS_PACKETS | CTA_COUNTERS32_PACKETS => c.packets = be_u64(v)?,
            CTA_COUNTERS_BYTES | CTA_COUNTERS32_BYTES => c.bytes = be_u64(v)?,
            _ => {}
        }
        Ok(())
    })?;
    Ok(c)
}

fn timestamps_from(nla: &DefaultNla) -> Result<(Option<u64>, Option<u64>), String> {
    let (mut start, mut stop) = (None, None);
    each_nested(nla, |kind, v| {
        match kind {
            CTA_TIMESTAMP_START => start = Some(be_u64(v)?),
            CTA_TIMESTAMP_STOP => stop = Some(be_u64(v)?),
            _ => {}
        }
        Ok(())
    })?;
    Ok((start, stop))
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload};
    use netlink_packet_netfilter::conntrack::Protocol;
    use netlink_packet_netfilter::{NetfilterHeader, NetfilterMessage, NetfilterProtoFamily};

    fn tuple(src: &str, dst: &str, sport: u16, dport: u16, proto: Protocol) -> Vec<Tuple> {
        vec![
            Tuple::Ip(vec![
                IPTuple::SourceAddress(src.parse().unwrap()),
                IPTuple::DestinationAddress(dst.parse().unwrap()),
            ]),
            Tuple::Proto(vec![
                ProtoTuple::Protocol(proto),
                ProtoTuple::SourcePort(sport),
                ProtoTuple::DestinationPort(dport),
            ]),
        ]
    }

    fn nested(kind: u16, items: &[(u16, Vec<u8>)]) -> DefaultNla {
        let inner: Vec<DefaultNla> = items.iter().map(|(k, v)| DefaultNla::new(*k, v.clone())).collect();
        let mut value = vec![0; inner.as_slice().buffer_len()];
        inner.as_slice().emit(&mut value);
        DefaultNla::new(kind | netlink_packet_core::NLA_F_NESTED, value)
    }

    /// A datagram as the kernel sends it: entries, then NLMSG_DONE.
    fn datagram(entries: Vec<Vec<ConntrackAttribute>>) -> Vec<u8> {
        let mut out = Vec::new();
        for attrs in entries {
            let mut msg = NetlinkMessage::new(
                NetlinkHeader::default(),
                NetlinkPayload::from(NetfilterMessage::new(
                    NetfilterHeader::new(NetfilterProtoFamily::IPv4, 0, 0),
                    ConntrackMessage::New(attrs),
                )),
            );
            msg.finalize();
            let mut bytes = vec![0; msg.buffer_len()];
            msg.serialize(&mut bytes);
            out.extend_from_slice(&bytes);
        }
        let mut done = NetlinkMessage::<NetfilterMessage>::new(
            NetlinkHeader::default(),
            NetlinkPayload::Done(netlink_packet_core::DoneMessage::default()),
        );
        done.finalize();
        let mut bytes = vec![0; done.buffer_len()];
        done.serialize(&mut bytes);
        out.extend_from_slice(&bytes);
        out
    }

    use netlink_packet_core::Emitable;

    #[test]
    fn decodes_tuples_state_flags_counters_and_timestamps() {
        let tcp = vec![
            ConntrackAttribute::CtaTupleOrig(tuple("10.0.0.2", "10.0.0.1", 40000, 22, Protocol::Tcp)),
            ConntrackAttribute::CtaTupleReply(tuple("10.0.0.1", "10.0.0.2", 22, 40000, Protocol::Tcp)),
            ConntrackAttribute::CtaStatus(Status::SeenReply | Status::Assured | Status::Confirmed),
            ConntrackAttribute::CtaTimeout(431999),
            ConntrackAttribute::CtaProtoInfo(vec![ProtoInfo::TCP(vec![ProtoInfoTCP::State(3)])]),
            ConntrackAttribute::Other(nested(
                CTA_COUNTERS_ORIG,
                &[
                    (CTA_COUNTERS_PACKETS, 7u64.to_be_bytes().to_vec()),
                    (CTA_COUNTERS_BYTES, 512u64.to_be_bytes().to_vec()),
                ],
            )),
            ConntrackAttribute::Other(nested(
                CTA_COUNTERS_REPLY,
                &[
                    (CTA_COUNTERS_PACKETS, 5u64.to_be_bytes().to_vec()),
                    (CTA_COUNTERS_BYTES, 900u64.to_be_bytes().to_vec()),
                ],
            )),
            ConntrackAttribute::Other(nested(
                CTA_TIMESTAMP,
                &[(CTA_TIMESTAMP_START, 1_700_000_000_000_000_000u64.to_be_bytes().to_vec())],
            )),
        ];
        let udp = vec![
            ConntrackAttribute::CtaTupleOrig(tuple("2001:db8::9", "2001:db8::1", 5353, 53, Protocol::Udp)),
            ConntrackAttribute::CtaTupleReply(tuple("2001:db8::1", "2001:db8::9", 53, 5353, Protocol::Udp)),
            ConntrackAttribute::CtaStatus(Status::Confirmed),
        ];
        let mut out = Vec::new();
        assert_eq!(parse_datagram(&datagram(vec![tcp, udp]), &mut |_, e| out.push(e)).unwrap(), Reply::Done);
        assert_eq!(out.len(), 2);
        let t = &out[0];
        assert_eq!((t.proto, t.orig.sport, t.orig.dport), (6, 40000, 22));
        assert_eq!(t.orig.src, "10.0.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(t.reply.src, "10.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(t.tcp_state, Some(TcpState::Established));
        assert!(t.seen_reply && t.assured);
        assert_eq!(t.orig_counters, Some(Counters { packets: 7, bytes: 512 }));
        assert_eq!(t.reply_counters, Some(Counters { packets: 5, bytes: 900 }));
        assert_eq!((t.start_ns, t.stop_ns), (Some(1_700_000_000_000_000_000), None));
        assert_eq!(t.timeout, Some(431999));
        let u = &out[1];
        assert_eq!((u.proto, u.orig.dport, u.tcp_state, u.seen_reply), (17, 53, None, false));
        assert_eq!(u.orig_counters, None);
    }

    #[test]
    fn a_damaged_message_is_an_error_with_its_offset() {
        let good = vec![
            ConntrackAttribute::CtaTupleOrig(tuple("10.0.0.2", "10.0.0.1", 1, 2, Protocol::Tcp)),
            ConntrackAttribute::CtaTupleReply(tuple("10.0.0.1", "10.0.0.2", 2, 1, Protocol::Tcp)),
        ];
        let mut bytes = datagram(vec![good.clone(), good]);
        let first_len = u32::from_ne_bytes(bytes[0..4].try_into().unwrap()) as usize;
        // Claim the second message is longer than the datagram.
        bytes[first_len..first_len + 4].copy_from_slice(&10_000u32.to_ne_bytes());
        let err = parse_datagram(&bytes, &mut |_, _| {}).unwrap_err();
        assert!(matches!(err, ConntrackError::Malformed { offset, .. } if offset == first_len), "{err}");
    }

    #[test]
    fn state_names_match_the_conntrack_tool() {
        assert_eq!(TcpState::from(2).to_string(), "SYN_RECV");
        assert_eq!(TcpState::from(8).to_string(), "CLOSE");
        assert_eq!(TcpState::from(42).to_string(), "STATE_42");
    }
}
