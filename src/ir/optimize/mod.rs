//! The rule optimizer: rules that agree on everything but the values of one
//! field (source or destination networks, source or destination ports,
//! input or output interfaces) or of two (a concatenated set such as
//! `ip saddr . tcp dport`) become one rule that looks the values up in a
//! named set. nft then does one set lookup where it did one comparison per
//! rule.
//!
//! The rules of a group need not be adjacent: a rule moves up to its group
//! past rules that cannot see the same packets, or that have the same verdict
//! and no side effects (see [`place`]). The members' values are disjoint, so
//! every packet the merged rule matches matched exactly one of the original
//! rules, which the packet met first in the original order too: first-match
//! semantics are unchanged, and each set element (which carries its line's id
//! and its own counter) counts exactly the packets its line counted before.
//!
//! Rules with a rate limit (one budget per line), a quota, a log prefix (it
//! names the line) or a named counter cannot share one rule over a set: a
//! group of them becomes one rule over a verdict map instead
//! (`ip saddr vmap @opt_input_2`), whose element for each line jumps to a
//! chain of its own holding that line's rule exactly as it was. Over the
//! limit, the line's chain returns and the packet goes on after the map
//! rule; such lines only ever move past lines no packet matches as well, so
//! the packet meets the rest in the original order (see [`place`]).
//! `early` rules and negated values are never merged.

mod overlap;
mod place;

use ipnet::IpNet;
use serde::Serialize;

use super::eval::Packet;
use super::{AddrMatch, Chain, Family, Ifaces, Match, Origin, PortMatch, Rule, Ruleset};
use place::{Slot, SHAPES};

/// The field a merged rule looks up in its set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MergeField {
    Source,
    Destination,
    SourcePort,
    DestinationPort,
    InputInterface,
    OutputInterface,
}

impl MergeField {
    pub fn describe(self) -> &'static str {
        match self {
            MergeField::Source => "source address",
            MergeField::Destination => "destination address",
            MergeField::SourcePort => "source port",
            MergeField::DestinationPort => "destination port",
            MergeField::InputInterface => "input interface",
            MergeField::OutputInterface => "output interface",
        }
    }

    /// Whether the field can be merged in `m`: given, not negated, no
    /// interface wildcard. A negated field stays in the merged rule's own
    /// matches when the rules merge on another field.
    fn given(self, m: &Match) -> bool {
        let nets = |a: &AddrMatch| matches!(a, AddrMatch::Nets { negated: false, .. });
        let ports = |p: &Option<PortMatch>| matches!(p, Some(PortMatch { negated: false, .. }));
        let ifaces = |i: &Option<Ifaces>| matches!(i, Some(Ifaces { negated: false, names }) if names.iter().all(|n| !n.ends_with('*')));
        match self {
            MergeField::Source => nets(&m.src),
            MergeField::Destination => nets(&m.dst),
            MergeField::SourcePort => ports(&m.sport),
            MergeField::DestinationPort => ports(&m.dport),
            MergeField::InputInterface => ifaces(&m.iif),
            MergeField::OutputInterface => ifaces(&m.oif),
        }
    }

    /// The field's values in `m`, if it can be merged (see [`MergeField::given`]).
    fn values(self, m: &Match) -> Option<Values> {
        let nets = |a: &AddrMatch| match a {
            AddrMatch::Nets { nets, .. } => nets.clone(),
            _ => Vec::new(),
        };
        let ports = |p: &Option<PortMatch>| p.as_ref().map_or_else(Vec::new, |p| p.ranges.clone());
        let ifaces = |i: &Option<Ifaces>| i.as_ref().map_or_else(Vec::new, |i| i.names.clone());
        self.given(m).then(|| match self {
            MergeField::Source => Values::Nets(nets(&m.src)),
            MergeField::Destination => Values::Nets(nets(&m.dst)),
            MergeField::SourcePort => Values::Ports(ports(&m.sport)),
            MergeField::DestinationPort => Values::Ports(ports(&m.dport)),
            MergeField::InputInterface => Values::Interfaces(ifaces(&m.iif)),
            MergeField::OutputInterface => Values::Interfaces(ifaces(&m.oif)),
        })
    }

    /// `m` with this field set to `v`.
    fn with(self, m: &Match, v: Values) -> Match {
        let mut out = m.clone();
        match (self, v) {
            (MergeField::Source, Values::Nets(nets)) => out.src = AddrMatch::Nets { negated: false, nets },
            (MergeField::Destination, Values::Nets(nets)) => out.dst = AddrMatch::Nets { negated: false, nets },
            (MergeField::SourcePort, Values::Ports(ranges)) => out.sport = Some(PortMatch { negated: false, ranges }),
            (MergeField::DestinationPort, Values::Ports(ranges)) => {
                out.dport = Some(PortMatch { negated: false, ranges })
            }
            (MergeField::InputInterface, Values::Interfaces(names)) => out.iif = Some(Ifaces::plain(names)),
            (MergeField::OutputInterface, Values::Interfaces(names)) => out.oif = Some(Ifaces::plain(names)),
            _ => unreachable!("values always come from the same field"),
        }
        out
    }

    /// `m` without these fields, for comparing the rest (the cleared
    /// fields are never copied: they are most of a rule's data).
    fn cleared(fields: &[MergeField], m: &Match) -> Match {
        let keep = |f: MergeField| !fields.contains(&f);
        let addr = |f: MergeField, a: &AddrMatch| if keep(f) { a.clone() } else { AddrMatch::Any };
        let port = |f: MergeField, p: &Option<PortMatch>| if keep(f) { p.clone() } else { None };
        let iface = |f: MergeField, i: &Option<Ifaces>| if keep(f) { i.clone() } else { None };
        Match {
            family: m.family,
            iif: iface(MergeField::InputInterface, &m.iif),
            oif: iface(MergeField::OutputInterface, &m.oif),
            proto: m.proto,
            src: addr(MergeField::Source, &m.src),
            dst: addr(MergeField::Destination, &m.dst),
            sport: port(MergeField::SourcePort, &m.sport),
            dport: port(MergeField::DestinationPort, &m.dport),
            icmp_types: m.icmp_types.clone(),
            ct_state: m.ct_state,
            mark: m.mark,
            ct_mark: m.ct_mark,
            urpf_failed: m.urpf_failed,
            dst_local: m.dst_local,
        }
    }
}

