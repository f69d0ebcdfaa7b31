//! The TCP state machine of an open flow: roles come from the handshake,
//! never from port numbers. The sender of a bare SYN is the client; a
//! SYN-ACK makes its sender the server. Flows seen mid-stream keep the first
//! sender as client but are marked as such (`attempt_seen == false`) so
//! detectors do not count them as attempts. Closing yields Zeek's conn_state.

use super::decode::Decoded;
use super::flows::{tcp_flags, ConnState, Flow, TCP};

// Per-direction event bits, used for both the state and the history.
const EV_SYN: u8 = 1;
const EV_SYNACK: u8 = 2;
const EV_ACK: u8 = 4;
const EV_DATA: u8 = 8;
const EV_FIN: u8 = 16;
const EV_RST: u8 = 32;

/// A flow while it is open.
#[derive(Clone, Debug)]
pub(super) struct OpenFlow {
    pub(super) flow: Flow,
    /// The client is the key's `lo` end (packets say which end they come from).
    client_is_lo: bool,
    /// Both ends of the key are the same address and port: every packet
    /// counts as the client's.
    one_ended: bool,
    /// Event bits of the originator and the responder.
    ev: [u8; 2],
    /// Roles were fixed by a handshake packet (not just by who spoke first).
    roles_known: bool,
}

impl OpenFlow {
    pub(super) fn start(p: &Decoded) -> OpenFlow {
        let (src, dst) = p.endpoints();
        let mut flow = Flow::new(p.key.proto, src, dst, p.ts_us);
        let mut roles_known = false;
        if p.key.proto == TCP {
            let f = p.tcp_flags;
            if f & tcp_flags::SYN != 0 && f & tcp_flags::ACK != 0 {
                // A SYN-ACK first: its sender is the server.
                flow.client = dst;
                flow.server = src;
                roles_known = true;
            } else if f & tcp_flags::SYN != 0 {
                flow.attempt_seen = true;
                roles_known = true;
            }
        } else if p.is_icmp_reply() {
            flow.client = dst;
            flow.server = src;
            roles_known = true;
        } else {
            // UDP and ICMP requests: the first sender is the originator.
            flow.attempt_seen = true;
            roles_known = true;
        }
        let client_is_lo = p.from_lo == (flow.client == src);
        OpenFlow { flow, client_is_lo, one_ended: p.key.lo == p.key.hi, ev: [0, 0], roles_known }
    }

    /// Did the client send this packet (an ICMP error: the packet it quotes)?
    pub(super) fn sent_by_client(&self, p: &Decoded) -> bool {
        self.one_ended || p.from_lo == self.client_is_lo
    }

    pub(super) fn update(&mut self, p: &Decoded) {
        let mut from_client = self.sent_by_client(p);
        if self.flow.proto == TCP && !self.roles_known && p.tcp_flags & tcp_flags::SYN != 0 {
            // Mid-stream start, then a handshake packet: it decides the roles.
            let sender_is_client = p.tcp_flags & tcp_flags::ACK == 0;
            if sender_is_client != from_client {
                self.swap_roles();
                from_client = !from_client;
            }
            self.roles_known = true;
            self.flow.attempt_seen |= sender_is_client;
        }
        let dir = if from_client { 0 } else { 1 };
        let c = if from_client { &mut self.flow.orig } else { &mut self.flow.resp };
        c.packets += 1;
        c.bytes += u64::from(p.ip_len);
        self.flow.first_seen_us = self.flow.first_seen_us.min(p.ts_us);
        self.flow.last_seen_us = self.flow.last_seen_us.max(p.ts_us);
        let ev = if self.flow.proto == TCP { tcp_events(p.tcp_flags, p.payload_len) } else { EV_DATA };
        self.note(dir, ev);
    }

    pub(super) fn swap_roles(&mut self) {
        let f = &mut self.flow;
        std::mem::swap(&mut f.client, &mut f.server);
        std::mem::swap(&mut f.orig, &mut f.resp);
        self.client_is_lo = !self.client_is_lo;
        self.ev.swap(0, 1);
        f.history = f.history.swap_case();
    }

    pub(super) fn note(&mut self, dir: usize, ev: u8) {
        const ORDER: [(u8, char); 6] =
            [(EV_SYN, 'S'), (EV_SYNACK, 'H'), (EV_ACK, 'A'), (EV_DATA, 'D'), (EV_FIN, 'F'), (EV_RST, 'R')];
        // Most packets repeat what their side already did.
        let new = ev & !self.ev[dir];
        if new == 0 {
            return;
        }
        for (bit, ch) in ORDER {
            if new & bit != 0 {
                self.flow.history.push(if dir == 0 { ch } else { ch.to_ascii_lowercase() });
            }
        }
        self.ev[dir] |= ev;
    }

    /// TCP: a new bare SYN on a closed connection starts a new flow.
    pub(super) fn closed(&self) -> bool {
        let all = self.ev[0] | self.ev[1];
        all & EV_RST != 0 || (self.ev[0] & EV_FIN != 0 && self.ev[1] & EV_FIN != 0)
    }

    pub(super) fn finish(mut self) -> Flow {
        self.flow.state = conn_state(self.flow.proto, self.ev[0], self.ev[1], self.flow.resp.packets);
        self.flow
    }
}

fn tcp_events(flags: u8, payload_len: u32) -> u8 {
    let mut ev = 0;
    let syn = flags & tcp_flags::SYN != 0;
    let ack = flags & tcp_flags::ACK != 0;
    if syn {
        ev |= if ack { EV_SYNACK } else { EV_SYN };
    } else if ack && payload_len == 0 && flags & (tcp_flags::FIN | tcp_flags::RST) == 0 {
        ev |= EV_ACK;
    }
    if payload_len > 0 {
        ev |= EV_DATA;
    }
    if flags & tcp_flags::FIN != 0 {
        ev |= EV_FIN;
    }
    if flags & tcp_flags::RST != 0 {
        ev |= EV_RST;
    }
    ev
}

/// Zeek's conn_state from what each side did.
fn conn_state(proto: u8, orig: u8, resp: u8, resp_packets: u64) -> ConnState {
    use ConnState::*;
    if proto != TCP {
        return if resp_packets > 0 && orig != 0 {
            SF
        } else if orig != 0 {
            S0
        } else {
            OTH
        };
    }
    let syn = orig & EV_SYN != 0;
    let synack = resp & EV_SYNACK != 0;
    match (syn, synack) {
        (true, false) if resp & EV_RST != 0 => REJ,
        (true, false) if orig & EV_RST != 0 => RSTOS0,
        (true, false) if orig & EV_FIN != 0 => SH,
        (true, false) => S0,
        (false, true) if resp & EV_RST != 0 => RSTRH,
        (false, true) if resp & EV_FIN != 0 => SHR,
        (false, _) => OTH,
        (true, true) if orig & EV_RST != 0 => RSTO,
        (true, true) if resp & EV_RST != 0 => RSTR,
        (true, true) => match (orig & EV_FIN != 0, resp & EV_FIN != 0) {
            (true, true) => SF,
            (true, false) => S2,
            (false, true) => S3,
            (false, false) => S1,
        },
    }
}
