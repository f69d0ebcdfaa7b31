//! The lockout check: would a new ruleset (with its run-time and feed set
//! contents) drop loopback, the operator's sessions (both ways, with their
//! related ICMP), or new logins from the operator's clients to the
//! management port? Evaluated packet by packet with [`crate::ir::eval`].

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::diag::Diag;
use crate::ir::eval::{self, Decision, Packet, SetContents};
use crate::ir::{names, Action, Hook, Ruleset};

use super::Operator;

/// A client port for the probes of new logins (any ephemeral port would do).
const PROBE_CLIENT_PORT: u16 = 50_000;

/// Loopback is probed on the management port and on a port no policy
/// singles out, standing for every local service (a database, say): a
/// policy that passes the management port from anywhere but not `on lo`
/// still cuts loopback off.
const LOOPBACK_SERVICE_PORT: u16 = 5432;
/// ... and with a DNS query (UDP) to the local resolver.
const RESOLVER_PORT: u16 = 53;

/// One packet the new ruleset must pass, and what it stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    /// "loopback", "your session tcp a -> b", "new logins from 10.0.0.9 to port 22".
    pub what: String,
    pub packet: Packet,
}

/// A probe the ruleset would not pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lockout {
    pub probe: Probe,
    pub decision: Decision,
}

impl Lockout {
    /// Which rule (or default policy) decides, and how.
    pub fn reason(&self, rs: &Ruleset) -> String {
        let p = &self.probe.packet;
        let way = if p.hook == Hook::Input { "incoming" } else { "outgoing" };
        let who = match eval::deciding_rule(rs, p, &self.decision) {
            Some(rule) => format!("rule {}", rule.origin.id),
            None => format!("the default {} policy", p.hook.name()),
        };
        let what =
            if self.decision.verdict == Action::Pass { "passes only while under its rate limit" } else { "drops" };
        format!("{who} {what} its {way} packets ({})", describe(p))
    }

    /// A diagnostic pointing at the deciding rule (or default policy).
    pub fn diag(&self, rs: &Ruleset) -> Diag {
        let p = &self.probe.packet;
        let span = match eval::deciding_rule(rs, p, &self.decision) {
            Some(rule) => Some(rule.origin.span),
            None => rs.chain(p.hook).policy.origin.as_ref().map(|o| o.span),
        };
        let message = format!("this change would cut off {}", self.probe.what);
        let help = "fix the policy, give the right session with --keep, or use --force (with --confirm, to be safe)";
        // A built-in default policy has no line: point at the top of the file.
        Diag::error("lockout", span.unwrap_or_default(), message, self.reason(rs)).with_help(help)
    }
}

/// A refused change: every probe that failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub lockouts: Vec<Lockout>,
    /// Plain-text reasons (for logs, the API and the health file).
    pub reasons: Vec<String>,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "lockout guard: {}", self.reasons.join("; "))
    }
}

impl std::error::Error for Refusal {}

impl Refusal {
    pub fn diags(&self, rs: &Ruleset) -> Vec<Diag> {
        self.lockouts.iter().map(|l| l.diag(rs)).collect()
    }
}

/// A change that passed: which sessions it keeps, and (said plainly) what
/// could not be checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked {
    pub kept: Vec<String>,
    pub unchecked: Option<String>,
}

/// Checks `rs` with `sets` (contents of its run-time and feed sets) against
/// loopback and `operator`. Nothing is loaded here; the caller loads only
/// on `Ok`.
pub fn check(rs: &Ruleset, sets: &SetContents, operator: &Operator) -> Result<Checked, Refusal> {
    let mut lockouts: Vec<Lockout> = Vec::new();
    for probe in probes(operator) {
        // One reason per thing cut off: its first failing packet.
        if lockouts.iter().any(|l| l.probe.what == probe.what) {
            continue;
        }
        let decision = eval::decide(rs, &probe.packet, sets);
        if decision.verdict != Action::Pass || decision.rate_limited {
            lockouts.push(Lockout { probe, decision });
        }
    }
    if lockouts.is_empty() {
        let kept = operator.sessions.iter().map(|s| format!("{} ({})", s.session, s.source)).collect();
        return Ok(Checked { kept, unchecked: operator.unchecked_note() });
    }
    let reasons = lockouts.iter().map(|l| format!("it would cut off {}: {}", l.probe.what, l.reason(rs))).collect();
    Err(Refusal { lockouts, reasons })
}