/// Values of one field: what a set element of a merged rule holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "kind", content = "values")]
pub enum Values {
    Nets(Vec<IpNet>),
    /// Inclusive ranges.
    Ports(Vec<(u16, u16)>),
    Interfaces(Vec<String>),
}

impl Values {
    fn union(parts: &[&Values]) -> Values {
        match parts[0] {
            Values::Nets(_) => {
                let all: Vec<IpNet> = parts.iter().flat_map(|p| p.nets()).copied().collect();
                Values::Nets(IpNet::aggregate(&all))
            }
            Values::Ports(_) => {
                let mut all: Vec<(u16, u16)> = parts.iter().flat_map(|p| p.ports()).copied().collect();
                all.sort_unstable();
                let mut merged: Vec<(u16, u16)> = Vec::with_capacity(all.len());
                for (lo, hi) in all {
                    match merged.last_mut() {
                        Some(last) if u32::from(lo) <= u32::from(last.1) + 1 => last.1 = last.1.max(hi),
                        _ => merged.push((lo, hi)),
                    }
                }
                Values::Ports(merged)
            }
            Values::Interfaces(_) => {
                let mut all: Vec<String> = parts.iter().flat_map(|p| p.interfaces()).cloned().collect();
                all.sort_unstable();
                all.dedup();
                Values::Interfaces(all)
            }
        }
    }

    fn nets(&self) -> &[IpNet] {
        match self {
            Values::Nets(n) => n,
            _ => &[],
        }
    }

    fn ports(&self) -> &[(u16, u16)] {
        match self {
            Values::Ports(p) => p,
            _ => &[],
        }
    }

    fn interfaces(&self) -> &[String] {
        match self {
            Values::Interfaces(i) => i,
            _ => &[],
        }
    }
}

/// What a merged rule stands for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Merged {
    /// The fields looked up: one (a plain set) or two (a concatenated set).
    pub fields: Vec<MergeField>,
    /// nft name of the set (`opt_input_1`): one element per combination of
    /// each part's values.
    pub set: String,
    /// The set is a verdict map: each part's elements jump to the chain
    /// [`Merged::chain`] that holds the part's own rule (limits, logs,
    /// quotas and named counters stay the line's own).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub dispatch: bool,
    /// The address family of a source or destination set.
    pub family: Option<Family>,
    /// The original rules, in policy order.
    pub parts: Vec<MergedPart>,
}

impl Merged {
    /// The original rule a packet that the merged rule's other matches
    /// accept belongs to: the one whose values hold the packet's (the parts
    /// are disjoint, so there is at most one). `None`: the merged rule does
    /// not match the packet.
    pub fn part_for(&self, p: &Packet) -> Option<&MergedPart> {
        self.parts.iter().find(|part| self.fields.iter().zip(&part.values).all(|(f, v)| f.holds(v, p)))
    }

