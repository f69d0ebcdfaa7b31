//! `rules`: every policy rule with the counters of the nft rules compiled
//! from it. Each nft rule's comment starts with its origin (`file:line`),
//! which links it back; a policy line that expanded into several nft rules
//! (tcp and udp, v4 and v6) gets their sum.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::ir::{Compiled, Hook, Origin};
use crate::nft::kernel::{ElementCounter, KernelRule, NamedCounter};

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RuleRow {
    /// `file:line`, as in nft comments and log prefixes.
    pub id: String,
    pub line: usize,
    /// The policy statement's text.
    pub text: String,
    pub kind: &'static str,
    pub chain: String,
    pub action: String,
    pub label: Option<String>,
    /// Whether the policy asks for a counter on this rule.
    pub counter: bool,
    /// `counter "name"`: the line counts into this named counter, which its
    /// packets and bytes are (shared with the other lines that name it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counter_name: Option<String>,
    /// nft rules from this line in the live table.
    pub nft_rules: usize,
    /// Sums over the live counters; `None` when no live rule counts.
    pub packets: Option<u64>,
    pub bytes: Option<u64>,
}

/// Counters of the live nft rules by origin id.
#[derive(Default)]
struct Live {
    rules: usize,
    counted: Option<(u64, u64)>,
}

impl Live {
    fn add(&mut self, (packets, bytes): (u64, u64)) {
        let (p0, b0) = self.counted.unwrap_or((0, 0));
        self.counted = Some((p0 + packets, b0 + bytes));
    }
}

/// One row per policy line. A line merged into another's nft rule by the
/// optimizer is counted by its elements in the merged rule's set
/// (`element_counters`), and that shared rule is its one nft rule.
pub fn rows(
    compiled: &Compiled,
    live_rules: Option<&[KernelRule]>,
    element_counters: &[ElementCounter],
    named: &[NamedCounter],
) -> Vec<RuleRow> {
    let mut live: BTreeMap<&str, Live> = BTreeMap::new();
    for rule in live_rules.into_iter().flatten() {
        let Some(id) = rule.comment.as_deref().and_then(|c| c.split(' ').next()) else { continue };
        let entry = live.entry(id).or_default();
        entry.rules += 1;
        if let Some(counter) = rule.counter {
            entry.add(counter);
        }
    }
    for e in element_counters {
        let entry = live.entry(e.id.as_str()).or_default();
        entry.rules = entry.rules.max(1);
        entry.add((e.packets, e.bytes));
    }

    let rs = &compiled.ruleset;
    let mut out: Vec<(usize, RuleRow)> = Vec::new();
    let mut push = |origin: &Origin, kind, chain: &str, action: String, label: Option<&String>, counter| {
        if out.iter().any(|(_, r)| r.id == origin.id) {
            return;
        }
        let l = live.get(origin.id.as_str());
        let (line, text) = if origin.id.starts_with("default:") {
            (0, format!("policy {chain} {action} (built-in default)"))
        } else {
            (compiled.sources.line_col(origin.span).0, compiled.sources.snippet(origin.span).trim().to_string())
        };
        out.push((
            origin.stmt,
            RuleRow {
                id: origin.id.clone(),
                line,
                text,
                kind,
                chain: chain.to_string(),
                action,
                label: label.cloned(),
                counter,
                counter_name: None,
                nft_rules: l.map_or(0, |l| l.rules),
                packets: l.and_then(|l| l.counted).map(|c| c.0),
                bytes: l.and_then(|l| l.counted).map(|c| c.1),
            },
        ));
    };
    for mr in &rs.marks {
        let sets: Vec<String> = mr.sets.iter().map(ToString::to_string).collect();
        push(&mr.origin, "match", crate::nft::match_chain(mr), sets.join(" "), None, mr.counter);
    }
    for chain in &rs.chains {
        for r in &chain.rules {
            // An early rule is in the input and the forward chain of the IR, once in nft.
            let name = match (r.early, chain.hook) {
                (true, Hook::Input) => crate::nft::EARLY_CHAIN,
                (true, Hook::Output) => crate::nft::EARLY_OUT_CHAIN,
                (true, _) => continue,
                (false, hook) => hook.name(),
            };
            push(&r.origin, "rule", name, r.action.keyword().to_string(), r.label.as_ref(), r.counter);
        }
        let p = &chain.policy;
        // A built-in default sorts after every statement of the policy.
        let origin = p.origin.clone().unwrap_or_else(|| Origin {
            id: p.id(chain.hook),
            span: Default::default(),
            stmt: usize::MAX,
        });
        push(&origin, "policy", chain.hook.name(), p.action.keyword().to_string(), None, p.counter);
    }
    // A line with a named counter shows that counter's count.
    for (_, row) in &mut out {
        let rule = rs.chains.iter().flat_map(|c| &c.rules).find(|r| r.origin.id == row.id);
        if let Some(name) = rule.and_then(|r| r.counter_name.clone()) {
            if let Some(c) = named.iter().find(|c| c.name == name) {
                (row.packets, row.bytes) = (Some(c.packets), Some(c.bytes));
            }
            row.counter_name = Some(name);
        }
    }
    out.sort_by_key(|(stmt, _)| *stmt);
    out.into_iter().map(|(_, r)| r).collect()
}

