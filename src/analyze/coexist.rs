//! Other firewalls beside phantomc's table: every other base chain on the
//! hooks a packet to, through or from this host passes, read from the kernel
//! ([`crate::nft::tables`], legacy iptables through [`crate::nft::legacy`]).
//! In nftables an accept ends a packet's walk through one base chain only;
//! a drop in any other chain on its path still drops it, so a chain that can
//! drop or reject can override what phantomc passes.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use serde::Serialize;

use crate::ir::{Action, Ruleset};
use crate::nft::iptables_save::{self, SaveFile};
use crate::nft::tables::{self, Chain, Expr, Verdict, NFPROTO_INET, NFPROTO_IPV4, NFPROTO_IPV6, NFPROTO_NETDEV};

/// Hooks in the order a packet meets them.
pub const HOOK_ORDER: [&str; 6] = ["ingress", "prerouting", "input", "forward", "output", "postrouting"];

/// One base chain on a hook, phantomc's or another's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HookChain {
    pub family: &'static str,
    pub table: String,
    pub chain: String,
    pub hook: &'static str,
    pub priority: i32,
    #[serde(rename = "type")]
    pub chain_type: String,
    /// `accept` or `drop`.
    pub policy: &'static str,
    pub rules: usize,
    /// phantomc, ufw, firewalld, docker, fail2ban, iptables-nft, iptables-legacy or nft.
    pub owner: &'static str,
    /// Its policy drops, or a rule it reaches drops or rejects.
    pub can_drop: bool,
}

impl HookChain {
    pub fn is_phantomc(&self) -> bool {
        self.owner == "phantomc"
    }

    /// Another firewall's chain that can drop what phantomc passes.
    pub fn overrides(&self) -> bool {
        !self.is_phantomc() && self.can_drop
    }

    fn name(&self) -> String {
        format!("{} {} {}", self.family, self.table, self.chain)
    }
}

/// Every base chain on the packet path, in hook then priority order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Coexistence {
    pub chains: Vec<HookChain>,
    /// What could not be read (legacy iptables without its tool).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl Coexistence {
    pub fn foreign(&self) -> impl Iterator<Item = &HookChain> {
        self.chains.iter().filter(|c| !c.is_phantomc())
    }

    pub fn overriding(&self) -> impl Iterator<Item = &HookChain> {
        self.chains.iter().filter(|c| c.overrides())
    }
}

/// Reads every table of the calling thread's network namespace (and legacy
/// iptables) and places phantomc's chains of `rs` among them; phantomc's own
/// table comes from `rs`, loaded or not.
pub fn read(rs: &Ruleset) -> std::io::Result<Coexistence> {
    // phantomc's own chains come from `rs`: its rules need no decoding.
    let kernel = tables::chains_beside(tables::NFPROTO_INET, &rs.table)?;
    let (legacy, notes) = crate::nft::legacy::saved();
    Ok(arrange(rs, &kernel, &legacy, notes))
}

/// [`read`] on what was read.
pub fn arrange(rs: &Ruleset, kernel: &[Chain], legacy: &[(u8, SaveFile)], notes: Vec<String>) -> Coexistence {
    let mut chains: Vec<HookChain> = rs
        .chains
        .iter()
        .map(|c| HookChain {
            family: "inet",
            table: rs.table.clone(),
            chain: c.hook.name().to_string(),
            hook: c.hook.name(),
            priority: c.priority,
            chain_type: "filter".into(),
            policy: if c.policy.action == Action::Pass { "accept" } else { "drop" },
            rules: c.rules.len() + 1,
            owner: "phantomc",
            can_drop: c.policy.action != Action::Pass || c.rules.iter().any(|r| r.action != Action::Pass),
        })
        .collect();
    for c in kernel {
        let Some(base) = &c.base else { continue };
        let on_path = matches!(c.family, NFPROTO_INET | NFPROTO_IPV4 | NFPROTO_IPV6 | NFPROTO_NETDEV)
            && HOOK_ORDER.contains(&base.hook);
        if !on_path || c.is_in(NFPROTO_INET, &rs.table) {
            continue;
        }
        let table: Vec<&Chain> = kernel.iter().filter(|t| t.is_in(c.family, &c.table)).collect();
        chains.push(HookChain {
            family: tables::family_name(c.family),
            table: c.table.clone(),
            chain: c.name.clone(),
            hook: base.hook,
            priority: base.priority,
            chain_type: base.chain_type.clone(),
            policy: if base.policy_drops { "drop" } else { "accept" },
            rules: c.rules.len(),
            owner: owner(c.family, &c.table, table.iter().map(|t| t.name.as_str())),
            can_drop: base.policy_drops || reaches_drop(c, &table),
        });
    }
    for (family, save) in legacy {
        chains.extend(legacy_chains(*family, save));
    }
    chains.sort_by_key(|c| (hook_rank(c.hook), c.priority, !c.is_phantomc()));
    Coexistence { chains, notes }
}

