//! The packets the policy drops, read from NFLOG (the `log group N` of its
//! dropping rules and default policies): conntrack never sees them, so each
//! first packet of an attempt becomes the conntrack entry it would have
//! made, unanswered, and goes through the same flow conversion and
//! detectors as the connections conntrack reports.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use crate::host::conntrack::{CtEntry, CtTuple, TcpState};
use crate::learn::decode::{self, linktype};
use crate::learn::flows::{tcp_flags, ICMP, ICMPV6, TCP};
use crate::netlink::Nflog;

/// Bytes of each packet the kernel copies: IP and transport headers.
const COPY: u32 = 128;

/// NFLOG groups bound in this network namespace.
pub struct Dropped {
    nflog: Nflog,
    groups: Vec<u16>,
}

impl Dropped {
    /// Binds `groups`; another listener on one (`phantomc log --follow`) makes it EBUSY.
    pub fn bind(groups: &[u16]) -> io::Result<Dropped> {
        Ok(Dropped { nflog: Nflog::bind(groups, COPY)?, groups: groups.to_vec() })
    }

    pub fn groups(&self) -> &[u16] {
        &self.groups
    }

    /// Hands the attempts among the packets waiting (at most `max_reads`
    /// datagrams, without waiting) to `out`; the packets read.
    pub fn drain(&mut self, max_reads: usize, now_ns: u64, out: &mut dyn FnMut(CtEntry)) -> io::Result<u64> {
        let mut read = 0;
        for _ in 0..max_reads {
            let packets = self.nflog.recv(Duration::ZERO)?;
            if packets.is_empty() {
                break;
            }
            read += packets.len() as u64;
            packets.iter().filter_map(|p| attempt(&p.payload, now_ns)).for_each(&mut *out);
        }
        Ok(read)
    }
}

/// The entry a dropped packet would have made, if it opens an attempt: a
/// TCP SYN, a UDP datagram, an ICMP echo request. Other packets (a late
/// ACK, an answer) say nothing about who tries what.
pub fn attempt(payload: &[u8], now_ns: u64) -> Option<CtEntry> {
    let d = decode::decode(linktype::RAW, payload, now_ns / 1000).ok()?;
    let proto = d.key.proto;
    let opens = match proto {
        TCP => d.tcp_flags & tcp_flags::SYN != 0 && d.tcp_flags & tcp_flags::ACK == 0,
        ICMP => d.icmp_type == 8 && d.error_from.is_none(),
        ICMPV6 => d.icmp_type == 128 && d.error_from.is_none(),
        _ => d.error_from.is_none(),
    };
    if !opens {
        return None;
    }
    let (src, dst): (SocketAddr, SocketAddr) = d.endpoints();
    let orig = CtTuple { src: src.ip(), dst: dst.ip(), sport: src.port(), dport: dst.port() };
    Some(CtEntry {
        proto,
        orig,
        reply: CtTuple { src: orig.dst, dst: orig.src, sport: orig.dport, dport: orig.sport },
        tcp_state: (proto == TCP).then_some(TcpState::SynSent),
        seen_reply: false,
        assured: false,
        orig_counters: None,
        reply_counters: None,
        start_ns: Some(now_ns),
        stop_ns: Some(now_ns),
        timeout: None,
        id: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::learn::conntrack::{to_flow, StateTimeouts};
    use crate::learn::ConnState;

    /// An IPv4 TCP packet from 203.0.113.7:40000 to 10.0.0.1:`port` with `flags`.
    fn tcp(port: u16, flags: u8) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, 203, 0, 113, 7, 10, 0, 0, 1];
        p.extend(40000u16.to_be_bytes());
        p.extend(port.to_be_bytes());
        p.extend([0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
        p
    }

    #[test]
    fn a_dropped_syn_is_an_unanswered_attempt() {
        let now_ns = 1_796_000_000_000_000_000;
        let e = attempt(&tcp(1000, tcp_flags::SYN), now_ns).expect("a SYN opens an attempt");
        assert_eq!((e.orig.src.to_string(), e.orig.dport, e.proto), ("203.0.113.7".into(), 1000, TCP));
        let flow = to_flow(&e, &StateTimeouts::default(), now_ns / 1000);
        assert_eq!(flow.state, ConnState::S0, "{flow:?}");
        assert!(flow.attempt_seen && !flow.handshake_completed());
        assert_eq!((flow.client.port(), flow.server.port()), (40000, 1000));
        assert!(attempt(&tcp(1000, tcp_flags::ACK), now_ns).is_none(), "mid-stream");
        assert!(attempt(&tcp(1000, tcp_flags::SYN | tcp_flags::ACK), now_ns).is_none(), "an answer");
        assert!(attempt(&[0x45, 0, 0], now_ns).is_none(), "truncated");
    }
}
