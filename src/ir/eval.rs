//! Exact evaluation of one concrete packet against the IR: the verdict the
//! kernel would give, and for every rule tried, why it did or did not match.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;

use super::optimize::MergeField;
use super::{names, Action, AddrMatch, Family, Hook, Ifaces, Match, PortMatch, Rule, Ruleset, SetKind, SetMark};

/// One packet as a hook sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Packet {
    pub hook: Hook,
    pub iif: Option<String>,
    pub oif: Option<String>,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    pub icmp_type: Option<u8>,
    /// One conntrack state bit (see [`names::CT_STATES`]).
    pub ct_state: u8,
    /// The mark it arrives with (0 unless another program set one); the
    /// policy's `match` rules may change it before the chain.
    pub mark: u32,
    /// Its connection's mark as it arrives (set by an earlier packet of the
    /// connection; 0 for a new one); meaningless without a connection.
    pub ct_mark: u32,
    /// Its source fails the reverse-path check (`urpf-failed` in the
    /// notation): the kernel's route back to the source does not leave by
    /// `iif`. The analyzer knows no routes, so this is given, not computed.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub urpf_failed: bool,
    /// Its destination is one of this host's addresses (`to self`, nft `fib
    /// daddr type local`). The analyzer knows no interfaces, so this is
    /// given: the notation takes an input packet as addressed here unless it
    /// goes to a group address, any other as not (see [`default_local`]).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub dst_local: bool,
}

impl Packet {
    pub fn family(&self) -> Family {
        Family::of(&self.src)
    }

    /// Whether conntrack gave it a connection (not invalid or untracked),
    /// so that it has a ct mark.
    pub fn tracked(&self) -> bool {
        self.ct_state & names::CT_TRACKED != 0
    }
}

/// Whether a packet on `hook` to `dst` is addressed to this host, when
/// nothing says otherwise: one delivered here (input) is, unless it goes to
/// a multicast or the limited broadcast address (fib type multicast,
/// broadcast); an output or forwarded one is not.
pub fn default_local(hook: Hook, dst: IpAddr) -> bool {
    hook == Hook::Input && !dst.is_multicast() && dst != IpAddr::V4(std::net::Ipv4Addr::BROADCAST)
}

/// The field of a rule that a packet failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Field {
    Family,
    InputInterface,
    OutputInterface,
    Protocol,
    Source,
    Destination,
    SelfAddress,
    ReversePath,
    SourcePort,
    DestinationPort,
    IcmpType,
    CtState,
    Mark,
    CtMark,
}

impl Field {
    pub fn describe(self) -> &'static str {
        match self {
            Field::Family => "address family",
            Field::InputInterface => "input interface",
            Field::OutputInterface => "output interface",
            Field::Protocol => "protocol",
            Field::Source => "source address",
            Field::Destination => "destination address",
            Field::SelfAddress => "destination",
            Field::ReversePath => "reverse-path check",
            Field::SourcePort => "source port",
            Field::DestinationPort => "destination port",
            Field::IcmpType => "ICMP type",
            Field::CtState => "connection state",
            Field::Mark => "mark",
            Field::CtMark => "connection mark",
        }
    }
}

/// Contents of sets that are not fixed by the policy (run-time, feeds), by nft name.
pub type SetContents = BTreeMap<String, Vec<IpNet>>;

/// The outcome for one packet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub verdict: Action,
    /// Index of the deciding rule in its chain; `None`: the chain's default policy.
    pub rule: Option<usize>,
    /// Rules before it that did not match, with the first field that failed.
    pub tried: Vec<(usize, Field)>,
    /// The deciding rule has a rate limit: it decides only while under it.
    pub rate_limited: bool,
    /// The `match` rules (indexes in [`Ruleset::marks`]) that last set the
    /// mark and the ct mark the chain saw.
    pub marked_by: MarkedBy,
    /// The early `pass` (index in the chain) that ended the early chain for
    /// this packet: it skipped the early rules after it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exempted_by: Option<usize>,
}

/// Which `match` rules last set a packet's marks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MarkedBy {
    pub mark: Option<usize>,
    pub ct_mark: Option<usize>,
}

