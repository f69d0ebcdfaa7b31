//! `explain`: which rule decides a packet, and why every earlier rule did not.
//! The verdict itself comes from [`crate::ir::eval`]; this module only adds
//! words and the fall-through of rate-limited rules.

use std::fmt::Write as _;

use serde::Serialize;

use crate::diag::SourceMap;
use crate::ir::eval::{self, Decision, Field, Packet, SetContents};
use crate::ir::{names, Action, AddrMatch, Hook, Ifaces, Match, Rule, Ruleset, SetKind};

use super::packet;

/// One step of an explanation: a rule (or the default policy) and what it did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Step {
    /// `file:line`, or `default policy`.
    pub rule: String,
    /// The policy text of the rule.
    pub text: String,
    /// Why it did not match (for tried rules).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Explanation {
    pub packet: String,
    pub hook: Hook,
    pub verdict: Action,
    pub decided_by: Step,
    /// Earlier rules, one per policy statement, with the reason each failed.
    pub tried: Vec<Step>,
    /// The deciding rule is rate-limited: what happens to packets over its limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub over_limit: Option<Box<Explanation>>,
    /// Run-time sets the packet was tested against; they are empty offline.
    pub runtime_sets: Vec<String>,
    /// The early `pass` the packet matched: it skipped the early rules after it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exempted_by: Option<Step>,
    /// Decided by an early `notrack` pass: conntrack never sees the packet.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub untracked: bool,
    /// Static sets with timed entries the packet was tested against: taken
    /// as loaded, before any entry times out.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub timed_sets: Vec<String>,
    /// The `match` rule that set the mark the chain saw, and that mark.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub marked: Option<(Step, u32)>,
    /// The flowtable the deciding rule offloads the connection to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offloaded: Option<String>,
    /// The `match` rule that set the ct mark the chain saw, and that mark.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ct_marked: Option<(Step, u32)>,
    /// A rule the packet reached tests the reverse path (`from urpf-failed`):
    /// whether the packet fails it, as given (the analyzer knows no routes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub urpf_failed: Option<bool>,
}

/// Explains one packet. Run-time and feed sets are taken as empty.
pub fn explain(rs: &Ruleset, sources: &SourceMap, p: &Packet) -> Explanation {
    explain_with(rs, sources, p, &SetContents::new())
}