fn hook_rank(hook: &str) -> usize {
    HOOK_ORDER.iter().position(|h| *h == hook).unwrap_or(HOOK_ORDER.len())
}

/// Who probably made a table, from its name and its chains' names.
pub fn owner<'a>(family: u8, table: &str, mut chains: impl Iterator<Item = &'a str>) -> &'static str {
    let names: Vec<&str> = chains.by_ref().collect();
    let any = |f: &dyn Fn(&str) -> bool| names.iter().any(|n| f(n));
    if any(&|n| n.starts_with("ufw-") || n.starts_with("ufw6-")) {
        "ufw"
    } else if table == "firewalld" {
        "firewalld"
    } else if any(&|n| n.starts_with("DOCKER")) {
        "docker"
    } else if table.starts_with("f2b") || any(&|n| n.starts_with("f2b-")) {
        "fail2ban"
    } else if matches!(family, NFPROTO_IPV4 | NFPROTO_IPV6)
        && matches!(table, "filter" | "nat" | "mangle" | "raw" | "security")
    {
        "iptables-nft"
    } else {
        "nft"
    }
}

/// Can a packet in base chain `c` end in a drop or reject (through jumps
/// and gotos within its table)?
pub fn reaches_drop(c: &Chain, table: &[&Chain]) -> bool {
    let mut seen = BTreeSet::new();
    let mut todo = vec![c.name.as_str()];
    while let Some(name) = todo.pop() {
        if !seen.insert(name) {
            continue;
        }
        let Some(chain) = table.iter().find(|t| t.name == name) else { continue };
        for e in chain.rules.iter().flat_map(|r| &r.exprs) {
            match e {
                Expr::Verdict(Verdict::Drop) | Expr::Reject => return true,
                Expr::Xt { target: true, name, .. } if matches!(name.as_str(), "REJECT" | "DROP") => return true,
                Expr::Verdict(Verdict::Jump(to) | Verdict::Goto(to)) => todo.push(to),
                _ => {}
            }
        }
    }
    false
}

/// The built-in chains of legacy tables that hold rules or a drop policy.
fn legacy_chains(family: u8, save: &SaveFile) -> Vec<HookChain> {
    let mut out = Vec::new();
    for t in &save.tables {
        let owner = owner(family, &t.name, t.chains.iter().map(|c| c.name.as_str()));
        for c in &t.chains {
            let Some((hook, priority)) = iptables_save::builtin_hook(&t.name, &c.name) else { continue };
            let drops = c.policy.as_deref() == Some("DROP");
            let rules = t.rules_of(&c.name).count();
            if rules == 0 && !drops {
                continue;
            }
            let can_drop = drops || legacy_reaches_drop(t, &c.name);
            out.push(HookChain {
                family: tables::family_name(family),
                table: t.name.clone(),
                chain: c.name.clone(),
                hook,
                priority,
                chain_type: if t.name == "nat" { "nat".into() } else { "filter".into() },
                policy: if drops { "drop" } else { "accept" },
                rules,
                owner: if owner == "iptables-nft" { "iptables-legacy" } else { owner },
                can_drop,
            });
        }
    }
    out
}

fn legacy_reaches_drop(t: &iptables_save::SaveTable, chain: &str) -> bool {
    let mut seen = BTreeSet::new();
    let mut todo = vec![chain.to_string()];
    while let Some(name) = todo.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        for r in t.rules_of(&name) {
            match r.value("-j").or_else(|| r.value("-g")) {
                Some("DROP" | "REJECT") => return true,
                Some(to) if t.chain(to).is_some() => todo.push(to.to_string()),
                _ => {}
            }
        }
    }
    false
}