/// The packet as its chain sees it: with the marks the `match` rules (of
/// those that run before the chain) set, in order, and which rules set them.
pub fn marked(rs: &Ruleset, p: &Packet, sets: &SetContents) -> (Packet, MarkedBy) {
    let mut out = p.clone();
    let mut by = MarkedBy::default();
    for (i, mr) in rs.marks.iter().enumerate().filter(|(_, mr)| mr.runs_before(p.hook)) {
        if check(rs, &mr.matches, &out, sets).is_err() {
            continue;
        }
        let tracked = out.tracked();
        for s in &mr.sets {
            if !s.apply(&mut out.mark, &mut out.ct_mark, tracked) {
                break;
            }
            match s {
                SetMark::Mark(_) | SetMark::MarkFromCtMark => by.mark = Some(i),
                SetMark::CtMark(_) | SetMark::CtMarkFromMark if tracked => by.ct_mark = Some(i),
                // Without a connection there is no ct mark to set.
                SetMark::CtMark(_) | SetMark::CtMarkFromMark => {}
            }
        }
    }
    (out, by)
}

/// The `match` rules set marks first; then first match wins, otherwise the
/// default policy. An early `pass` ([`Rule::exempts`]) decides nothing: the
/// packet skips the remaining early rules, as after an accept in nft's
/// raw-priority chain, and goes on to the filter rules.
pub fn decide(rs: &Ruleset, p: &Packet, sets: &SetContents) -> Decision {
    let (p, marked_by) = &marked(rs, p, sets);
    let chain = rs.chain(p.hook);
    let mut tried = Vec::new();
    let mut exempted_by = None;
    for (i, rule) in chain.rules.iter().enumerate() {
        if exempted_by.is_some() && rule.early {
            continue;
        }
        match check_rule(rs, rule, p, sets) {
            Ok(()) if rule.exempts() => exempted_by = Some(i),
            Ok(()) => {
                // A merged rule decides as the line whose values hold the packet's.
                let line = rule.merged.as_ref().and_then(|m| m.part_for(p)).map_or(rule, |part| &part.rule);
                return Decision {
                    verdict: line.action,
                    rule: Some(i),
                    tried,
                    rate_limited: line.limit.is_some() || line.quota.is_some(),
                    marked_by: *marked_by,
                    exempted_by,
                };
            }
            Err(field) => tried.push((i, field)),
        }
    }
    Decision {
        verdict: chain.policy.action,
        rule: None,
        tried,
        rate_limited: false,
        marked_by: *marked_by,
        exempted_by,
    }
}

/// The deciding rule of a decision, if any.
pub fn deciding_rule<'a>(rs: &'a Ruleset, p: &Packet, d: &Decision) -> Option<&'a Rule> {
    d.rule.map(|i| &rs.chain(p.hook).rules[i])
}

/// [`check`] of a rule's matches; a merged rule (whose matches hold the union
/// of its parts' values) matches only the packets one of its parts does.
pub fn check_rule(rs: &Ruleset, rule: &Rule, p: &Packet, sets: &SetContents) -> Result<(), Field> {
    check(rs, &rule.matches, p, sets)?;
    match &rule.merged {
        Some(m) if m.part_for(p).is_none() => Err(match m.fields[0] {
            MergeField::Source => Field::Source,
            MergeField::Destination => Field::Destination,
            MergeField::SourcePort => Field::SourcePort,
            MergeField::DestinationPort => Field::DestinationPort,
            MergeField::InputInterface => Field::InputInterface,
            MergeField::OutputInterface => Field::OutputInterface,
        }),
        _ => Ok(()),
    }
}

/// Ok if the packet matches every field of `m`, else the first field that fails.
pub fn check(rs: &Ruleset, m: &Match, p: &Packet, sets: &SetContents) -> Result<(), Field> {
    let test = |ok: bool, f: Field| if ok { Ok(()) } else { Err(f) };
    test(m.family.is_none_or(|f| f == p.family()), Field::Family)?;
    test(iface(&m.iif, &p.iif), Field::InputInterface)?;
    test(iface(&m.oif, &p.oif), Field::OutputInterface)?;
    test(m.proto.is_none_or(|x| x == p.proto), Field::Protocol)?;
    test(addr(rs, &m.src, p.src, sets), Field::Source)?;
    test(addr(rs, &m.dst, p.dst, sets), Field::Destination)?;
    test(m.dst_local.is_none_or(|local| local == p.dst_local), Field::SelfAddress)?;
    test(!m.urpf_failed || p.urpf_failed, Field::ReversePath)?;
    test(port(&m.sport, p.sport), Field::SourcePort)?;
    test(port(&m.dport, p.dport), Field::DestinationPort)?;
    test(m.icmp_types.as_ref().is_none_or(|ts| p.icmp_type.is_some_and(|t| ts.contains(&t))), Field::IcmpType)?;
    test(m.ct_state.is_none_or(|s| s.0 & p.ct_state != 0), Field::CtState)?;
    test(m.mark.is_none_or(|k| k == p.mark), Field::Mark)?;
    test(m.ct_mark.is_none_or(|k| p.tracked() && k == p.ct_mark), Field::CtMark)
}

