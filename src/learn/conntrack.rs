//! Conntrack entries ([`crate::host::conntrack`]) as learner flows: Zeek's
//! conn_state and history from conntrack's TCP state, counters and
//! timestamps; the last packet time from the state's timeout.

use std::net::SocketAddr;

use super::flows::{ConnState, Counters as FlowCounters, Flow, ICMP, ICMPV6, TCP, UDP};
use crate::host::conntrack::{CtEntry, TcpState};

/// Full timeouts of each conntrack state (`/proc/sys/net/netfilter`). Every
/// packet resets an entry's timeout to its state's full value, so full minus
/// remaining is how long the connection has been idle: its last packet time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateTimeouts {
    tcp: Vec<(TcpState, u32)>,
    udp: u32,
    udp_stream: u32,
    icmp: u32,
    other: u32,
}

impl Default for StateTimeouts {
    /// The kernel's defaults.
    fn default() -> Self {
        StateTimeouts {
            tcp: vec![
                (TcpState::SynSent, 120),
                (TcpState::SynRecv, 60),
                (TcpState::Established, 432_000),
                (TcpState::FinWait, 120),
                (TcpState::CloseWait, 60),
                (TcpState::LastAck, 30),
                (TcpState::TimeWait, 120),
                (TcpState::Close, 10),
                (TcpState::SynSent2, 120),
            ],
            udp: 30,
            udp_stream: 120,
            icmp: 30,
            other: 600,
        }
    }
}

impl StateTimeouts {
    /// The timeouts of this network namespace; defaults for what cannot be read.
    pub fn read() -> StateTimeouts {
        let get = |name: &str, default: u32| {
            std::fs::read_to_string(format!("/proc/sys/net/netfilter/nf_conntrack_{name}"))
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(default)
        };
        let d = StateTimeouts::default();
        let sysctl = |state: TcpState| match state {
            TcpState::SynSent | TcpState::SynSent2 => "tcp_timeout_syn_sent",
            TcpState::SynRecv => "tcp_timeout_syn_recv",
            TcpState::Established => "tcp_timeout_established",
            TcpState::FinWait => "tcp_timeout_fin_wait",
            TcpState::CloseWait => "tcp_timeout_close_wait",
            TcpState::LastAck => "tcp_timeout_last_ack",
            TcpState::TimeWait => "tcp_timeout_time_wait",
            _ => "tcp_timeout_close",
        };
        StateTimeouts {
            tcp: d.tcp.iter().map(|&(state, secs)| (state, get(sysctl(state), secs))).collect(),
            udp: get("udp_timeout", d.udp),
            udp_stream: get("udp_timeout_stream", d.udp_stream),
            icmp: get("icmp_timeout", d.icmp),
            other: get("generic_timeout", d.other),
        }
    }

    fn full(&self, e: &CtEntry) -> u32 {
        match (e.proto, e.tcp_state) {
            (TCP, Some(state)) => self.tcp.iter().find(|(s, _)| *s == state).map_or(self.other, |(_, t)| *t),
            (UDP, _) if e.assured => self.udp_stream,
            (UDP, _) => self.udp,
            (ICMP | ICMPV6, _) => self.icmp,
            _ => self.other,
        }
    }
}

/// Conntrack entries as learner flows. `now_us` is when the table was read.
/// Without `nf_conntrack_timestamp=1` the start of a connection is unknown
/// (unless [`crate::host::conntrack::watch`] saw it created) and taken as its last packet.
pub fn to_flows(entries: &[CtEntry], timeouts: &StateTimeouts, now_us: u64) -> Vec<Flow> {
    entries.iter().map(|e| to_flow(e, timeouts, now_us)).collect()
}

/// One conntrack entry as a learner flow (see [`to_flows`]).
pub fn to_flow(e: &CtEntry, timeouts: &StateTimeouts, now_us: u64) -> Flow {
    let last_seen_us = match (e.stop_ns, e.timeout) {
        (Some(stop), _) => stop / 1000,
        (None, Some(left)) => now_us.saturating_sub(u64::from(timeouts.full(e).saturating_sub(left)) * 1_000_000),
        (None, None) => now_us,
    };
    let first_seen_us = e.start_ns.map_or(last_seen_us, |ns| (ns / 1000).min(last_seen_us));
    let mut flow = Flow::new(
        e.proto,
        SocketAddr::new(e.orig.src, e.orig.sport),
        SocketAddr::new(e.orig.dst, e.orig.dport),
        first_seen_us,
    );
    flow.last_seen_us = last_seen_us;
    // Conntrack creates an entry for the originator's first packet.
    flow.attempt_seen = true;
    let reply_packets = e.reply_counters.map(|c| c.packets);
    let (state, history) = if e.proto == TCP {
        tcp_state(e, reply_packets)
    } else if e.seen_reply {
        (ConnState::SF, "Dd")
    } else {
        (ConnState::S0, "D")
    };
    flow.state = state;
    flow.history = history.into();
    // Without accounting: at least the first packet, and one answer if seen.
    flow.orig = e
        .orig_counters
        .map_or(FlowCounters { packets: 1, bytes: 0 }, |c| FlowCounters { packets: c.packets, bytes: c.bytes });
    flow.resp = e.reply_counters.map_or(FlowCounters { packets: u64::from(e.seen_reply), bytes: 0 }, |c| {
        FlowCounters { packets: c.packets, bytes: c.bytes }
    });
    if e.proto == TCP && flow.history.contains('A') {
        // Conntrack has no data flags: more bytes than bare headers is data.
        let header = if e.orig.src.is_ipv4() { TCP_HEADERS_V4 } else { TCP_HEADERS_V4 + 20 };
        let carries_data = |c: &FlowCounters| c.bytes > c.packets * header + 8;
        if carries_data(&flow.orig) {
            flow.history.push('D');
        }
        if carries_data(&flow.resp) {
            flow.history.push('d');
        }
    }
    flow
}