/// A named counter of the policy, with its live count and the lines that
/// count into it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CounterRow {
    pub name: String,
    /// `file:line` of every line that names it, in policy order.
    pub lines: Vec<String>,
    /// `None` when the counter is not in the live table.
    pub packets: Option<u64>,
    pub bytes: Option<u64>,
}

/// Every named counter the policy declares (through its rules), by name.
pub fn counters(compiled: &Compiled, named: &[NamedCounter]) -> Vec<CounterRow> {
    let mut out: BTreeMap<&str, CounterRow> = BTreeMap::new();
    for r in compiled.ruleset.chains.iter().flat_map(|c| &c.rules) {
        let Some(name) = r.counter_name.as_deref() else { continue };
        let row = out.entry(name).or_insert_with(|| {
            let live = named.iter().find(|c| c.name == name);
            CounterRow {
                name: name.to_string(),
                lines: Vec::new(),
                packets: live.map(|c| c.packets),
                bytes: live.map(|c| c.bytes),
            }
        });
        if !row.lines.contains(&r.origin.id) {
            row.lines.push(r.origin.id.clone());
        }
    }
    out.into_values().collect()
}

/// A live rule that no line of the policy compiles to: added by hand, or
/// left from another ruleset (`panic`). Its presence means drift.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OtherRule {
    pub chain: String,
    pub handle: Option<u64>,
    pub comment: Option<String>,
    pub packets: Option<u64>,
    pub bytes: Option<u64>,
}

pub fn other_rules(rows: &[RuleRow], live_rules: Option<&[KernelRule]>) -> Vec<OtherRule> {
    let known = |comment: Option<&str>| {
        comment.and_then(|c| c.split(' ').next()).is_some_and(|id| rows.iter().any(|r| r.id == id))
    };
    live_rules
        .into_iter()
        .flatten()
        .filter(|r| !known(r.comment.as_deref()))
        .map(|r| OtherRule {
            chain: r.chain.clone(),
            handle: r.handle,
            comment: r.comment.clone(),
            packets: r.counter.map(|c| c.0),
            bytes: r.counter.map(|c| c.1),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = "table t\npolicy input block counter\npass in proto tcp to port { 22, 80 } counter label \"ssh+web\"\npass in proto { tcp, udp } to port 53 nocounter\n";

    fn live_rule(comment: Option<&str>, handle: u64, counter: Option<(u64, u64)>) -> KernelRule {
        KernelRule {
            chain: "input".into(),
            comment: comment.map(str::to_string),
            body: Vec::new(),
            exprs: Vec::new(),
            handle: Some(handle),
            counter,
        }
    }

    #[test]
    fn counters_are_summed_per_policy_line() {
        let c = crate::ir::compile("p.pf", POLICY).expect("compiles");
        let listing = [
            live_rule(Some("p.pf:3 ssh+web"), 1, Some((4, 240))),
            live_rule(Some("p.pf:4"), 2, None),
            live_rule(Some("p.pf:4"), 3, None),
            live_rule(Some("p.pf:2 policy"), 4, Some((7, 420))),
        ];
        let rows = rows(&c, Some(&listing), &[], &[]);
        let ids: Vec<_> = rows.iter().map(|r| (r.id.as_str(), r.kind, r.nft_rules, r.packets, r.bytes)).collect();
        assert_eq!(
            ids,
            [
                ("p.pf:2", "policy", 1, Some(7), Some(420)),
                ("p.pf:3", "rule", 1, Some(4), Some(240)),
                ("p.pf:4", "rule", 2, None, None),
                ("default:forward", "policy", 0, None, None),
                ("default:output", "policy", 0, None, None)
            ]
        );
        assert_eq!(rows[1].text, "pass in proto tcp to port { 22, 80 } counter label \"ssh+web\"");
        assert_eq!((rows[1].label.as_deref(), rows[1].counter, rows[2].counter), (Some("ssh+web"), true, false));
        assert_eq!(rows[0].action, "block");
        assert_eq!(rows[4].text, "policy output pass (built-in default)");

        assert!(other_rules(&rows, Some(&listing)).is_empty());
        let extra = [live_rule(Some("p.pf:3 ssh+web"), 5, None), live_rule(None, 9, Some((2, 80)))];
        let others = other_rules(&rows, Some(&extra));
        assert_eq!(
            others,
            [OtherRule { chain: "input".into(), handle: Some(9), comment: None, packets: Some(2), bytes: Some(80) }]
        );

        let unloaded = super::rows(&c, None, &[], &[]);
        assert!(unloaded.iter().all(|r| r.nft_rules == 0 && r.packets.is_none()));
    }
}