fn iface(want: &Option<Ifaces>, have: &Option<String>) -> bool {
    want.as_ref().is_none_or(|w| w.matches(have.as_deref()))
}

/// Does interface pattern `pattern` (a name, or a prefix ending in `*`) match `name`?
pub fn iface_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

/// Does interface pattern `wide` match every name pattern `narrow` matches?
pub fn pattern_covers(wide: &str, narrow: &str) -> bool {
    match (wide.strip_suffix('*'), narrow.strip_suffix('*')) {
        (Some(q), Some(p)) => p.starts_with(q),
        (_, None) => iface_matches(wide, narrow),
        (None, Some(_)) => false,
    }
}

fn addr(rs: &Ruleset, m: &AddrMatch, ip: IpAddr, sets: &SetContents) -> bool {
    match m {
        AddrMatch::Any => true,
        AddrMatch::Nets { negated, nets } => nets.iter().any(|n| n.contains(&ip)) != *negated,
        AddrMatch::Set { negated, set } => {
            let inside = match rs.set(set).map(|s| &s.kind) {
                Some(SetKind::Static { elements, timed }) => {
                    elements.iter().any(|n| n.contains(&ip)) || timed.iter().any(|t| t.net.contains(&ip))
                }
                _ => sets.get(set).is_some_and(|ns| ns.iter().any(|n| n.contains(&ip))),
            };
            inside != *negated
        }
    }
}

fn port(m: &Option<PortMatch>, p: Option<u16>) -> bool {
    let Some(pm) = m else { return true };
    // A port match implies the protocol has ports; a packet without is no match.
    let Some(p) = p else { return false };
    pm.ranges.iter().any(|&(lo, hi)| lo <= p && p <= hi) != pm.negated
}