/// IPv4 and TCP headers with the timestamp option, as Linux sends them.
const TCP_HEADERS_V4: u64 = 52;

/// Zeek's conn_state and history from conntrack's TCP state. Conntrack does
/// not say who closed or reset, so those are attributed to the originator.
fn tcp_state(e: &CtEntry, reply_packets: Option<u64>) -> (ConnState, &'static str) {
    use ConnState::*;
    match e.tcp_state {
        Some(TcpState::SynSent | TcpState::SynSent2) if !e.seen_reply => (S0, "S"),
        // SYN-ACK sent, the client's ACK never came: half-open.
        Some(TcpState::SynSent | TcpState::SynSent2 | TcpState::SynRecv) => (S1, "Sh"),
        Some(TcpState::Established) => (S1, "ShA"),
        Some(TcpState::FinWait | TcpState::CloseWait | TcpState::LastAck) => (S2, "ShAF"),
        Some(TcpState::TimeWait) => (SF, "ShAFf"),
        // Killed before any reply counted: refused by a RST (accounting shows
        // the RST), or abandoned by the originator's own RST.
        Some(TcpState::Close) if !e.seen_reply => match reply_packets {
            Some(0) => (RSTOS0, "SR"),
            _ => (REJ, "Sr"),
        },
        Some(TcpState::Close) if e.assured => (RSTO, "ShAR"),
        // SYN-ACK answered by a RST: a SYN scan's open port, a SYN flood.
        Some(TcpState::Close) => (RSTO, "ShR"),
        _ => (OTH, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::conntrack::{Counters, CtTuple};
    use std::net::IpAddr;

    fn tcp_entry(state: TcpState, seen_reply: bool, assured: bool, reply_packets: Option<u64>) -> CtEntry {
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.2".parse().unwrap(), "10.0.0.1".parse().unwrap());
        CtEntry {
            proto: 6,
            orig: CtTuple { src: a, dst: b, sport: 40000, dport: 22 },
            reply: CtTuple { src: b, dst: a, sport: 22, dport: 40000 },
            tcp_state: Some(state),
            seen_reply,
            assured,
            orig_counters: reply_packets.map(|_| Counters { packets: 1, bytes: 60 }),
            reply_counters: reply_packets.map(|packets| Counters { packets, bytes: 40 * packets }),
            start_ns: Some(1_000_000_000_000),
            stop_ns: None,
            timeout: Some(100),
            id: Some(7),
        }
    }

    #[test]
    fn conntrack_states_become_zeek_states_the_detectors_understand() {
        let t = StateTimeouts::default();
        let now = 2_000_000_000;
        let flow = |e: CtEntry| to_flows(&[e], &t, now).remove(0);
        let refused = flow(tcp_entry(TcpState::Close, false, false, Some(1)));
        assert_eq!((refused.state, refused.failed()), (ConnState::REJ, true));
        let abandoned = flow(tcp_entry(TcpState::Close, false, false, Some(0)));
        assert_eq!((abandoned.state, abandoned.failed()), (ConnState::RSTOS0, true));
        // A SYN scan's open port or a SYN flood: answered, never completed.
        let half_open = flow(tcp_entry(TcpState::Close, true, false, Some(1)));
        assert!(half_open.answered() && !half_open.handshake_completed());
        let unanswered = flow(tcp_entry(TcpState::SynSent, false, false, None));
        assert_eq!((unanswered.state, unanswered.failed()), (ConnState::S0, true));
        let closed = flow(tcp_entry(TcpState::TimeWait, true, true, Some(4)));
        assert_eq!(closed.state, ConnState::SF);
        assert!(closed.handshake_completed());
        assert_eq!((closed.orig.packets, closed.resp.packets), (1, 4));
        // TIME_WAIT lasts 120 s; 100 s left means the last packet was 20 s ago.
        assert_eq!(closed.last_seen_us, now - 20_000_000);
        assert_eq!(closed.first_seen_us, 1_000_000_000);
        // Without accounting, one packet each way is assumed.
        let mut udp = tcp_entry(TcpState::None, true, true, None);
        (udp.proto, udp.tcp_state) = (17, None);
        let udp = flow(udp);
        assert_eq!((udp.state, udp.orig.packets, udp.resp.packets), (ConnState::SF, 1, 1));
    }
}