/// Every packet the check tries, in the order the reasons are given.
///
/// Every probe passes the reverse-path check (`urpf_failed: false`), which
/// is what the kernel finds: nft's `fib saddr . iif` always matches on `lo`,
/// and an operator session's packets are taken to arrive on `dev`, the
/// interface the route back to its client leaves by (`host::route_dev`).
/// Only with asymmetric routing (the client's packets arriving elsewhere)
/// would `from urpf-failed` drop a session, and where packets arrive is not
/// known here. tests/kernel_safety.rs checks both with real traffic.
pub fn probes(operator: &Operator) -> Vec<Probe> {
    let mut out = Vec::new();
    let mgmt = operator.mgmt_port;
    let (lo_v4, lo_v6) = (IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V6(Ipv6Addr::LOCALHOST));
    // The local resolver: systemd-resolved's stub on 127.0.0.53, or ::1.
    for (lo, resolver) in [(lo_v4, IpAddr::V4(Ipv4Addr::new(127, 0, 0, 53))), (lo_v6, lo_v6)] {
        let what = "loopback".to_string();
        let client = SocketAddr::new(lo, PROBE_CLIENT_PORT);
        let dev = Some("lo".to_string());
        for port in [mgmt, LOOPBACK_SERVICE_PORT] {
            let server = SocketAddr::new(lo, port);
            for packet in tcp(client, server, dev.clone(), dev.clone(), "new") {
                out.push(Probe { what: what.clone(), packet });
            }
            for packet in eval::established_tcp(client, server, dev.clone(), dev.clone()) {
                out.push(Probe { what: what.clone(), packet });
            }
        }
        for packet in udp(client, SocketAddr::new(resolver, RESOLVER_PORT), dev.clone(), dev) {
            out.push(Probe { what: what.clone(), packet });
        }
    }
    for s in &operator.sessions {
        let (client, server, dev) = (s.session.client, s.session.server, s.dev.clone());
        let what = format!("your session {} ({})", s.session, s.source);
        for packet in eval::established_tcp(client, server, dev.clone(), dev.clone()) {
            out.push(Probe { what: what.clone(), packet });
        }
        for packet in related_icmp(client.ip(), server.ip(), dev.clone()) {
            out.push(Probe { what: format!("{what}: its related ICMP errors"), packet });
        }
        let login = SocketAddr::new(client.ip(), PROBE_CLIENT_PORT);
        let mut ports = vec![mgmt, server.port()];
        ports.dedup();
        for port in ports {
            let what = format!("new logins from {} to port {port}", client.ip());
            for packet in tcp(login, SocketAddr::new(server.ip(), port), dev.clone(), dev.clone(), "new") {
                out.push(Probe { what: what.clone(), packet });
            }
        }
    }
    out
}

/// A new TCP connection from `client`: its first packet in (in `state`) and
/// the host's answer out (established).
fn tcp(client: SocketAddr, server: SocketAddr, iif: Option<String>, oif: Option<String>, state: &str) -> [Packet; 2] {
    let [mut inbound, outbound] = eval::established_tcp(client, server, iif, oif);
    inbound.ct_state = names::ct_state_bit(state).expect("a conntrack state");
    [inbound, outbound]
}

/// A UDP exchange from `client`: its first packet in (new) and the answer
/// out (established).
fn udp(client: SocketAddr, server: SocketAddr, iif: Option<String>, oif: Option<String>) -> [Packet; 2] {
    tcp(client, server, iif, oif, "new").map(|mut p| {
        p.proto = names::UDP;
        p
    })
}

/// ICMP errors about a connection (destination unreachable: path MTU
/// discovery needs them), both ways; conntrack marks them related.
fn related_icmp(client: IpAddr, server: IpAddr, dev: Option<String>) -> [Packet; 2] {
    let (proto, unreachable) = if client.is_ipv4() { (names::ICMP, 3) } else { (names::ICMPV6, 1) };
    let related = names::ct_state_bit("related").expect("a conntrack state");
    let packet = |hook, src, dst, iif, oif| Packet {
        hook,
        iif,
        oif,
        src,
        dst,
        proto,
        sport: None,
        dport: None,
        icmp_type: Some(unreachable),
        ct_state: related,
        mark: 0,
        ct_mark: 0,
        urpf_failed: false,
        dst_local: crate::ir::eval::default_local(hook, dst),
    };
    [packet(Hook::Input, client, server, dev.clone(), None), packet(Hook::Output, server, client, None, dev)]
}

/// `tcp 10.0.0.9:50000 -> 10.0.0.1:22 new on eth0`.
fn describe(p: &Packet) -> String {
    let state = names::CT_STATES.iter().find(|(_, bit)| *bit == p.ct_state).map_or("?", |(n, _)| n);
    let ep = |ip: IpAddr, port: Option<u16>| match port {
        Some(port) => SocketAddr::new(ip, port).to_string(),
        None => ip.to_string(),
    };
    let dev = match (&p.iif, &p.oif) {
        (Some(i), _) => format!(" in on {i}"),
        (None, Some(o)) => format!(" out on {o}"),
        _ => String::new(),
    };
    format!("{} {} -> {} {state}{dev}", names::proto_name(p.proto), ep(p.src, p.sport), ep(p.dst, p.dport))
}