/// The two packets of an established TCP connection as this host sees them
/// (`client` remote): the client's packet in, and the host's reply out.
pub fn established_tcp(
    client: std::net::SocketAddr,
    server: std::net::SocketAddr,
    iif: Option<String>,
    oif: Option<String>,
) -> [Packet; 2] {
    let established = names::ct_state_bit("established").unwrap_or(2);
    let inbound = Packet {
        hook: Hook::Input,
        iif,
        oif: None,
        src: client.ip(),
        dst: server.ip(),
        proto: names::TCP,
        sport: Some(client.port()),
        dport: Some(server.port()),
        icmp_type: None,
        ct_state: established,
        mark: 0,
        ct_mark: 0,
        urpf_failed: false,
        dst_local: default_local(Hook::Input, server.ip()),
    };
    let outbound = Packet {
        hook: Hook::Output,
        iif: None,
        oif,
        src: server.ip(),
        dst: client.ip(),
        proto: names::TCP,
        sport: Some(server.port()),
        dport: Some(client.port()),
        icmp_type: None,
        ct_state: established,
        mark: 0,
        ct_mark: 0,
        urpf_failed: false,
        dst_local: false,
    };
    [inbound, outbound]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rs(text: &str) -> Ruleset {
        crate::ir::compile("t.pf", text).expect("compiles").ruleset
    }

    fn tcp_in(src: &str, dport: u16, state: &str) -> Packet {
        Packet {
            hook: Hook::Input,
            iif: Some("eth0".into()),
            oif: None,
            src: src.parse().expect("ip"),
            dst: "10.0.0.1".parse().expect("ip"),
            proto: names::TCP,
            sport: Some(40000),
            dport: Some(dport),
            icmp_type: None,
            ct_state: names::ct_state_bit(state).expect("state"),
            mark: 0,
            ct_mark: 0,
            urpf_failed: false,
            dst_local: true,
        }
    }

    #[test]
    fn first_match_wins_and_reports_why_earlier_rules_failed() {
        let r = rs("pass in proto udp to port 53\nblock in from 192.0.2.0/24\npass in proto tcp to port 22\n");
        let d = decide(&r, &tcp_in("192.0.2.7", 22, "new"), &SetContents::new());
        assert_eq!((d.verdict, d.rule), (Action::Block, Some(1)));
        assert_eq!(d.tried, vec![(0, Field::Protocol)]);
        let d = decide(&r, &tcp_in("198.51.100.7", 22, "new"), &SetContents::new());
        assert_eq!((d.verdict, d.rule), (Action::Pass, Some(2)));
        let d = decide(&r, &tcp_in("198.51.100.7", 23, "new"), &SetContents::new());
        assert_eq!((d.verdict, d.rule), (Action::Block, None), "default policy");
    }

    #[test]
    fn an_early_pass_skips_only_the_early_rules_after_it() {
        let r = rs("policy input pass\npolicy forward pass\npass in from 10.1.0.0/16 early\nblock in from 10.0.0.0/8 early\nblock in from 10.1.2.0/24\n");
        let d = decide(&r, &tcp_in("10.1.9.9", 22, "new"), &SetContents::new());
        assert_eq!((d.verdict, d.rule, d.exempted_by), (Action::Pass, None, Some(0)), "exempted, then the default");
        let d = decide(&r, &tcp_in("10.1.2.3", 22, "new"), &SetContents::new());
        assert_eq!(
            (d.verdict, d.rule, d.exempted_by),
            (Action::Block, Some(2), Some(0)),
            "a later filter rule still decides"
        );
        let d = decide(&r, &tcp_in("10.2.0.1", 22, "new"), &SetContents::new());
        assert_eq!((d.verdict, d.rule, d.exempted_by), (Action::Block, Some(1), None));
        // Early rules sit in the forward chain too.
        let fwd = Packet { hook: Hook::Forward, ..tcp_in("10.1.9.9", 22, "new") };
        let d = decide(&r, &fwd, &SetContents::new());
        assert_eq!((d.verdict, d.exempted_by), (Action::Pass, Some(0)));
    }

    #[test]
    fn negation_sets_interfaces_and_states() {
        let r = rs("set admins = { 10.9.0.0/16 }\nset bl dynamic\nblock in from <bl>\npass in on eth* from ! <admins> proto tcp to port 80 state new\npass in state established\n");
        let mut sets = SetContents::new();
        assert_eq!(decide(&r, &tcp_in("198.51.100.7", 80, "new"), &sets).rule, Some(2));
        assert_eq!(decide(&r, &tcp_in("10.9.1.1", 80, "new"), &sets).verdict, Action::Block, "negated set");
        assert_eq!(decide(&r, &tcp_in("10.9.1.1", 80, "established"), &sets).rule, Some(4));
        sets.insert("bl_v4".into(), vec!["198.51.100.0/24".parse().expect("net")]);
        assert_eq!(decide(&r, &tcp_in("198.51.100.7", 80, "new"), &sets).rule, Some(0), "run-time set contents count");
    }
}

#[cfg(test)]
mod iface_tests {
    use crate::ir::Ifaces;

    fn parse(s: &str) -> Ifaces {
        let (negated, list) = match s.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        Ifaces { negated, names: list.split(',').map(String::from).collect() }
    }

    fn and(a: &str, b: &str) -> Option<String> {
        parse(a).and(&parse(b)).map(|i| i.to_policy())
    }

    #[test]
    fn negations_match_every_other_name_and_the_missing_one() {
        let i = parse("!docker0,br-*");
        assert!(i.matches(Some("eth0")) && i.matches(None));
        assert!(!i.matches(Some("docker0")) && !i.matches(Some("br-lan")));
        assert!(!parse("eth0").matches(None));
        assert_eq!(i.example().as_deref(), Some("eth0"));
        assert_eq!(parse("!eth0,ens*,wlan*").example().as_deref(), Some("x0"));
    }

    #[test]
    fn conjunctions_are_exact_or_refused() {
        assert_eq!(and("docker0", "!br-*").as_deref(), Some("docker0"));
        assert_eq!(and("!docker0", "!br-*").as_deref(), Some("!{ br-*, docker0 }"));
        assert_eq!(and("br-*", "br-lan,eth0").as_deref(), Some("br-lan"));
        assert_eq!(and("docker0", "!docker0"), None, "no name is left");
        assert_eq!(and("br-*", "!br-lan"), None, "br-* without br-lan has no list form");
        assert!(parse("docker0").disjoint(&parse("!docker0,eth0")));
        assert!(!parse("br-*").disjoint(&parse("!br-lan")));
        assert!(!parse("!a").disjoint(&parse("!b")));
    }
}
