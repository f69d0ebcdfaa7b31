//! The flow vocabulary: [`Flow`] records with Zeek-like connection states,
//! their keys and the key hasher. Packets become flows in
//! [`super::flow_table`], whose TCP roles and states come from
//! [`super::tcp_state`]; conntrack entries become flows in
//! [`super::conntrack`].

use std::fmt;
use std::hash::Hasher;
use std::net::{IpAddr, SocketAddr};

use serde::Serialize;

pub use crate::ir::names::{ICMP, ICMPV6, TCP, UDP};

/// TCP flag bits as on the wire.
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const ACK: u8 = 0x10;
}

/// Zeek's `conn_state` vocabulary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum ConnState {
    /// Attempt seen, no reply.
    S0,
    /// Established, not terminated.
    S1,
    /// Established and terminated normally (for UDP/ICMP: both directions seen).
    SF,
    /// Attempt rejected (RST in reply to SYN).
    REJ,
    /// Established, close attempt by the originator only.
    S2,
    /// Established, close attempt by the responder only.
    S3,
    /// Established, originator aborted (RST).
    RSTO,
    /// Established, responder aborted (RST).
    RSTR,
    /// Originator sent SYN then RST; no SYN-ACK seen.
    RSTOS0,
    /// Responder sent SYN-ACK then RST; no SYN from the originator seen.
    RSTRH,
    /// Originator sent SYN then FIN; no SYN-ACK seen.
    SH,
    /// Responder sent SYN-ACK then FIN; no SYN seen.
    SHR,
    /// No SYN seen: mid-stream traffic.
    OTH,
}

impl fmt::Display for ConnState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Packets and IP bytes sent in one direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    pub packets: u64,
    pub bytes: u64,
}

/// An ICMP error that quoted one of the client's packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct IcmpError {
    pub icmp_type: u8,
    pub code: u8,
    /// Who sent the ICMP error (often a router, not the server).
    pub from: IpAddr,
}

impl IcmpError {
    /// ICMP or ICMPv6 "port unreachable": nothing listens on that UDP port.
    pub fn port_unreachable(&self) -> bool {
        match self.from {
            IpAddr::V4(_) => self.icmp_type == 3 && self.code == 3,
            IpAddr::V6(_) => self.icmp_type == 1 && self.code == 4,
        }
    }
}

/// One connection (or, after compaction, several identical ones).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Flow {
    /// IP protocol number.
    pub proto: u8,
    /// The originator (from the handshake).
    pub client: SocketAddr,
    /// The responder. For ICMP the ports are 0.
    pub server: SocketAddr,
    pub state: ConnState,
    /// Zeek-style history: originator upper case, responder lower case
    /// (S syn, H syn-ack, A ack, D data, F fin, R rst), each once.
    pub history: History,
    /// Did we see the originator's attempt (a SYN, or the first UDP/ICMP packet)?
    pub attempt_seen: bool,
    pub orig: Counters,
    pub resp: Counters,
    /// Microseconds since the Unix epoch.
    pub first_seen_us: u64,
    pub last_seen_us: u64,
    /// An ICMP error about the originator's packets (UDP scan, filtered port).
    pub icmp_error: Option<IcmpError>,
    /// How many connections this record stands for (> 1 only after compaction).
    pub connections: u64,
}

impl Flow {
    /// A fresh record with no packets; conntrack readers fill in the rest.
    pub fn new(proto: u8, client: SocketAddr, server: SocketAddr, first_seen_us: u64) -> Flow {
        Flow {
            proto,
            client,
            server,
            state: ConnState::OTH,
            history: History::default(),
            attempt_seen: false,
            orig: Counters::default(),
            resp: Counters::default(),
            first_seen_us,
            last_seen_us: first_seen_us,
            icmp_error: None,
            connections: 1,
        }
    }

