//! The packet notation of `explain` and policy tests:
//!
//! ```text
//! [input|forward|output] PROTO SRC[:PORT] -> DST[:PORT] [in IF] [out IF] [STATE] [ICMP-TYPE] [mark N] [ct mark N] [urpf-failed] [local|not-local]
//! tcp 203.0.113.5:51000 -> 10.0.0.10:22 in eth0 new
//! udp [2001:db8::5]:5353 -> [2001:db8::1]:53 in eth0
//! icmp 192.0.2.7 -> 10.0.0.10 echo-request in eth0
//! forward tcp 192.168.50.20:40000 -> 203.0.113.2:80 in eth1 out eth0 new
//! ```
//!
//! Without a hook word, `in` and `out` together mean forward, `out` alone
//! output, anything else input. The state defaults to `new`, a missing source
//! port to 40000, a missing ICMP type to echo-request, the mark (the one
//! the packet arrives with, before the policy's `match` rules) to 0 and the
//! ct mark (its connection's, as an earlier packet left it) to 0.
//! `urpf-failed` says the source fails the reverse-path check (the route
//! back to it does not leave by the input interface): the analyzer knows no
//! routes, so a packet without the word passes it. `local` says the
//! destination is one of this host's addresses (for `to self`), `not-local`
//! that it is not; without either, an input packet's is (unless it goes to a
//! multicast or the broadcast address), an output or forwarded packet's not.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use crate::ir::eval::{default_local, Packet};
use crate::ir::names::{self, ICMP, ICMPV6};
use crate::ir::{Family, Hook};

const DEFAULT_SPORT: u16 = 40000;

/// A notation error with its byte offset in the packet text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PacketError {
    pub offset: usize,
    pub len: usize,
    pub message: String,
    pub help: &'static str,
}

impl fmt::Display for PacketError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (at byte {})", self.message, self.offset)
    }
}

pub const NOTATION_HELP: &str =
    "write it as `PROTO SRC[:PORT] -> DST[:PORT] [in IF] [out IF] [STATE] [ICMP-TYPE] [mark N] [ct mark N] [urpf-failed] [local|not-local]`, e.g. `tcp 203.0.113.5:51000 -> 10.0.0.10:22 in eth0 new`";

/// Words of the text with their byte offsets.
fn words(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices() {
        match (c.is_whitespace(), start) {
            (true, Some(s)) => {
                out.push((s, &text[s..i]));
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push((s, &text[s..]));
    }
    out
}

pub fn parse(text: &str) -> Result<Packet, PacketError> {
    let err = |(offset, word): (usize, &str), message: String| PacketError {
        offset,
        len: word.len().max(1),
        message,
        help: NOTATION_HELP,
    };
    let ws = words(text);
    let mut it = ws.iter().copied().peekable();
    let end = (text.len(), "");

    let hook = match it.peek() {
        Some((_, "input")) => Some(Hook::Input),
        Some((_, "forward")) => Some(Hook::Forward),
        Some((_, "output")) => Some(Hook::Output),
        _ => None,
    };
    if hook.is_some() {
        it.next();
    }
    let pw = it.next().ok_or_else(|| err(end, "empty packet".into()))?;
    let proto = names::proto_number(pw.1)
        .or_else(|| pw.1.parse().ok())
        .ok_or_else(|| err(pw, format!("unknown protocol `{}`", pw.1)))?;
    let sw = it.next().ok_or_else(|| err(end, "missing source address".into()))?;
    let (src, sport) =
        endpoint(sw.1).ok_or_else(|| err(sw, format!("`{}` is not an address or address:port", sw.1)))?;
    let arrow = it.next().ok_or_else(|| err(end, "missing `->`".into()))?;
    if arrow.1 != "->" {
        return Err(err(arrow, format!("expected `->`, found `{}`", arrow.1)));
    }
    let dw = it.next().ok_or_else(|| err(end, "missing destination address".into()))?;
    let (dst, dport) =
        endpoint(dw.1).ok_or_else(|| err(dw, format!("`{}` is not an address or address:port", dw.1)))?;
    if Family::of(&src) != Family::of(&dst) {
        return Err(err(dw, "source and destination are of different address families".into()));
    }

    let (mut iif, mut oif, mut state, mut icmp_type) = (None, None, None, None);
    let (mut mark, mut ct_mark, mut urpf_failed, mut local) = (0, 0, false, None);
    // The number after `mark` / `ct mark`, decimal or 0x hex.
    let mark_word = |it: &mut dyn Iterator<Item = (usize, &str)>, w: (usize, &str), what: &str| {
        let v = it.next().ok_or_else(|| err(w, format!("`{what}` needs a number")))?;
        let n = match v.1.strip_prefix("0x") {
            Some(hex) => u32::from_str_radix(hex, 16).ok(),
            None => v.1.parse().ok(),
        };
        n.ok_or_else(|| err(v, format!("`{}` is not a 32-bit mark", v.1)))
    };
    while let Some(w) = it.next() {
        match w.1 {
            "mark" => mark = mark_word(&mut it, w, "mark")?,
            "urpf-failed" => urpf_failed = true,
            "local" => local = Some(true),
            "not-local" => local = Some(false),
            "ct" => {
                let m = it.next().filter(|m| m.1 == "mark").ok_or_else(|| err(w, "`ct` needs `mark N`".into()))?;
                ct_mark = mark_word(&mut it, m, "ct mark")?;
            }
            "in" | "out" => {
                let name = it.next().ok_or_else(|| err(w, format!("`{}` needs an interface name", w.1)))?;
                if w.1 == "in" {
                    iif = Some(name.1.to_string())
                } else {
                    oif = Some(name.1.to_string())
                }
            }
            word => {
                if let Some(bit) = names::ct_state_bit(word) {
                    state = Some(bit);
                } else if let Some((_, t)) =
                    names::icmp_table(proto).iter().find(|(n, _)| *n == word).filter(|_| is_icmp(proto))
                {
                    icmp_type = Some(*t);
                } else {
                    return Err(err(w, format!("unknown word `{word}`")));
                }
            }
        }
    }
    let hook = hook.unwrap_or(match (&iif, &oif) {
        (Some(_), Some(_)) => Hook::Forward,
        (None, Some(_)) => Hook::Output,
        _ => Hook::Input,
    });
    let ported = names::has_ports(proto);
    if ported && dport.is_none() {
        return Err(err(dw, format!("{} needs a destination port (`{}:PORT`)", names::proto_name(proto), dw.1)));
    }
    if !ported && (sport.is_some() || dport.is_some()) {
        return Err(err(if sport.is_some() { sw } else { dw }, format!("{} has no ports", names::proto_name(proto))));
    }
    Ok(Packet {
        hook,
        iif,
        oif,
        src,
        dst,
        proto,
        sport: ported.then(|| sport.unwrap_or(DEFAULT_SPORT)),
        dport,
        icmp_type: is_icmp(proto).then(|| icmp_type.unwrap_or(if proto == ICMP { 8 } else { 128 })),
        ct_state: state.unwrap_or(8),
        mark,
        ct_mark,
        urpf_failed,
        dst_local: local.unwrap_or(default_local(hook, dst)),
    })
}

fn is_icmp(proto: u8) -> bool {
    proto == ICMP || proto == ICMPV6
}

/// `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`, `[2001:db8::1]:80`.
fn endpoint(s: &str) -> Option<(IpAddr, Option<u16>)> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some((ip, None));
    }
    s.parse::<SocketAddr>().ok().map(|sa| (sa.ip(), Some(sa.port())))
}

