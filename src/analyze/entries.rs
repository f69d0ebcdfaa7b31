//! Lints on address entries rather than rules:
//!
//! | code | severity | finding |
//! |---|---|---|
//! | `overlapping-entries` | warning | an address list (define, set, rule) holds an entry inside another entry, or an interface list (`on { eth*, eth0 }`, `on !{ ... }`) a name another pattern covers |
//! | `feed-overlaps-allow` | warning | a feed read from a local file lists addresses that a `pass` rule allows by name |
//!
//! Feeds fetched from the network are unknown offline and not checked.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ipnet::IpNet;

use crate::diag::{Diag, SourceMap, Span};
use crate::ir::eval::pattern_covers;
use crate::ir::{Action, AddrMatch, Ruleset};
use crate::policy::ast::{Item, RuleOpt, SetBody, Stmt, Value};

/// Most entries named in one finding.
const SHOWN: usize = 5;

/// Entries written inside another entry of the same list.
pub fn overlapping_entries(stmts: &[Stmt]) -> Vec<Diag> {
    let mut values: Vec<&Value> = Vec::new();
    let mut iface_values: Vec<&Value> = Vec::new();
    for stmt in stmts {
        match stmt {
            Stmt::Define { value, .. } | Stmt::Set { body: SetBody::Static(value), .. } => values.push(value),
            Stmt::Rule(r) => {
                for o in &r.opts {
                    match &o.node {
                        RuleOpt::From(h) | RuleOpt::To(h) => values.extend(h.addr.as_ref()),
                        RuleOpt::On(i) | RuleOpt::InOn(i) | RuleOpt::OutOn(i) => iface_values.push(&i.value),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    let mut out: Vec<Diag> = iface_values.into_iter().flat_map(overlapping_ifaces).collect();
    for v in values {
        let nets: Vec<(IpNet, Span)> = v
            .items
            .iter()
            .filter_map(|i| match i.node {
                Item::Net(n) => Some((n, i.span)),
                _ => None,
            })
            .collect();
        // Networks are nested or disjoint (and have no host bits), so an
        // entry's containers are its own network at shorter prefix lengths,
        // or itself written earlier: a lookup per prefix length, not a scan.
        let mut first: HashMap<IpNet, usize> = HashMap::with_capacity(nets.len());
        for (j, (n, _)) in nets.iter().enumerate() {
            first.entry(*n).or_insert(j);
        }
        for (i, (inner, ispan)) in nets.iter().enumerate() {
            // Report each entry once, against the first container.
            let wider = (0..inner.prefix_len())
                .filter_map(|len| IpNet::new(inner.addr(), len).ok().and_then(|n| first.get(&n.trunc())));
            let earlier_copy = first.get(inner).filter(|&&j| j < i);
            let outer = wider.chain(earlier_copy).min().map(|&j| &nets[j]);
            if let Some((o, ospan)) = outer {
                out.push(
                    Diag::warning(
                        "overlapping-entries",
                        *ispan,
                        format!("{inner} is already covered by {o} in this list"),
                        "covered entry",
                    )
                    .with_related(*ospan, "covers it")
                    .with_help("remove the covered entry, or narrow the wider one if that was the intent"),
                );
            }
        }
    }
    out
}

/// Interface names of one list that an earlier or wider pattern of it
/// already matches (`eth0` after `eth*`): in a negated list too, where the
/// entry excludes nothing more.
fn overlapping_ifaces(v: &Value) -> Vec<Diag> {
    let names: Vec<(&str, Span)> = v
        .items
        .iter()
        .filter_map(|i| match &i.node {
            Item::Name(n) => Some((n.as_str(), i.span)),
            _ => None,
        })
        .collect();
    let mut out = Vec::new();
    for (i, (inner, ispan)) in names.iter().enumerate() {
        let covering = names
            .iter()
            .enumerate()
            .find(|(j, (o, _))| *j != i && pattern_covers(o, inner) && (!pattern_covers(inner, o) || *j < i));
        if let Some((_, (o, ospan))) = covering {
            out.push(
                Diag::warning(
                    "overlapping-entries",
                    *ispan,
                    format!("interface {inner} is already matched by {o} in this list"),
                    "covered entry",
                )
                .with_related(*ospan, "covers it")
                .with_help("remove the covered entry, or narrow the wider pattern if that was the intent"),
            );
        }
    }
    out
}

/// Networks each `pass` rule allows by name (literal networks and static sets).
fn allowed(rs: &Ruleset) -> Vec<(IpNet, &crate::ir::Rule)> {
    let mut out = Vec::new();
    for rule in rs.chains.iter().flat_map(|c| &c.rules).filter(|r| r.action == Action::Pass) {
        for m in [&rule.matches.src, &rule.matches.dst] {
            let nets = match m {
                AddrMatch::Nets { negated: false, nets } => nets.clone(),
                AddrMatch::Set { negated: false, set } => rs.set(set).and_then(|s| s.kind.loaded()).unwrap_or_default(),
                _ => Vec::new(),
            };
            out.extend(nets.into_iter().map(|n| (n, rule)));
        }
    }
    out
}

/// Where a feed's `source` is a local file, its path (relative to the policy file).
fn local_source(source: &str, policy_file: &Path) -> Option<PathBuf> {
    let path = source.strip_prefix("file://").unwrap_or(source);
    if path.contains("://") {
        return None;
    }
    Some(policy_file.parent().unwrap_or(Path::new(".")).join(path))
}

/// Addresses of a plain feed file: one per line, `#` comments.
fn feed_entries(text: &str) -> Vec<IpNet> {
    text.lines()
        .filter_map(|l| l.split('#').next()?.split_whitespace().next())
        .filter_map(|w| w.parse::<IpNet>().ok().or_else(|| w.parse::<std::net::IpAddr>().ok().map(IpNet::from)))
        .collect()
}

/// Entries of local feeds that overlap networks `pass` rules allow.
pub fn feed_overlaps(rs: &Ruleset, sources: &SourceMap) -> Vec<Diag> {
    let allows = allowed(rs);
    let mut out = Vec::new();
    for feed in &rs.feeds {
        let plain = feed.options.format.is_none_or(|f| f == crate::ir::feed_options::Format::Plain);
        let Some(path) = feed
            .options
            .source
            .as_ref()
            .filter(|_| plain)
            .and_then(|s| local_source(s, &sources.file(feed.origin.span.file).path))
        else {
            continue;
        };
        let Ok(text) = std::fs::read_to_string(&path) else { continue };
        let mut hits: Vec<(IpNet, IpNet, &crate::ir::Rule)> = Vec::new();
        for entry in feed_entries(&text) {
            if let Some((net, rule)) = allows.iter().find(|(n, _)| n.contains(&entry) || entry.contains(n)) {
                hits.push((entry, *net, rule));
            }
        }
        if hits.is_empty() {
            continue;
        }
        let listed: Vec<String> =
            hits.iter().take(SHOWN).map(|(e, n, r)| format!("{e} (allowed as {n} by {})", r.origin.id)).collect();
        let more = if hits.len() > SHOWN { format!(" and {} more", hits.len() - SHOWN) } else { String::new() };
        let mut d = Diag::warning(
            "feed-overlaps-allow",
            feed.origin.span,
            format!("feed `{}` lists {} addresses that pass rules allow: {}{more}", feed.name, hits.len(), listed.join(", ")),
            "feed declared here",
        )
        .with_help("whichever rule comes first wins for these addresses; remove them from the feed or make the intent explicit");
        let mut seen = std::collections::BTreeSet::new();
        for (_, _, r) in &hits {
            if seen.insert(r.origin.stmt) {
                d = d.with_related(r.origin.span, "allows some feed entries");
            }
        }
        out.push(d);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_entries_in_one_list_are_reported_once() {
        let p = crate::policy::load_str("t.pf", Path::new("t.pf"), "define a = { 10.0.0.0/8, 10.1.0.0/16, 192.0.2.1, 10.1.2.3 }\npass in from { 2001:db8::/32, 2001:db8:1::1 }\npass in from { 10.0.0.0/9, 10.128.0.0/9 }\n".into()).expect("parses");
        let d = overlapping_entries(&p.stmts);
        let msgs: Vec<&str> = d.iter().map(|x| x.message.as_str()).collect();
        assert_eq!(
            msgs,
            vec![
                "10.1.0.0/16 is already covered by 10.0.0.0/8 in this list",
                "10.1.2.3/32 is already covered by 10.0.0.0/8 in this list",
                "2001:db8:1::1/128 is already covered by 2001:db8::/32 in this list",
            ]
        );
    }

    #[test]
    fn local_feed_entries_that_pass_rules_allow() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("bad.txt"), "# bad hosts\n203.0.113.9\n10.10.0.0/28  # oops\n198.51.100.0/24\n")
            .expect("write");
        let policy = dir.path().join("p.pf");
        std::fs::write(&policy, "feed bad { source \"bad.txt\"; format plain }\nblock in from <bad>\npass in proto tcp from 10.10.0.0/24 to port 22\npass in from 198.51.100.7\n").expect("write");
        let c = crate::ir::compile_file(&policy).expect("compiles");
        let d = feed_overlaps(&c.ruleset, &c.sources);
        assert_eq!(d.len(), 1);
        assert_eq!(
            d[0].message,
            "feed `bad` lists 2 addresses that pass rules allow: 10.10.0.0/28 (allowed as 10.10.0.0/24 by p.pf:3), 198.51.100.0/24 (allowed as 198.51.100.7/32 by p.pf:4)"
        );
        assert_eq!(d[0].related.len(), 2);
    }
}