    /// Each part's matches as a rule of its own (`rule` is the merged rule).
    pub fn part_matches<'a>(&'a self, rule: &'a Rule) -> impl Iterator<Item = Match> + 'a {
        self.parts.iter().map(move |part| {
            self.fields.iter().zip(&part.values).fold(rule.matches.clone(), |m, (f, v)| f.with(&m, v.clone()))
        })
    }

    /// The chain a verdict map's part `k` (0-based) jumps to.
    pub fn chain(&self, k: usize) -> String {
        format!("{}_{}", self.set, k + 1)
    }

    /// `source address . destination port`.
    pub fn describe_fields(&self) -> String {
        self.fields.iter().map(|f| f.describe()).collect::<Vec<_>>().join(" . ")
    }
}

impl MergeField {
    /// Does the packet's value of this field lie in `v`?
    fn holds(self, v: &Values, p: &Packet) -> bool {
        let port = |x: Option<u16>, ranges: &[(u16, u16)]| {
            x.is_some_and(|x| ranges.iter().any(|&(lo, hi)| lo <= x && x <= hi))
        };
        match (v, self) {
            (Values::Nets(nets), MergeField::Source) => nets.iter().any(|n| n.contains(&p.src)),
            (Values::Nets(nets), MergeField::Destination) => nets.iter().any(|n| n.contains(&p.dst)),
            (Values::Ports(ranges), MergeField::SourcePort) => port(p.sport, ranges),
            (Values::Ports(ranges), MergeField::DestinationPort) => port(p.dport, ranges),
            (Values::Interfaces(names), MergeField::InputInterface) => {
                p.iif.as_ref().is_some_and(|i| names.contains(i))
            }
            (Values::Interfaces(names), MergeField::OutputInterface) => {
                p.oif.as_ref().is_some_and(|o| names.contains(o))
            }
            _ => false,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MergedPart {
    pub origin: Origin,
    /// The policy line's own rule, as it was before merging.
    #[serde(skip)]
    pub rule: Rule,
    /// One list of values per field of the merged rule.
    pub values: Vec<Values>,
    /// Rules that came before it in the policy and now come after the merged rule.
    #[serde(skip_serializing_if = "is_zero")]
    pub moved_past: usize,
    /// Some of them may match the same packets (same verdict, no side
    /// effects); the others are disjoint from it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub past_same_verdict: bool,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Name prefix of the sets of merged rules (policy sets end in `_v4`/`_v6`).
pub const SET_PREFIX: &str = "opt_";

/// The ruleset with every mergeable run merged (see the module docs).
pub fn optimize(rs: &Ruleset) -> Ruleset {
    // Field by field: the chains' rules are rebuilt, never copied first.
    let chains = rs
        .chains
        .iter()
        .map(|c| Chain { hook: c.hook, policy: c.policy.clone(), rules: merge_chain(c), priority: c.priority })
        .collect();
    Ruleset {
        table: rs.table.clone(),
        sets: rs.sets.clone(),
        chains,
        nat: rs.nat.clone(),
        marks: rs.marks.clone(),
        flowtables: rs.flowtables.clone(),
        feeds: rs.feeds.clone(),
        allow_always: rs.allow_always.clone(),
        tests: rs.tests.clone(),
        adaptive: rs.adaptive.clone(),
        expiries: rs.expiries.clone(),
    }
}

/// The merged rules of an optimized ruleset, chain by chain.
pub fn merged_rules(rs: &Ruleset) -> impl Iterator<Item = (&Chain, &Rule, &Merged)> {
    rs.chains.iter().flat_map(|c| c.rules.iter().filter_map(move |r| r.merged.as_ref().map(|m| (c, r, m))))
}

fn merge_chain(chain: &Chain) -> Vec<Rule> {
    let slots = place::place(&chain.rules);
    let moved = moved_past(&slots, chain.rules.len());
    let mut out: Vec<Rule> = Vec::with_capacity(slots.len());
    let mut sets = 0;
    for (slot, moved) in slots.iter().zip(moved) {
        match slot.shape {
            Some(shape) if slot.rules.len() >= 2 => {
                sets += 1;
                let name = format!("{SET_PREFIX}{}_{sets}", chain.hook.name());
                out.push(merge(slot, SHAPES[shape], &moved, name));
            }
            _ => out.push(slot.rules[0].1.clone()),
        }
    }
    out
}

/// Per place and member: how many rules before it in the policy come after
/// its place now (a count over a Fenwick tree of original positions).
fn moved_past(slots: &[Slot<'_>], n: usize) -> Vec<Vec<usize>> {
    let mut tree = vec![0usize; n + 1];
    let mut out = vec![Vec::new(); slots.len()];
    for (s, slot) in slots.iter().enumerate().rev() {
        out[s] = slot
            .rules
            .iter()
            .map(|&(i, _)| {
                let (mut sum, mut k) = (0, i);
                while k > 0 {
                    sum += tree[k];
                    k &= k - 1;
                }
                sum
            })
            .collect();
        for &(i, _) in &slot.rules {
            let mut k = i + 1;
            while k <= n {
                tree[k] += 1;
                k += k & k.wrapping_neg();
            }
        }
    }
    out
}

fn merge(slot: &Slot<'_>, fields: &[MergeField], moved: &[usize], set: String) -> Rule {
    let parts: Vec<MergedPart> = slot
        .rules
        .iter()
        .zip(moved)
        .zip(&slot.past_same_verdict)
        .map(|((&(_, r), &moved_past), &past_same_verdict)| MergedPart {
            origin: r.origin.clone(),
            rule: r.clone(),
            values: fields.iter().map(|f| f.values(&r.matches).expect("checked when the group was formed")).collect(),
            moved_past,
            past_same_verdict,
        })
        .collect();
    let first = slot.rules[0].1;
    let matches = fields.iter().enumerate().fold(first.matches.clone(), |m, (i, f)| {
        let values: Vec<&Values> = parts.iter().map(|p| &p.values[i]).collect();
        f.with(&m, Values::union(&values))
    });
    let addresses = fields.iter().any(|f| matches!(f, MergeField::Source | MergeField::Destination));
    let family = addresses.then_some(()).and(first.matches.family);
    let dispatch = !place::mergeable(first);
    let merged = Some(Merged { fields: fields.to_vec(), set, dispatch, family, parts });
    if dispatch {
        // The lines' own rules decide, in their chains; the map rule itself
        // only matches what they share and jumps.
        let quiet = Rule {
            limit: None,
            quota: None,
            log: None,
            counter: false,
            counter_name: None,
            label: None,
            set_marks: Vec::new(),
            ..first.clone()
        };
        return Rule { matches, merged, ..quiet };
    }
    Rule { matches, merged, ..first.clone() }
}

impl Rule {
    /// The policy lines this rule stands for, in policy order: a merged
    /// rule's parts (disjoint, so meeting them one after another decides
    /// every packet as the merged rule does), else the rule itself.
    pub fn lines(&self) -> Box<dyn Iterator<Item = &Rule> + '_> {
        match &self.merged {
            Some(m) => Box::new(m.parts.iter().map(|p| &p.rule)),
            None => Box::new(std::iter::once(self)),
        }
    }
}

/// `compile --explain-optimize`: one paragraph per merged rule, each part
/// with the rules it moved past and why that is safe.
pub fn explain(rs: &Ruleset) -> String {
    let mut out = String::new();
    let (mut count, mut maps, mut moved) = (0, 0, 0);
    for (chain, rule, m) in merged_rules(rs) {
        count += 1;
        let (hook, n, fields) = (chain.hook.name(), m.parts.len(), m.describe_fields());
        out += &if m.dispatch {
            maps += 1;
            format!("{hook} chain: {n} rules dispatched by one rule over verdict map @{} ({fields}), each line in a chain of its own:\n", m.set)
        } else {
            format!(
                "{hook} chain: {n} rules merged into one `{}` rule over set @{} ({fields}):\n",
                rule.action.keyword(),
                m.set
            )
        };
        for (k, p) in m.parts.iter().enumerate() {
            let mut values = p.values.iter().map(describe_values).collect::<Vec<_>>().join(" . ");
            if m.dispatch {
                values += &format!(" : jump {}", m.chain(k));
            }
            out += &format!("  {:<24} {values}", p.origin.id);
            if p.moved_past > 0 {
                moved += 1;
                let why = if p.past_same_verdict {
                    "each is disjoint from it or has the same verdict, and neither has side effects"
                } else {
                    "no packet matches both"
                };
                out += &format!("  (moved up past {} rule(s): {why})", p.moved_past);
            }
            out.push('\n');
        }
    }
    let total: usize = rs.chains.iter().map(|c| c.rules.len()).sum();
    let maps = if maps > 0 { format!(" ({maps} over a verdict map)") } else { String::new() };
    out += &format!("{count} merged rule(s){maps}, {moved} line(s) moved; {total} rules in the optimized chains\n");
    out
}

fn describe_values(v: &Values) -> String {
    match v {
        Values::Nets(n) => n.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(", "),
        Values::Ports(p) => p
            .iter()
            .map(|&(lo, hi)| if lo == hi { lo.to_string() } else { format!("{lo}-{hi}") })
            .collect::<Vec<_>>()
            .join(", "),
        Values::Interfaces(i) => i.join(", "),
    }
}