/// Explains one packet with the given contents of run-time and feed sets
/// (the live ones, for `explain --live`).
pub fn explain_with(rs: &Ruleset, sources: &SourceMap, p: &Packet, contents: &SetContents) -> Explanation {
    let d = eval::decide(rs, p, contents);
    // The rules saw the mark the `match` rules gave the packet.
    let (marked, _) = eval::marked(rs, p, contents);
    let rules = &rs.chain(p.hook).rules;
    let rule_step =
        |r: &Rule, why: Option<String>| Step { rule: r.origin.id.clone(), text: rule_text(sources, r), why };

    // One line per policy statement: its expansions (per family, protocol)
    // share an origin; show the one that came closest to matching.
    let mut tried: Vec<(usize, Step, u8)> = Vec::new();
    for &(i, field) in &d.tried {
        let r = &rules[i];
        let step = rule_step(r, Some(why_not(rs, &r.matches, field, &marked)));
        match tried.last_mut() {
            Some(last) if last.0 == r.origin.stmt => {
                if field as u8 > last.2 {
                    *last = (r.origin.stmt, step, field as u8);
                }
            }
            _ => tried.push((r.origin.stmt, step, field as u8)),
        }
    }
    let decided_by = match eval::deciding_rule(rs, p, &d) {
        Some(r) => rule_step(r, None),
        None => {
            let policy = &rs.chain(p.hook).policy;
            Step {
                rule: policy.origin.as_ref().map_or_else(|| "built-in default".to_string(), |o| o.id.clone()),
                text: policy.origin.as_ref().map_or_else(
                    || format!("policy {} {}", p.hook.name(), policy.action.keyword()),
                    |o| first_line(sources.snippet(o.span)),
                ),
                why: None,
            }
        }
    };
    // A set was tested only when the packet got past the fields before it.
    let reached: Vec<(usize, u8)> = d
        .tried
        .iter()
        .map(|&(i, f)| (i, f as u8))
        .chain(d.rule.into_iter().chain(d.exempted_by).map(|i| (i, u8::MAX)))
        .collect();
    let tested = |pick: fn(Option<&SetKind>) -> bool| {
        let mut sets: Vec<String> =
            reached.iter().flat_map(|&(i, got_to)| sets_of(rs, &rules[i].matches, got_to, pick)).collect();
        sets.sort();
        sets.dedup();
        sets
    };
    let runtime_sets = tested(|k| !matches!(k, Some(SetKind::Static { .. })));
    let timed_sets = tested(|k| k.is_some_and(SetKind::has_timeouts));
    Explanation {
        packet: packet::format(p),
        hook: p.hook,
        verdict: d.verdict,
        decided_by,
        tried: tried.into_iter().map(|(_, s, _)| s).collect(),
        over_limit: over_limit(rs, sources, p, &d, contents).map(Box::new),
        runtime_sets,
        exempted_by: d.exempted_by.map(|i| rule_step(&rules[i], None)),
        untracked: eval::deciding_rule(rs, p, &d).is_some_and(|r| r.notrack),
        offloaded: eval::deciding_rule(rs, p, &d).and_then(|r| r.offload.clone()),
        timed_sets,
        marked: d.marked_by.mark.map(|i| (mark_step(rs, sources, i), marked.mark)),
        ct_marked: d.marked_by.ct_mark.map(|i| (mark_step(rs, sources, i), marked.ct_mark)),
        urpf_failed: reached
            .iter()
            .any(|&(i, got_to)| rules[i].matches.urpf_failed && got_to >= Field::ReversePath as u8)
            .then_some(p.urpf_failed),
    }
}

/// The `match` rule at `i` of [`Ruleset::marks`], as a step.
fn mark_step(rs: &Ruleset, sources: &SourceMap, i: usize) -> Step {
    let mr = &rs.marks[i];
    Step { rule: mr.origin.id.clone(), text: first_line(sources.snippet(mr.origin.span)), why: None }
}

/// The verdict for a packet over the deciding rule's rate limit: the same
/// ruleset without that rule decides.
fn over_limit(
    rs: &Ruleset,
    sources: &SourceMap,
    p: &Packet,
    d: &Decision,
    contents: &SetContents,
) -> Option<Explanation> {
    let i = d.rule.filter(|_| d.rate_limited)?;
    let mut without = rs.clone();
    without.chains.iter_mut().find(|c| c.hook == p.hook)?.rules.remove(i);
    Some(explain_with(&without, sources, p, contents))
}

/// The verdicts the kernel may give: the decision, and when the deciding rule
/// is rate-limited, also the verdicts over its limit (in order).
pub fn possible_verdicts(e: &Explanation) -> Vec<Action> {
    let mut out = vec![e.verdict];
    let mut next = e.over_limit.as_deref();
    while let Some(x) = next {
        out.push(x.verdict);
        next = x.over_limit.as_deref();
    }
    out
}

/// The sets of the kinds `pick` takes among the address fields of `m` up to field number `got_to`.
fn sets_of(rs: &Ruleset, m: &Match, got_to: u8, pick: fn(Option<&SetKind>) -> bool) -> Vec<String> {
    [(&m.src, Field::Source), (&m.dst, Field::Destination)]
        .into_iter()
        .filter(|(_, f)| *f as u8 <= got_to)
        .filter_map(|(a, _)| match a {
            AddrMatch::Set { set, .. } if pick(rs.set(set).map(|s| &s.kind)) => Some(set.clone()),
            _ => None,
        })
        .collect()
}

