//! The rule optimizer: a run of adjacent rules that agree on everything but
//! the values of one field (source or destination networks, source or
//! destination ports, input or output interfaces) becomes one rule that
//! looks the field up in a named set. nft then does one set lookup where it
//! did one comparison per rule.
//!
//! Only runs whose values are disjoint are merged: every packet the merged
//! rule matches matched exactly one of the original rules, at the same
//! place in the chain and with the same verdict, so first-match semantics
//! are unchanged and each set element (which carries its line's id and its
//! own counter) counts exactly the packets its line counted before.
//! Rules with a rate limit (one shared budget), a log prefix (it names the
//! line), an `early` rule or negated values are never merged.

use ipnet::IpNet;
use serde::Serialize;

use super::eval::Packet;
use super::{AddrMatch, Chain, Family, Match, Origin, PortMatch, Rule, Ruleset};

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
    const ALL: [MergeField; 6] = [
        MergeField::Source,
        MergeField::Destination,
        MergeField::SourcePort,
        MergeField::DestinationPort,
        MergeField::InputInterface,
        MergeField::OutputInterface,
    ];

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

    /// The field's values in `m`, if it can be merged (given, not negated,
    /// no interface wildcard).
    fn values(self, m: &Match) -> Option<Values> {
        let nets = |a: &AddrMatch| match a {
            AddrMatch::Nets { negated: false, nets } => Some(Values::Nets(nets.clone())),
            _ => None,
        };
        let ports = |p: &Option<PortMatch>| match p {
            Some(PortMatch { negated: false, ranges }) => Some(Values::Ports(ranges.clone())),
            _ => None,
        };
        let ifaces = |i: &Option<Vec<String>>| match i {
            Some(names) if names.iter().all(|n| !n.ends_with('*')) => Some(Values::Interfaces(names.clone())),
            _ => None,
        };
        match self {
            MergeField::Source => nets(&m.src),
            MergeField::Destination => nets(&m.dst),
            MergeField::SourcePort => ports(&m.sport),
            MergeField::DestinationPort => ports(&m.dport),
            MergeField::InputInterface => ifaces(&m.iif),
            MergeField::OutputInterface => ifaces(&m.oif),
        }
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
            (MergeField::InputInterface, Values::Interfaces(names)) => out.iif = Some(names),
            (MergeField::OutputInterface, Values::Interfaces(names)) => out.oif = Some(names),
            _ => unreachable!("values always come from the same field"),
        }
        out
    }

    /// `m` without this field, for comparing the rest.
    fn cleared(self, m: &Match) -> Match {
        let mut out = m.clone();
        match self {
            MergeField::Source => out.src = AddrMatch::Any,
            MergeField::Destination => out.dst = AddrMatch::Any,
            MergeField::SourcePort => out.sport = None,
            MergeField::DestinationPort => out.dport = None,
            MergeField::InputInterface => out.iif = None,
            MergeField::OutputInterface => out.oif = None,
        }
        out
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
    fn union(parts: &[MergedPart]) -> Values {
        match &parts[0].values {
            Values::Nets(_) => {
                let all: Vec<IpNet> = parts.iter().flat_map(|p| p.values.nets()).copied().collect();
                Values::Nets(IpNet::aggregate(&all))
            }
            Values::Ports(_) => {
                let mut all: Vec<(u16, u16)> = parts.iter().flat_map(|p| p.values.ports()).copied().collect();
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
                Values::Interfaces(parts.iter().flat_map(|p| p.values.interfaces()).cloned().collect())
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
    pub field: MergeField,
    /// nft name of the set (`opt_input_1`): one element per value of each part.
    pub set: String,
    /// The address family of a source or destination set.
    pub family: Option<Family>,
    /// The original rules, in chain order.
    pub parts: Vec<MergedPart>,
}

impl Merged {
    /// The original rule a packet that the merged rule matched belongs to:
    /// the one whose values hold the packet's value of the merged field
    /// (the parts are disjoint, so there is at most one).
    pub fn part_for(&self, p: &Packet) -> Option<&MergedPart> {
        self.parts.iter().find(|part| match (&part.values, self.field) {
            (Values::Nets(nets), MergeField::Source) => nets.iter().any(|n| n.contains(&p.src)),
            (Values::Nets(nets), MergeField::Destination) => nets.iter().any(|n| n.contains(&p.dst)),
            (Values::Ports(ranges), MergeField::SourcePort) => {
                p.sport.is_some_and(|x| ranges.iter().any(|&(lo, hi)| lo <= x && x <= hi))
            }
            (Values::Ports(ranges), MergeField::DestinationPort) => {
                p.dport.is_some_and(|x| ranges.iter().any(|&(lo, hi)| lo <= x && x <= hi))
            }
            (Values::Interfaces(names), MergeField::InputInterface) => {
                p.iif.as_ref().is_some_and(|i| names.contains(i))
            }
            (Values::Interfaces(names), MergeField::OutputInterface) => {
                p.oif.as_ref().is_some_and(|o| names.contains(o))
            }
            _ => false,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MergedPart {
    pub origin: Origin,
    pub values: Values,
}

/// Name prefix of the sets of merged rules (policy sets end in `_v4`/`_v6`).
pub const SET_PREFIX: &str = "opt_";

/// The ruleset with every mergeable run merged (see the module docs).
pub fn optimize(rs: &Ruleset) -> Ruleset {
    let mut out = rs.clone();
    for chain in &mut out.chains {
        chain.rules = merge_chain(chain);
    }
    out
}

/// The merged rules of an optimized ruleset, chain by chain.
pub fn merged_rules(rs: &Ruleset) -> impl Iterator<Item = (&Chain, &Rule, &Merged)> {
    rs.chains.iter().flat_map(|c| c.rules.iter().filter_map(move |r| r.merged.as_ref().map(|m| (c, r, m))))
}

fn merge_chain(chain: &Chain) -> Vec<Rule> {
    let mut out: Vec<Rule> = Vec::with_capacity(chain.rules.len());
    let mut sets = 0;
    let mut finish = |run: Run<'_>, out: &mut Vec<Rule>| match (run.field, run.rules.len()) {
        (Some(f), n) if n >= 2 => {
            sets += 1;
            out.push(merge(&run.rules, f, format!("{SET_PREFIX}{}_{sets}", chain.hook.name())));
        }
        _ => out.extend(run.rules.iter().map(|r| (*r).clone())),
    };
    let mut run = Run::default();
    for rule in &chain.rules {
        if !run.join(rule) {
            finish(std::mem::take(&mut run), &mut out);
            run.join(rule);
        }
    }
    finish(run, &mut out);
    out
}

/// Whether a rule may be part of a merged rule at all.
fn mergeable(r: &Rule) -> bool {
    r.limit.is_none() && r.quota.is_none() && r.log.is_none() && !r.early && r.merged.is_none()
}

/// A run of adjacent rules being merged.
#[derive(Default)]
struct Run<'a> {
    rules: Vec<&'a Rule>,
    /// The field the run differs in, once it has two rules.
    field: Option<MergeField>,
    /// The first rule's matches without `field`: what every rule shares.
    rest: Option<Match>,
    /// The values the run holds so far.
    taken: Taken,
}

impl<'a> Run<'a> {
    /// Adds `rule` if it extends the run: same tail, everything but one
    /// field the same, and values disjoint from the run's.
    fn join(&mut self, rule: &'a Rule) -> bool {
        let Some(&first) = self.rules.first() else {
            self.rules.push(rule);
            return true;
        };
        if !mergeable(first) || !mergeable(rule) {
            return false;
        }
        let same_tail = (first.action, first.counter, &first.label, first.reject)
            == (rule.action, rule.counter, &rule.label, rule.reject);
        if !same_tail {
            return false;
        }
        let candidates = match self.field {
            Some(f) => vec![f],
            None => MergeField::ALL.to_vec(),
        };
        for f in candidates {
            let Some(new) = f.values(&rule.matches) else { continue };
            let rest = f.cleared(&rule.matches);
            if self.field.is_none() {
                let Some(old) = f.values(&first.matches) else { continue };
                if f.cleared(&first.matches) != rest {
                    continue;
                }
                let mut taken = Taken::default();
                taken.insert(&old);
                if taken.overlaps(&new) {
                    continue;
                }
                taken.insert(&new);
                (self.field, self.rest, self.taken) = (Some(f), Some(rest), taken);
            } else {
                if self.rest.as_ref() != Some(&rest) || self.taken.overlaps(&new) {
                    continue;
                }
                self.taken.insert(&new);
            }
            self.rules.push(rule);
            return true;
        }
        false
    }
}

/// Values already in a run: disjoint inclusive intervals (networks as
/// address ranges, port ranges) by start, and interface names. Checking a
/// new rule costs a lookup, not a pass over the run.
#[derive(Default)]
struct Taken {
    intervals: std::collections::BTreeMap<u128, u128>,
    names: std::collections::HashSet<String>,
}

impl Taken {
    fn intervals(v: &Values) -> Vec<(u128, u128)> {
        let span = |n: &IpNet| match n {
            IpNet::V4(n) => (u128::from(u32::from(n.network())), u128::from(u32::from(n.broadcast()))),
            IpNet::V6(n) => (u128::from(n.network()), u128::from(n.broadcast())),
        };
        match v {
            Values::Nets(nets) => nets.iter().map(span).collect(),
            Values::Ports(ranges) => ranges.iter().map(|&(lo, hi)| (u128::from(lo), u128::from(hi))).collect(),
            Values::Interfaces(_) => Vec::new(),
        }
    }

    fn overlaps(&self, v: &Values) -> bool {
        let hit = |(start, end): (u128, u128)| {
            // The interval starting last at or before `end` is the only one
            // that can reach back to `start` (they are disjoint).
            self.intervals.range(..=end).next_back().is_some_and(|(_, &e)| e >= start)
        };
        Taken::intervals(v).into_iter().any(hit) || v.interfaces().iter().any(|n| self.names.contains(n))
    }

    fn insert(&mut self, v: &Values) {
        self.intervals.extend(Taken::intervals(v));
        self.names.extend(v.interfaces().iter().cloned());
    }
}

fn merge(run: &[&Rule], field: MergeField, set: String) -> Rule {
    let parts: Vec<MergedPart> = run
        .iter()
        .map(|r| MergedPart {
            origin: r.origin.clone(),
            values: field.values(&r.matches).expect("checked when the run was formed"),
        })
        .collect();
    let first = run[0];
    let matches = field.with(&first.matches, Values::union(&parts));
    let family = matches!(field, MergeField::Source | MergeField::Destination).then_some(()).and(first.matches.family);
    Rule { matches, merged: Some(Merged { field, set, family, parts }), ..first.clone() }
}

/// `compile --explain-optimize`: one paragraph per merged rule.
pub fn explain(rs: &Ruleset) -> String {
    let mut out = String::new();
    let mut count = 0;
    for (chain, rule, m) in merged_rules(rs) {
        count += 1;
        out += &format!(
            "{} chain: {} rules merged into one `{}` rule over set @{} ({}):\n",
            chain.hook.name(),
            m.parts.len(),
            rule.action.keyword(),
            m.set,
            m.field.describe()
        );
        for p in &m.parts {
            out += &format!("  {:<24} {}\n", p.origin.id, describe_values(&p.values));
        }
    }
    let total: usize = rs.chains.iter().map(|c| c.rules.len()).sum();
    out += &format!("{count} merged rule(s); {total} rules in the optimized chains\n");
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