/// The text report: a table of chains per hook, then what overrides
/// phantomc; nothing when phantomc is alone.
pub fn render(c: &Coexistence) -> String {
    let mut out = String::new();
    if c.foreign().next().is_some() {
        out.push_str(
            "other firewalls: base chains on the packet path, in the order packets meet them\n\
             (an accept ends one chain only; a drop in any chain drops the packet):\n",
        );
        let rows: Vec<[String; 8]> = c
            .chains
            .iter()
            .map(|h| {
                [
                    h.hook.to_string(),
                    h.priority.to_string(),
                    format!("{} {}", h.family, h.table),
                    h.chain.clone(),
                    h.policy.to_string(),
                    h.rules.to_string(),
                    h.owner.to_string(),
                    if h.overrides() {
                        "CAN DROP what phantomc passes".into()
                    } else if h.is_phantomc() {
                        "<- phantomc".into()
                    } else {
                        String::new()
                    },
                ]
            })
            .collect();
        let head = ["hook", "priority", "table", "chain", "policy", "rules", "owner", ""].map(String::from);
        let mut widths = [0usize; 8];
        for row in std::iter::once(&head).chain(&rows) {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.len());
            }
        }
        for row in std::iter::once(&head).chain(&rows) {
            let line: Vec<String> = row.iter().zip(widths).map(|(cell, w)| format!("{cell:w$}")).collect();
            let _ = writeln!(out, "  {}", line.join("  ").trim_end());
        }
    }
    let over: Vec<String> = c.overriding().map(|h| format!("{} ({}, {})", h.name(), h.owner, h.hook)).collect();
    if !over.is_empty() {
        let _ = writeln!(
            out,
            "warning: {} other chain{} can drop or reject traffic phantomc passes: {}\n  \
             see docs/guide/coexistence.md; `phantomc explain --live` follows one packet through all of them",
            over.len(),
            if over.len() == 1 { "" } else { "s" },
            over.join(", ")
        );
    }
    for n in &c.notes {
        let _ = writeln!(out, "note: {n}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nft::tables::{BaseHook, Rule};

    fn chain(family: u8, table: &str, name: &str, base: Option<(&'static str, i32, bool)>, exprs: Vec<Expr>) -> Chain {
        Chain {
            family,
            table: table.into(),
            name: name.into(),
            base: base.map(|(hook, priority, policy_drops)| BaseHook {
                hook,
                priority,
                chain_type: "filter".into(),
                policy_drops,
            }),
            rules: vec![Rule { handle: 1, exprs }],
        }
    }

    #[test]
    fn chains_that_can_drop_are_found_through_jumps_and_owners_named() {
        let rs = crate::ir::compile("t.pf", "pass in proto tcp to port 80\n").unwrap().ruleset;
        let kernel = vec![
            chain(
                NFPROTO_IPV4,
                "filter",
                "INPUT",
                Some(("input", 0, false)),
                vec![Expr::Verdict(Verdict::Jump("ufw-before-input".into()))],
            ),
            chain(NFPROTO_IPV4, "filter", "ufw-before-input", None, vec![Expr::Verdict(Verdict::Drop)]),
            chain(
                NFPROTO_INET,
                "only_accepts",
                "in",
                Some(("input", -10, false)),
                vec![Expr::Verdict(Verdict::Accept)],
            ),
            chain(NFPROTO_INET, "phantomc", "input", Some(("input", 0, true)), vec![]),
            chain(3, "arp_filter", "x", Some(("input", 0, true)), vec![]), // arp: not on the IP path
        ];
        let c = arrange(&rs, &kernel, &[], vec![]);
        let rows: Vec<(&str, &str, i32, &str, bool)> =
            c.chains.iter().map(|h| (h.table.as_str(), h.hook, h.priority, h.owner, h.overrides())).collect();
        assert_eq!(
            rows,
            vec![
                ("only_accepts", "input", -10, "nft", false),
                ("phantomc", "input", 0, "phantomc", false),
                ("filter", "input", 0, "ufw", true),
                ("phantomc", "forward", 0, "phantomc", false),
                ("phantomc", "output", 0, "phantomc", false),
            ]
        );
        assert!(render(&c).contains(
            "warning: 1 other chain can drop or reject traffic phantomc passes: ip filter INPUT (ufw, input)"
        ));
    }

    #[test]
    fn legacy_tables_report_built_in_chains_with_rules() {
        let save = iptables_save::parse(
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n:f2b-sshd - [0:0]\n\
             -A INPUT -p tcp --dport 22 -j f2b-sshd\n-A f2b-sshd -s 192.0.2.9/32 -j REJECT\nCOMMIT\n",
        )
        .unwrap();
        let rows: Vec<(String, &str, usize, bool)> =
            legacy_chains(NFPROTO_IPV4, &save).into_iter().map(|h| (h.chain, h.owner, h.rules, h.can_drop)).collect();
        assert_eq!(rows, vec![("INPUT".into(), "fail2ban", 1, true), ("FORWARD".into(), "fail2ban", 0, true)]);
    }
}