/// The packet in the same notation (the form reports and tests print).
pub fn format(p: &Packet) -> String {
    let ep = |ip: IpAddr, port: Option<u16>| match port {
        Some(port) => SocketAddr::new(ip, port).to_string(),
        None => ip.to_string(),
    };
    let mut out =
        format!("{} {} {} -> {}", p.hook.name(), names::proto_name(p.proto), ep(p.src, p.sport), ep(p.dst, p.dport));
    if let Some(i) = &p.iif {
        out += &format!(" in {i}");
    }
    if let Some(o) = &p.oif {
        out += &format!(" out {o}");
    }
    if let Some(t) = p.icmp_type {
        out += &format!(" {}", names::icmp_type_name(p.proto, t));
    }
    let state = names::CT_STATES.iter().find(|(_, b)| *b == p.ct_state).map_or("?", |(n, _)| n);
    out = out + " " + state;
    if p.mark != 0 {
        out += &format!(" mark {}", p.mark);
    }
    if p.ct_mark != 0 {
        out += &format!(" ct mark {}", p.ct_mark);
    }
    if p.urpf_failed {
        out += " urpf-failed";
    }
    if p.dst_local != default_local(p.hook, p.dst) {
        out += if p.dst_local { " local" } else { " not-local" };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_issue_example_and_round_trips() {
        let p = parse("tcp 203.0.113.5:51000 -> 10.0.0.10:22 in eth0 new").expect("parses");
        assert_eq!((p.hook, p.proto, p.sport, p.dport), (Hook::Input, 6, Some(51000), Some(22)));
        assert_eq!(p.iif.as_deref(), Some("eth0"));
        assert_eq!(format(&p), "input tcp 203.0.113.5:51000 -> 10.0.0.10:22 in eth0 new");
        assert_eq!(parse(&format(&p)), Ok(p));
    }

    #[test]
    fn infers_hooks_and_defaults() {
        let f = parse("udp [2001:db8::5]:5353 -> [2001:db8::1]:53 in eth1 out eth0 established").expect("parses");
        assert_eq!((f.hook, f.ct_state), (Hook::Forward, 2));
        let o = parse("icmpv6 2001:db8::1 -> 2001:db8::2 out eth0").expect("parses");
        assert_eq!((o.hook, o.icmp_type, o.ct_state), (Hook::Output, Some(128), 8));
        let s = parse("tcp 10.0.0.1 -> 10.0.0.2:80").expect("parses");
        assert_eq!(s.sport, Some(40000));
        assert_eq!(parse("icmp 10.0.0.1 -> 10.0.0.2 time-exceeded").expect("parses").icmp_type, Some(11));
    }

    #[test]
    fn errors_point_at_the_bad_word() {
        let e = parse("tcp 10.0.0.1 -> 10.0.0.2:80 in eth0 nwe").expect_err("bad state");
        assert_eq!((e.offset, e.message.as_str()), (36, "unknown word `nwe`"));
        assert_eq!(parse("tcp 10.0.0.1 => 10.0.0.2:80").expect_err("arrow").offset, 13);
        assert!(parse("tcp 10.0.0.1 -> 10.0.0.2").expect_err("port").message.contains("needs a destination port"));
        assert!(parse("tcp 10.0.0.1 -> ::1:80").is_err());
        assert!(parse("icmp 10.0.0.1:5 -> 10.0.0.2").expect_err("icmp port").message.contains("no ports"));
        assert_eq!(parse("").expect_err("empty").message, "empty packet");
    }
}