pub fn rule_text(sources: &SourceMap, r: &Rule) -> String {
    first_line(sources.snippet(r.origin.span))
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The interfaces a rule wants: `eth0, br-*`, or `not docker0`.
fn ifaces_text(want: Option<&Ifaces>) -> String {
    match want {
        Some(i) if i.negated => format!("not {}", i.names_text()),
        Some(i) => i.names_text(),
        None => String::new(),
    }
}

/// Why a packet failed `field` of a rule, in words.
fn why_not(rs: &Ruleset, m: &Match, field: Field, p: &Packet) -> String {
    let have_port = |x: Option<u16>| x.map_or("none".to_string(), |v| v.to_string());
    let (have, want) = match field {
        Field::Family => (p.family().name().to_string(), m.family.map_or("any".into(), |f| f.name().to_string())),
        Field::InputInterface => (p.iif.clone().unwrap_or("none".into()), ifaces_text(m.iif.as_ref())),
        Field::OutputInterface => (p.oif.clone().unwrap_or("none".into()), ifaces_text(m.oif.as_ref())),
        Field::Protocol => (names::proto_name(p.proto), m.proto.map_or("any".into(), names::proto_name)),
        Field::Source => (p.src.to_string(), addr_text(rs, &m.src)),
        Field::Destination => (p.dst.to_string(), addr_text(rs, &m.dst)),
        Field::SourcePort => (have_port(p.sport), ports_text(m.sport.as_ref())),
        Field::DestinationPort => (have_port(p.dport), ports_text(m.dport.as_ref())),
        Field::IcmpType => (
            p.icmp_type.map_or("none".into(), |t| names::icmp_type_name(p.proto, t)),
            m.icmp_types
                .as_deref()
                .unwrap_or_default()
                .iter()
                .map(|t| names::icmp_type_name(p.proto, *t))
                .collect::<Vec<_>>()
                .join(", "),
        ),
        Field::CtState => (
            names::CT_STATES.iter().find(|(_, b)| *b == p.ct_state).map_or("?".into(), |(n, _)| n.to_string()),
            m.ct_state.map_or("any".into(), |s| s.names().join(", ")),
        ),
        Field::Mark => (p.mark.to_string(), m.mark.map_or("any".into(), |k| k.to_string())),
        Field::CtMark if !p.tracked() => {
            let state = names::CT_STATES.iter().find(|(_, b)| *b == p.ct_state).map_or("?", |(n, _)| n);
            (format!("none ({state}: no connection)"), m.ct_mark.map_or("any".into(), |k| k.to_string()))
        }
        Field::CtMark => (p.ct_mark.to_string(), m.ct_mark.map_or("any".into(), |k| k.to_string())),
        Field::SelfAddress => {
            let host = |here: bool| if here { "this host" } else { "another host" }.to_string();
            (
                host(p.dst_local),
                format!(
                    "{} (`to {}self`)",
                    host(m.dst_local == Some(true)),
                    if m.dst_local == Some(true) { "" } else { "!" }
                ),
            )
        }
        Field::ReversePath => ("passed (the packet is not `urpf-failed`)".into(), "a source that fails it".into()),
    };
    format!("{} is {have}, rule wants {want}", field.describe())
}

fn addr_text(rs: &Ruleset, a: &AddrMatch) -> String {
    match a {
        AddrMatch::Any => "any".into(),
        AddrMatch::Nets { negated, nets } => {
            format!(
                "{}{}",
                if *negated { "not " } else { "" },
                nets.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(", ")
            )
        }
        AddrMatch::Set { negated, set } => {
            let not = if *negated { "not " } else { "" };
            match rs.set(set).map(|s| &s.kind) {
                Some(k) if k.has_timeouts() => {
                    format!("{not}in set {set} (as loaded, before its timed entries expire)")
                }
                Some(SetKind::Static { .. }) | None => format!("{not}in set {set}"),
                Some(_) => format!("{not}in run-time set {set} (empty offline)"),
            }
        }
    }
}

fn ports_text(pm: Option<&crate::ir::PortMatch>) -> String {
    let Some(pm) = pm else { return "any".into() };
    let list: Vec<String> =
        pm.ranges.iter().map(|&(lo, hi)| if lo == hi { lo.to_string() } else { format!("{lo}-{hi}") }).collect();
    format!("{}{}", if pm.negated { "not " } else { "" }, list.join(", "))
}

/// The human form of an explanation.
pub fn render(e: &Explanation) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "packet:  {}", e.packet);
    render_decision(&mut out, e);
    out
}