#[cfg(test)]
mod tests {
    use super::super::operator::Source;
    use super::*;
    use crate::host::Session;

    fn rs(text: &str) -> Ruleset {
        crate::ir::compile("p.pf", text).expect("compiles").ruleset
    }

    fn admin() -> Operator {
        let mut op = Operator::nobody();
        let s = Session::parse("10.10.0.9:40022 -> 10.10.0.1:22").unwrap();
        op.add(s, Source::Keep, Some("eth0".into()));
        op
    }

    const GOOD: &str =
        "pass in on lo\npass in state { established, related }\npass in proto tcp from 10.10.0.0/24 to port 22\n";

    #[test]
    fn a_policy_keeping_loopback_and_the_session_passes() {
        let ok = check(&rs(GOOD), &SetContents::new(), &admin()).expect("passes");
        assert_eq!(ok.kept, vec!["tcp 10.10.0.9:40022 -> 10.10.0.1:22 (--keep)".to_string()]);
        assert_eq!(ok.unchecked, None);
        let nobody = check(&rs(GOOD), &SetContents::new(), &Operator::nobody()).expect("passes");
        assert!(nobody.unchecked.expect("said plainly").contains("could not check your own session"));
    }

    #[test]
    fn a_blank_policy_drops_loopback_and_is_refused() {
        let r = check(&rs("\n"), &SetContents::new(), &Operator::nobody()).unwrap_err();
        assert!(r.to_string().contains("it would cut off loopback: the default input policy drops"), "{r}");
        assert!(r.to_string().contains("the default input policy drops"), "{r}");
    }

    /// Passing the management port from anywhere passes loopback's packets
    /// to it, but not those to the host's other local services.
    #[test]
    fn loopback_is_checked_beyond_the_management_port() {
        let ssh_only = "pass in state { established, related }\npass in proto tcp to port 22\n";
        let r = check(&rs(ssh_only), &SetContents::new(), &admin()).unwrap_err();
        assert_eq!(r.reasons.len(), 1, "{r}");
        assert!(
            r.reasons[0].contains("it would cut off loopback: the default input policy drops its incoming packets (tcp 127.0.0.1:50000 -> 127.0.0.1:5432 new in on lo)"),
            "{r}"
        );
        let tcp_too = format!("{ssh_only}pass in proto tcp from {{ 127.0.0.0/8, ::1 }}\n");
        let r = check(&rs(&tcp_too), &SetContents::new(), &admin()).unwrap_err();
        assert!(r.reasons[0].contains("(udp 127.0.0.1:50000 -> 127.0.0.53:53 new in on lo)"), "{r}");
        let v4_only = format!("{ssh_only}pass in from 127.0.0.0/8\n");
        let r = check(&rs(&v4_only), &SetContents::new(), &admin()).unwrap_err();
        assert!(r.reasons[0].contains("(tcp [::1]:50000 -> [::1]:5432 new in on lo)"), "{r}");
        let with_lo = format!("pass in on lo\n{ssh_only}");
        assert!(check(&rs(&with_lo), &SetContents::new(), &admin()).is_ok());
    }

    #[test]
    fn new_logins_and_related_traffic_are_checked_not_only_the_live_session() {
        let no_new = "pass in on lo\npass in state { established, related }\n";
        let r = check(&rs(no_new), &SetContents::new(), &admin()).unwrap_err();
        assert_eq!(r.reasons.len(), 1, "{r}");
        assert!(r.reasons[0].contains("new logins from 10.10.0.9 to port 22"), "{r}");
        let no_related = "pass in on lo\npass in state established\npass in proto tcp from 10.10.0.0/24 to port 22\n";
        let r = check(&rs(no_related), &SetContents::new(), &admin()).unwrap_err();
        assert!(r.reasons[0].contains("related ICMP"), "{r}");
    }

    #[test]
    fn run_time_and_feed_set_contents_count() {
        let policy = format!("feed bad {{ source \"bad.txt\" }}\nblock in from <bad>\n{GOOD}");
        let rules = rs(&policy);
        assert!(check(&rules, &SetContents::new(), &admin()).is_ok());
        let mut sets = SetContents::new();
        sets.insert("bad_v4".into(), vec!["0.0.0.0/0".parse().unwrap()]);
        let r = check(&rules, &sets, &admin()).unwrap_err();
        assert!(r.to_string().contains("rule p.pf:2 drops its incoming packets"), "{r}");
        assert!(
            r.to_string().contains("cut off loopback: rule p.pf:2"),
            "the feed rule comes before `pass in on lo`: {r}"
        );
        let diag = r.diags(&rules);
        assert_eq!(diag[0].code, "lockout");
    }
}