    /// The server answered: a TCP handshake reply or a reply in both directions.
    pub fn answered(&self) -> bool {
        if self.icmp_error.is_some() && self.resp.packets == 0 {
            return false;
        }
        matches!(
            self.state,
            ConnState::S1 | ConnState::SF | ConnState::S2 | ConnState::S3 | ConnState::RSTO | ConnState::RSTR
        )
    }

    /// The originator's attempt was seen and got no useful answer.
    pub fn failed(&self) -> bool {
        self.attempt_seen && !self.answered()
    }

    /// TCP handshake completed by the client (its ACK after the SYN-ACK).
    pub fn handshake_completed(&self) -> bool {
        self.proto == TCP && self.answered() && (self.history.contains('A') || self.history.contains('D'))
    }

    pub fn duration_us(&self) -> u64 {
        self.last_seen_us.saturating_sub(self.first_seen_us)
    }

    /// `tcp 10.0.0.1:50000 -> 10.0.0.2:22 SF`
    pub fn describe(&self) -> String {
        format!("{} {} -> {} {}", proto_label(self.proto), self.client, self.server, self.state)
    }

    /// Add another record's counts and time span (not its ICMP error: see `flow_table::Group::absorb`).
    pub(super) fn add_counts(&mut self, other: &Flow) {
        self.orig.packets += other.orig.packets;
        self.orig.bytes += other.orig.bytes;
        self.resp.packets += other.resp.packets;
        self.resp.bytes += other.resp.bytes;
        self.first_seen_us = self.first_seen_us.min(other.first_seen_us);
        self.last_seen_us = self.last_seen_us.max(other.last_seen_us);
        self.connections += other.connections;
    }
}

/// A Zeek history string held inline: six events per direction, each once,
/// fit in 12 ASCII letters, so flows need no heap allocation for it.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct History {
    letters: [u8; History::CAPACITY],
    len: u8,
}

impl History {
    const CAPACITY: usize = 12;

    /// Append a letter; a full history or a non-letter is left as it is.
    pub fn push(&mut self, letter: char) {
        if letter.is_ascii_alphabetic() && usize::from(self.len) < Self::CAPACITY {
            self.letters[usize::from(self.len)] = letter as u8;
            self.len += 1;
        }
    }

    /// Whether `letter` was seen: a byte scan, where going through the
    /// `str` would check the letters are UTF-8 first (a sixth of the
    /// summarizing time in callgrind, on every closed flow).
    pub fn contains(&self, letter: char) -> bool {
        letter.is_ascii() && self.letters[..usize::from(self.len)].contains(&(letter as u8))
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.letters[..usize::from(self.len)]).expect("ASCII letters only")
    }

    /// The same events seen from the other side.
    pub(super) fn swap_case(self) -> History {
        let mut swapped = self;
        for b in &mut swapped.letters[..usize::from(self.len)] {
            *b ^= 0x20;
        }
        swapped
    }
}

impl std::ops::Deref for History {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl From<&str> for History {
    fn from(s: &str) -> History {
        let mut h = History::default();
        s.chars().for_each(|c| h.push(c));
        h
    }
}

impl fmt::Display for History {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for History {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl Serialize for History {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

pub fn proto_label(proto: u8) -> String {
    crate::ir::names::proto_name(proto)
}

/// One end of a packet or flow: the address as 16 bytes (IPv4 in the first
/// four, the rest zero) and the port. Plain bytes compare and hash cheaply.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Endpoint {
    pub addr: [u8; 16],
    pub port: u16,
}

impl Endpoint {
    pub fn v4(addr: &[u8]) -> Endpoint {
        // The 16 bytes written at once: a 4-byte write into zeroed bytes made
        // the key's 8-byte reads wait on two stores (a store-forwarding stall,
        // a fifth of decoding in perf on a flow-heavy capture).
        let word = u32::from_le_bytes(addr[..4].try_into().expect("4 bytes"));
        Endpoint { addr: u128::from(word).to_le_bytes(), port: 0 }
    }