fn render_decision(out: &mut String, e: &Explanation) {
    if let Some((by, mark)) = &e.marked {
        let _ = writeln!(out, "mark:    {mark}, set by {}  `{}`", by.rule, by.text);
    }
    if let Some((by, mark)) = &e.ct_marked {
        let _ = writeln!(out, "ct mark: {mark}, set by {}  `{}`", by.rule, by.text);
    }
    let _ = writeln!(out, "verdict: {} by {}  `{}`", e.verdict.keyword(), e.decided_by.rule, e.decided_by.text);
    if let Some(by) = &e.exempted_by {
        let _ = writeln!(out, "early:   passed by {}  `{}`: the early rules after it were skipped", by.rule, by.text);
    }
    if e.tried.is_empty() {
        let _ = writeln!(out, "no earlier rule in the {} chain", e.hook.name());
    } else {
        let _ = writeln!(out, "earlier rules in the {} chain that did not match:", e.hook.name());
        let width = e.tried.iter().map(|s| s.rule.len()).max().unwrap_or(0);
        for s in &e.tried {
            let _ = writeln!(
                out,
                "  {:width$}  `{}`\n  {:width$}    {}",
                s.rule,
                s.text,
                "",
                s.why.as_deref().unwrap_or("")
            );
        }
    }
    if e.untracked {
        let _ = writeln!(out, "untracked: passed before conntrack (notrack), so it has no connection entry");
    }
    if let Some(f) = &e.offloaded {
        let _ = writeln!(
            out,
            "offload: once established, the connection moves to flowtable {f}: its later packets, both directions, skip the forward chain"
        );
    }
    match e.urpf_failed {
        Some(true) => {
            let _ = writeln!(out, "reverse path: fails, as the packet says (`urpf-failed`); explain knows no routes");
        }
        Some(false) => {
            let _ = writeln!(
                out,
                "reverse path: taken as passing, since explain knows no routes; add `urpf-failed` to the packet for a source whose route back leaves by another interface"
            );
        }
        None => {}
    }
    if !e.runtime_sets.is_empty() {
        let _ = writeln!(out, "note: run-time sets are empty offline: {}", e.runtime_sets.join(", "));
    }
    if !e.timed_sets.is_empty() {
        let _ = writeln!(out, "note: taken as loaded, before their entries time out: {}", e.timed_sets.join(", "));
    }
    let (mut limited, mut over) = (&e.decided_by.rule, e.over_limit.as_deref());
    while let Some(x) = over {
        let _ = writeln!(
            out,
            "over the rate limit of {limited}: {} by {}  `{}`",
            x.verdict.keyword(),
            x.decided_by.rule,
            x.decided_by.text
        );
        (limited, over) = (&x.decided_by.rule, x.over_limit.as_deref());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn explain_text(policy: &str, pkt: &str) -> Explanation {
        let c = crate::ir::compile("t.pf", policy).expect("compiles");
        explain(&c.ruleset, &c.sources, &packet::parse(pkt).expect("packet"))
    }

    #[test]
    fn names_the_deciding_rule_and_why_earlier_ones_failed() {
        let e = explain_text(
            "pass in on lo\npass in proto tcp from 10.10.0.0/24 to port 22\nblock in proto tcp to port 22\n",
            "tcp 203.0.113.5:51000 -> 10.0.0.10:22 in eth0 new",
        );
        assert_eq!((e.verdict, e.decided_by.rule.as_str()), (Action::Block, "t.pf:3"));
        let whys: Vec<_> = e.tried.iter().map(|s| (s.rule.as_str(), s.why.clone().unwrap_or_default())).collect();
        assert_eq!(
            whys,
            vec![
                ("t.pf:1", "input interface is eth0, rule wants lo".to_string()),
                ("t.pf:2", "source address is 203.0.113.5, rule wants 10.10.0.0/24".to_string()),
            ]
        );
    }

    #[test]
    fn rate_limited_rules_fall_through_and_runtime_sets_are_named() {
        let e = explain_text(
            "set bl dynamic\nblock in from <bl>\npass in proto icmp limit 5/second\nreject in proto icmp\n",
            "icmp 192.0.2.1 -> 192.0.2.2 in eth0",
        );
        assert_eq!(possible_verdicts(&e), vec![Action::Pass, Action::Reject]);
        assert_eq!(e.runtime_sets, vec!["bl_v4".to_string()]);
        assert!(render(&e).contains("over the rate limit of t.pf:3: reject by t.pf:4"));
    }

    #[test]
    fn default_policy_decides_when_nothing_matches() {
        let e = explain_text("policy input reject\npass in proto udp to port 53\n", "tcp 192.0.2.1 -> 192.0.2.2:22");
        assert_eq!((e.verdict, e.decided_by.rule.as_str()), (Action::Reject, "t.pf:1"));
        assert_eq!(e.tried[0].why.as_deref(), Some("protocol is tcp, rule wants udp"));
    }

    #[test]
    fn reverse_path_is_a_given_property_of_the_packet() {
        let policy = "block in from urpf-failed\npass in proto tcp to port 22\n";
        let e = explain_text(policy, "tcp 203.0.113.5 -> 10.0.0.10:22 in eth0");
        assert_eq!((e.verdict, e.decided_by.rule.as_str()), (Action::Pass, "t.pf:2"));
        assert_eq!(
            e.tried[0].why.as_deref(),
            Some("reverse-path check is passed (the packet is not `urpf-failed`), rule wants a source that fails it")
        );
        assert_eq!(e.urpf_failed, Some(false));
        assert!(render(&e).contains("reverse path: taken as passing, since explain knows no routes"), "{}", render(&e));
        let e = explain_text(policy, "tcp 203.0.113.5 -> 10.0.0.10:22 in eth0 urpf-failed");
        assert_eq!((e.verdict, e.decided_by.rule.as_str(), e.urpf_failed), (Action::Block, "t.pf:1", Some(true)));
        assert_eq!(e.packet, "input tcp 203.0.113.5:40000 -> 10.0.0.10:22 in eth0 new urpf-failed");
        // A rule that failed before the check says nothing about the reverse path.
        let e = explain_text("block in proto udp from urpf-failed\n", "tcp 203.0.113.5 -> 10.0.0.10:22 in eth0");
        assert_eq!(e.urpf_failed, None);
    }

    #[test]
    fn to_self_is_a_property_of_the_packet_given_off_input() {
        let policy = "pass out proto tcp to self port 80\nblock out proto tcp to !self port 25\npass in to !self\n";
        let e = explain_text(policy, "output tcp 10.0.0.1 -> 10.0.0.1:80 local");
        assert_eq!((e.verdict, e.decided_by.rule.as_str()), (Action::Pass, "t.pf:1"));
        assert_eq!(e.packet, "output tcp 10.0.0.1:40000 -> 10.0.0.1:80 new local");
        let e = explain_text(policy, "output tcp 10.0.0.1 -> 192.0.2.1:80");
        assert_eq!(e.tried[0].why.as_deref(), Some("destination is another host, rule wants this host (`to self`)"));
        let e = explain_text(policy, "output tcp 10.0.0.1 -> 192.0.2.1:25");
        assert_eq!((e.verdict, e.decided_by.rule.as_str()), (Action::Block, "t.pf:2"));
        // A packet on input is addressed to this host whatever the notation says.
        let e = explain_text(policy, "tcp 192.0.2.1 -> 10.0.0.1:25 in eth0");
        assert_eq!(e.tried[0].why.as_deref(), Some("destination is this host, rule wants another host (`to !self`)"));
        assert_eq!(e.decided_by.rule, "built-in default");
    }
}