    pub fn v6(addr: &[u8]) -> Endpoint {
        Endpoint { addr: addr[..16].try_into().expect("16 bytes"), port: 0 }
    }

    pub fn ip(&self, v6: bool) -> IpAddr {
        if v6 {
            IpAddr::from(self.addr)
        } else {
            IpAddr::from([self.addr[0], self.addr[1], self.addr[2], self.addr[3]])
        }
    }
}

/// Direction-independent flow key: the lower endpoint first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowKey {
    pub proto: u8,
    pub v6: bool,
    pub lo: Endpoint,
    pub hi: Endpoint,
}

impl FlowKey {
    /// The key of a packet from `src` to `dst`, and whether `src` is its `lo`.
    pub fn new(proto: u8, v6: bool, src: Endpoint, dst: Endpoint) -> (FlowKey, bool) {
        // Any fixed total order will do; one 128-bit compare is the cheapest.
        let order = |e: &Endpoint| (u128::from_ne_bytes(e.addr), e.port);
        if order(&src) <= order(&dst) {
            (FlowKey { proto, v6, lo: src, hi: dst }, true)
        } else {
            (FlowKey { proto, v6, lo: dst, hi: src }, false)
        }
    }

    pub fn socket_addrs(&self) -> (SocketAddr, SocketAddr) {
        (SocketAddr::new(self.lo.ip(self.v6), self.lo.port), SocketAddr::new(self.hi.ip(self.v6), self.hi.port))
    }

    /// The table's hash of this key: two independent 64x64->128-bit
    /// multiplies, folded (wyhash's mix), instead of a chain of seven
    /// multiplies: every reading thread hashes every packet.
    pub fn hash_u64(&self) -> u64 {
        let word = |b: &[u8; 16], i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        let rest = u64::from(self.lo.port) << 32
            | u64::from(self.hi.port) << 16
            | u64::from(self.proto) << 8
            | u64::from(self.v6);
        let fold = |a: u64, b: u64| {
            let p = u128::from(a) * u128::from(b);
            p as u64 ^ (p >> 64) as u64
        };
        fold(word(&self.lo.addr, 0) ^ 0xa076_1d64_78bd_642f, word(&self.hi.addr, 0) ^ 0xe703_7ed1_a0b4_28db)
            ^ fold(
                word(&self.lo.addr, 1) ^ rest ^ 0x8ebc_6af0_9c88_c6e3,
                word(&self.hi.addr, 1) ^ 0x5899_65cc_7537_4cc3,
            )
    }
}

/// FxHash-style hasher: flow keys are hashed once or twice per packet and
/// SipHash's DoS resistance buys nothing for a capture we are reading.
#[derive(Default, Clone, Copy)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        // The tail (an IPv4 address's 4 bytes) in one step, not one per byte.
        let tail = chunks.remainder();
        if !tail.is_empty() {
            let mut word = [0u8; 8];
            word[..tail.len()].copy_from_slice(tail);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    fn write_u16(&mut self, n: u16) {
        self.add(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn finish(&self) -> u64 {
        // Final avalanche so that the low bits (the map's bucket index) are well mixed.
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^ (h >> 33)
    }
}

impl KeyHasher {
    fn add(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_contains_exactly_the_letters_seen() {
        let h = History::from("ShADadFf");
        for seen in ['S', 'h', 'A', 'D', 'a', 'd', 'F', 'f'] {
            assert!(h.contains(seen), "{seen}");
        }
        // Case tells the sides apart; letters never seen are absent, and so is
        // U+0141, whose low byte is 'A'.
        for absent in ['s', 'H', 'R', 'r', 'T', 'é', 'Ł'] {
            assert!(!h.contains(absent), "{absent}");
        }
        assert!(!History::default().contains('S'));
        // The letters past the history's length are not part of it.
        let mut short = History::from("Sh");
        short.letters[2] = b'A';
        assert!(!short.contains('A'));
    }
}
