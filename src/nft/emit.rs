//! IR -> nftables objects (the `nftables` crate's model of nft's JSON schema).
//!
//! This is the one translation of the IR into nft; the JSON output is its
//! serialization and the nft script is printed from it by [`super::script`],
//! so the two formats cannot drift apart.

use std::collections::{BTreeMap, HashSet};

use ipnet::IpNet;
use nftables::expr::{self, Expression, Meta, MetaKey, NamedExpression, Payload, PayloadField, SetItem};
use nftables::schema::{self, NfCmd, NfListObject, NfObject, Nftables, SetFlag, SetType, SetTypeValue};
use nftables::stmt::{self, Counter, Match, Operator, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook, RejectCode};

use crate::ir::feed_layout::{self, KernelSet};
use crate::ir::names::{self, ICMP, ICMPV6, TCP};
use crate::ir::optimize::{self, MergeField, Merged, Values};
use crate::ir::{
    Action, AddrMatch, DefaultPolicy, Family, Flowtable, Hook, Limit, Log, MarkRule, Match as IrMatch, NatAction,
    PortMatch, RejectWith, Rule, Ruleset, SetKind, SetMark,
};

/// Elements that are not part of the policy text: feed contents and
/// run-time entries (with their remaining timeout) carried across a reload.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Elements {
    pub by_set: BTreeMap<String, Vec<SetElem>>,
}

impl Elements {
    /// These elements without the contents of `rs`'s feed sets.
    pub fn without_feeds(&self, rs: &Ruleset) -> Elements {
        let is_feed = |name: &str| rs.sets.iter().any(|s| s.nft_name == name && matches!(s.kind, SetKind::Feed { .. }));
        Elements {
            by_set: self
                .by_set
                .iter()
                .filter(|(name, _)| !is_feed(name))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }

    /// The networks of every set, as [`crate::ir::eval`] takes them.
    pub fn contents(&self) -> crate::ir::eval::SetContents {
        self.by_set.iter().map(|(k, v)| (k.clone(), v.iter().map(|e| e.net).collect())).collect()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SetElem {
    pub net: IpNet,
    /// Seconds left for a run-time entry; `None` never expires.
    pub timeout: Option<u32>,
    /// The element's comment: a block entry's `--reason`.
    pub comment: Option<String>,
}

impl SetElem {
    pub fn expr(&self) -> Expression<'static> {
        elem_expr(self.net, self.timeout, self.comment.as_deref())
    }
}

/// A set element: a bare address or prefix, or an `elem` carrying a
/// timeout and/or comment.
pub fn elem_expr(net: IpNet, timeout: Option<u32>, comment: Option<&str>) -> Expression<'static> {
    if timeout.is_none() && comment.is_none() {
        return net_expr(net);
    }
    Expression::Named(NamedExpression::Elem(expr::Elem {
        val: Box::new(net_expr(net)),
        timeout,
        expires: None,
        comment: comment.map(|c| c.to_string().into()),
        counter: None,
    }))
}

/// One chain with its rules, in order.
#[derive(Clone, Debug)]
pub struct NftChain {
    pub chain: schema::Chain<'static>,
    pub rules: Vec<schema::Rule<'static>>,
}

/// phantomc's whole table as nft objects.
#[derive(Clone, Debug)]
pub struct NftTable {
    pub name: String,
    pub sets: Vec<schema::Set<'static>>,
    /// Verdict maps of merged lines (`map` is written `verdict` in the
    /// JSON: the crate has no such type).
    pub maps: Vec<schema::Map<'static>>,
    /// Named counters (`counter "name"`), sorted, once each.
    pub counters: Vec<String>,
    /// `flowtable NAME { devices ... }`, in policy order.
    pub flowtables: Vec<schema::FlowTable<'static>>,
    pub chains: Vec<NftChain>,
}

impl NftTable {
    pub fn rule_count(&self) -> usize {
        self.chains.iter().map(|c| c.rules.len()).sum()
    }

    /// The atomic replacement: create the table if missing, delete it, and
    /// create it again with everything in it — one transaction, so either
    /// all of it is live or none of it is. Takes the table, whose rules and
    /// elements move into the batch uncopied.
    pub fn replace_batch(self) -> Nftables<'static> {
        let mut objs = vec![
            add(NfListObject::Table(table(&self.name))),
            NfObject::CmdObject(NfCmd::Delete(NfListObject::Table(table(&self.name)))),
        ];
        objs.extend(self.create_objects());
        Nftables { objects: objs.into() }
    }

    /// Creation of the table and everything in it (no replacement).
    pub fn create_objects(self) -> Vec<NfObject<'static>> {
        let NftTable { name, sets, maps, counters, flowtables, chains } = self;
        let mut objs = vec![add(NfListObject::Table(table(&name)))];
        objs.extend(sets.into_iter().map(|s| add(NfListObject::Set(Box::new(s)))));
        objs.extend(counters.into_iter().map(|c| {
            add(NfListObject::Counter(schema::Counter {
                family: NfFamily::INet,
                table: name.clone().into(),
                name: c.into(),
                handle: None,
                packets: None,
                bytes: None,
            }))
        }));
        objs.extend(flowtables.into_iter().map(|f| add(NfListObject::FlowTable(f))));
        let (chains, rules): (Vec<_>, Vec<_>) = chains.into_iter().map(|c| (c.chain, c.rules)).unzip();
        objs.extend(chains.into_iter().map(|c| add(NfListObject::Chain(c))));
        // A verdict map's elements name chains, which exist by now.
        objs.extend(maps.into_iter().map(|m| add(NfListObject::Map(Box::new(m)))));
        objs.extend(rules.into_iter().flatten().map(|r| add(NfListObject::Rule(r))));
        objs
    }
}

fn add(obj: NfListObject<'static>) -> NfObject<'static> {
    NfObject::CmdObject(NfCmd::Add(obj))
}

pub fn table(name: &str) -> schema::Table<'static> {
    schema::Table { family: NfFamily::INet, name: name.to_string().into(), handle: None }
}

/// Translates a ruleset, optimized (see [`crate::ir::optimize`]); `extra`
/// supplies feed and run-time set elements.
pub fn build(rs: &Ruleset, extra: &Elements) -> NftTable {
    build_with(&optimize::optimize(rs), extra)
}

/// Translates a ruleset as it is (`compile --no-optimize`).
pub fn build_with(rs: &Ruleset, extra: &Elements) -> NftTable {
    let t = rs.table.as_str();
    let mut sets: Vec<schema::Set<'static>> =
        rs.sets.iter().flat_map(|s| sets_of(rs, s, extra.by_set.get(&s.nft_name))).collect();
    sets.extend(
        optimize::merged_rules(rs).filter(|(_, _, m)| !m.dispatch).map(|(_, r, m)| merged_set(t, m, r.counter)),
    );
    let maps = optimize::merged_rules(rs).filter(|(_, _, m)| m.dispatch).map(|(_, _, m)| verdict_map(t, m)).collect();
    let mut chains = Vec::new();
    // Early rules sit first in the input and forward chains of the IR (the
    // output chain for `out` ones); nft runs them once, in prerouting (or
    // output) at raw priority, before conntrack.
    // `match` rules set marks there first, so every later rule sees them.
    for (name, hook, from) in
        [(EARLY_CHAIN, NfHook::Prerouting, Hook::Input), (EARLY_OUT_CHAIN, NfHook::Output, Hook::Output)]
    {
        let marks = rs.marks.iter().filter(|mr| mr.hook == from && !mr.uses_ct()).map(|mr| mark_rule(t, name, mr));
        let early: Vec<schema::Rule<'static>> =
            marks.chain(rs.chain(from).rules.iter().filter(|r| r.early).flat_map(|r| early_rule(t, name, r))).collect();
        if !early.is_empty() {
            chains.push(NftChain {
                chain: base_chain(t, name, NfChainType::Filter, hook, RAW_PRIORITY, Some(NfChainPolicy::Accept)),
                rules: early,
            });
        }
    }
    // `match` rules that use the connection mark need conntrack: they run
    // after it, still before routing (a route chain on output reroutes a
    // packet whose mark they change) and before the filter chains.
    for (name, kind, hook, from) in [
        (CONNMARK_CHAIN, NfChainType::Filter, NfHook::Prerouting, Hook::Input),
        (CONNMARK_OUT_CHAIN, NfChainType::Route, NfHook::Output, Hook::Output),
    ] {
        let rules: Vec<schema::Rule<'static>> =
            rs.marks.iter().filter(|mr| mr.hook == from && mr.uses_ct()).map(|mr| mark_rule(t, name, mr)).collect();
        if !rules.is_empty() {
            chains.push(NftChain {
                chain: base_chain(t, name, kind, hook, MANGLE_PRIORITY, Some(NfChainPolicy::Accept)),
                rules,
            });
        }
    }
    for ch in &rs.chains {
        // An early pass (`notrack`) passes again in the filter chain, where it counts and logs.
        let mut rules: Vec<schema::Rule<'static>> =
            ch.rules.iter().filter(|r| !r.early || r.notrack).flat_map(|r| rule(t, ch.hook.name(), r)).collect();
        rules.extend(default_rules(t, ch.hook, &ch.policy));
        let policy = if ch.policy.action == Action::Pass { NfChainPolicy::Accept } else { NfChainPolicy::Drop };
        chains.push(NftChain {
            chain: base_chain(t, ch.hook.name(), NfChainType::Filter, hook_of(ch.hook), ch.priority, Some(policy)),
            rules,
        });
    }
    chains.extend(dispatch_chains(t, rs));
    for (name, hook, prio) in
        [("nat_prerouting", NfHook::Prerouting, -100), ("nat_postrouting", NfHook::Postrouting, 100)]
    {
        let rules: Vec<_> = rs
            .nat
            .iter()
            .filter(|n| n.chain_name() == name)
            .map(|n| {
                let mut expr = matches(&n.matches, None);
                expr.push(Statement::Counter(Counter::Anonymous(None)));
                expr.push(nat_stmt(&n.action));
                schema::Rule { expr: expr.into(), comment: Some(n.origin.id.clone().into()), ..rule_base(t, name) }
            })
            .collect();
        if !rules.is_empty() {
            chains.push(NftChain {
                chain: base_chain(t, name, NfChainType::NAT, hook, prio, Some(NfChainPolicy::Accept)),
                rules,
            });
        }
    }
    let counters: std::collections::BTreeSet<String> =
        rs.chains.iter().flat_map(|c| &c.rules).flat_map(Rule::lines).filter_map(|r| r.counter_name.clone()).collect();
    let feeds: BTreeMap<&str, Family> = rs
        .sets
        .iter()
        .filter(|s| matches!(s.kind, SetKind::Feed { .. }))
        .map(|s| (s.nft_name.as_str(), s.family))
        .collect();
    for c in &mut chains {
        c.rules = std::mem::take(&mut c.rules).into_iter().flat_map(|r| feed_lookups(r, &feeds)).collect();
    }
    let flowtables = rs.flowtables.iter().map(|f| flowtable(t, f)).collect();
    NftTable { name: rs.table.clone(), sets, maps, counters: counters.into_iter().collect(), flowtables, chains }
}

/// A flowtable on the ingress hook of its devices, at priority 0 (`filter`).
fn flowtable(t: &str, f: &Flowtable) -> schema::FlowTable<'static> {
    schema::FlowTable {
        family: NfFamily::INet,
        table: t.to_string().into(),
        name: f.name.clone().into(),
        handle: None,
        hook: Some(NfHook::Ingress),
        prio: Some(0),
        dev: Some(f.devices.iter().map(|d| d.clone().into()).collect()),
    }
}

/// The chain of each line of a verdict map: the line's own rule(s).
fn dispatch_chains(t: &str, rs: &Ruleset) -> Vec<NftChain> {
    let mut out = Vec::new();
    for (_, _, m) in optimize::merged_rules(rs).filter(|(_, _, m)| m.dispatch) {
        for (k, part) in m.parts.iter().enumerate() {
            let name = m.chain(k);
            let chain = schema::Chain {
                family: NfFamily::INet,
                table: t.to_string().into(),
                name: name.clone().into(),
                ..Default::default()
            };
            out.push(NftChain { chain, rules: rule(t, &name, &part.rule) });
        }
    }
    out
}

/// The prerouting chain of `early` rules, the output chain of `out ... early
/// notrack` rules, and their priority (nft's `raw`, before conntrack at -200).
pub const EARLY_CHAIN: &str = "early";
pub const EARLY_OUT_CHAIN: &str = "early_out";
const RAW_PRIORITY: i32 = -300;
/// The chains of `match` rules that use the connection mark, and their
/// priority (nft's `mangle`: after conntrack at -200, before routing).
pub const CONNMARK_CHAIN: &str = "connmark";
pub const CONNMARK_OUT_CHAIN: &str = "connmark_out";
const MANGLE_PRIORITY: i32 = -150;

/// The nft chain a `match` rule runs in.
pub fn match_chain(mr: &MarkRule) -> &'static str {
    match (mr.hook == Hook::Output, mr.uses_ct()) {
        (false, false) => EARLY_CHAIN,
        (true, false) => EARLY_OUT_CHAIN,
        (false, true) => CONNMARK_CHAIN,
        (true, true) => CONNMARK_OUT_CHAIN,
    }
}

fn hook_of(h: Hook) -> NfHook {
    match h {
        Hook::Input => NfHook::Input,
        Hook::Forward => NfHook::Forward,
        Hook::Output => NfHook::Output,
    }
}

fn base_chain(
    t: &str,
    name: &str,
    kind: NfChainType,
    hook: NfHook,
    prio: i32,
    policy: Option<NfChainPolicy>,
) -> schema::Chain<'static> {
    schema::Chain {
        family: NfFamily::INet,
        table: t.to_string().into(),
        name: name.to_string().into(),
        _type: Some(kind),
        hook: Some(hook),
        prio: Some(prio),
        policy,
        ..Default::default()
    }
}

fn rule_base(t: &str, chain: &str) -> schema::Rule<'static> {
    schema::Rule {
        family: NfFamily::INet,
        table: t.to_string().into(),
        chain: chain.to_string().into(),
        ..Default::default()
    }
}

/// A rule that looks up feed sets, as rules over their kernel sets (see
/// [`feed_layout`]): a negated lookup must miss every kernel set (one rule),
/// a positive one hit one of them (a rule per kernel set; the sets are
/// disjoint, so at most one of these rules matches a packet); the interval
/// set's rule looks up its prefilter first.
fn feed_lookups(rule: schema::Rule<'static>, feeds: &BTreeMap<&str, Family>) -> Vec<schema::Rule<'static>> {
    let feed_of = |st: &Statement<'static>| match st {
        Statement::Match(Match { right: Expression::String(r), op, .. }) => {
            r.strip_prefix('@').and_then(|n| feeds.get_key_value(n)).map(|(n, f)| (n.to_string(), *f, *op))
        }
        _ => None,
    };
    let lookup = |st: &Statement<'static>, k: &KernelSet, op: Operator| {
        let Statement::Match(Match { left, .. }) = st else { unreachable!("a feed lookup is a match") };
        let left = match k.mask() {
            Some(mask) => Expression::BinaryOperation(Box::new(expr::BinaryOperation::AND(
                left.clone(),
                Expression::String(addr_text(mask.netmask()).into()),
            ))),
            None => left.clone(),
        };
        m(left, Expression::String(format!("@{}", k.name).into()), op)
    };
    let mut variants: Vec<Vec<Statement<'static>>> = vec![Vec::new()];
    for st in rule.expr.iter() {
        match feed_of(st) {
            None => variants.iter_mut().for_each(|v| v.push(st.clone())),
            Some((set, family, op)) if op == Operator::NEQ => {
                let sets = feed_layout::kernel_sets(&set, family);
                let misses: Vec<_> = sets.iter().filter(|k| k.holds_entries()).map(|k| lookup(st, k, op)).collect();
                variants.iter_mut().for_each(|v| v.extend(misses.iter().cloned()));
            }
            Some((set, family, op)) => {
                let hits: Vec<Vec<_>> = feed_layout::rule_lookups(&set, family)
                    .iter()
                    .map(|ks| ks.iter().map(|k| lookup(st, k, op)).collect())
                    .collect();
                variants = variants
                    .iter()
                    .flat_map(|v| hits.iter().map(move |h| v.iter().chain(h).cloned().collect()))
                    .collect();
            }
        }
    }
    if variants.len() == 1 && !rule.expr.iter().any(|st| feed_of(st).is_some()) {
        return vec![rule];
    }
    variants.into_iter().map(|expr| schema::Rule { expr: expr.into(), ..rule.clone() }).collect()
}

/// The kernel sets of a policy set: a feed set is several (see [`feed_layout`]).
fn sets_of(rs: &Ruleset, s: &crate::ir::SetDef, extra: Option<&Vec<SetElem>>) -> Vec<schema::Set<'static>> {
    if !matches!(s.kind, SetKind::Feed { .. }) {
        return vec![set(rs, s, extra)];
    }
    let nets: Vec<IpNet> = extra.into_iter().flatten().map(|e| e.net).collect();
    feed_layout::split(&s.nft_name, s.family, &nets)
        .into_iter()
        .map(|(k, nets)| schema::Set {
            name: k.name.clone().into(),
            flags: k.is_interval().then(|| HashSet::from([SetFlag::Interval])),
            elem: (!nets.is_empty()).then(|| nets.iter().map(|&n| feed_elem(&k, n)).collect::<Vec<_>>().into()),
            ..set(rs, s, None)
        })
        .collect()
}

/// An element of a feed's kernel set: a network in the interval set, its
/// first address in a hash set (which the lookup masks to its length).
pub fn feed_elem(k: &KernelSet, n: IpNet) -> Expression<'static> {
    match k.is_interval() {
        false => Expression::String(addr_text(n.network()).into()),
        true => net_expr(n),
    }
}

fn set(rs: &Ruleset, s: &crate::ir::SetDef, extra: Option<&Vec<SetElem>>) -> schema::Set<'static> {
    let mut flags = HashSet::from([SetFlag::Interval]);
    let mut timeout = None;
    let mut elems: Vec<Expression<'static>> = match &s.kind {
        SetKind::Static { elements, timed } => {
            if !timed.is_empty() {
                flags.insert(SetFlag::Timeout);
            }
            let timed = timed.iter().map(|t| (t.net, Some(u32::try_from(t.timeout).unwrap_or(u32::MAX))));
            let mut all: Vec<(IpNet, Option<u32>)> = elements.iter().map(|n| (*n, None)).chain(timed).collect();
            all.sort(); // in address order, as nft lists them
            all.into_iter().map(|(n, t)| elem_expr(n, t, None)).collect()
        }
        SetKind::Dynamic { timeout: t } => {
            flags.insert(SetFlag::Timeout);
            timeout = t.map(|t| u32::try_from(t).unwrap_or(u32::MAX));
            Vec::new()
        }
        SetKind::Feed { .. } => Vec::new(),
    };
    if let Some(extra) = extra {
        elems.extend(extra.iter().map(SetElem::expr));
    }
    schema::Set {
        family: NfFamily::INet,
        table: rs.table.clone().into(),
        name: s.nft_name.clone().into(),
        set_type: SetTypeValue::Single(if s.family == Family::V4 { SetType::Ipv4Addr } else { SetType::Ipv6Addr }),
        flags: Some(flags),
        elem: (!elems.is_empty()).then(|| elems.into()),
        timeout,
        ..Default::default()
    }
}

pub fn net_expr(n: IpNet) -> Expression<'static> {
    if n.prefix_len() == n.max_prefix_len() {
        Expression::String(addr_text(n.addr()).into())
    } else {
        Expression::Named(NamedExpression::Prefix(expr::Prefix {
            addr: Box::new(Expression::String(addr_text(n.network()).into())),
            len: u32::from(n.prefix_len()),
        }))
    }
}

/// An address as `Display` writes it; IPv4 without the formatting
/// machinery (a big policy writes tens of thousands of them).
fn addr_text(a: std::net::IpAddr) -> String {
    let std::net::IpAddr::V4(v4) = a else { return a.to_string() };
    let mut out = String::with_capacity(15);
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        if octet >= 100 {
            out.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            out.push(char::from(b'0' + octet / 10 % 10));
        }
        out.push(char::from(b'0' + octet % 10));
    }
    out
}

/// The set a merged rule looks up: each element carries its policy line's
/// id as comment and, if the rules counted, a counter of its own (the rule
/// itself then has none, so `hits` sums each line exactly once). A part
/// with several values per field has an element per combination.
fn merged_set(t: &str, m: &Merged, counter: bool) -> schema::Set<'static> {
    let elems = merged_keys(m)
        .into_iter()
        .map(|(k, val)| {
            Expression::Named(NamedExpression::Elem(expr::Elem {
                val: Box::new(val),
                timeout: None,
                expires: None,
                comment: Some(m.parts[k].origin.id.clone().into()),
                counter: counter.then_some(Counter::Anonymous(None)),
            }))
        })
        .collect::<Vec<_>>();
    let (set_type, flags) = merged_type(m);
    schema::Set {
        family: NfFamily::INet,
        table: t.to_string().into(),
        name: m.set.clone().into(),
        set_type,
        flags,
        elem: Some(elems.into()),
        ..Default::default()
    }
}

/// The verdict map of merged lines that keep their own rules: each part's
/// elements jump to the part's chain. The parts are disjoint, so no two
/// elements overlap.
fn verdict_map(t: &str, m: &Merged) -> schema::Map<'static> {
    let elems = merged_keys(m)
        .into_iter()
        .map(|(k, key)| {
            let jump = expr::Verdict::Jump(stmt::JumpTarget { target: m.chain(k).into() });
            Expression::List(vec![key, Expression::Verdict(jump)])
        })
        .collect::<Vec<_>>();
    let (set_type, flags) = merged_type(m);
    schema::Map {
        family: NfFamily::INet,
        table: t.to_string().into(),
        name: m.set.clone().into(),
        handle: None,
        set_type,
        // Written `verdict` in the JSON (see `json::VerdictMap`).
        map: SetTypeValue::Single(SetType::Mark),
        policy: None,
        flags,
        elem: Some(elems.into()),
        timeout: None,
        gc_interval: None,
        size: None,
        comment: None,
    }
}

/// Every element key of a merged rule's set, with the index of its part.
fn merged_keys(m: &Merged) -> Vec<(usize, Expression<'static>)> {
    let items = |v: &Values| -> Vec<Expression<'static>> {
        match v {
            Values::Nets(nets) => nets.iter().map(|n| net_expr(*n)).collect(),
            Values::Ports(ranges) => ranges.iter().map(|r| port_expr(*r)).collect(),
            Values::Interfaces(names) => names.iter().map(|n| Expression::String(n.clone().into())).collect(),
        }
    };
    let mut out = Vec::with_capacity(m.parts.len());
    for (i, p) in m.parts.iter().enumerate() {
        if let [one] = p.values.as_slice() {
            out.extend(items(one).into_iter().map(|x| (i, x)));
            continue;
        }
        let mut keys: Vec<Vec<Expression<'static>>> = vec![Vec::with_capacity(p.values.len())];
        for v in &p.values {
            let values = items(v);
            keys = keys
                .into_iter()
                .flat_map(|k| {
                    values.iter().map(move |x| {
                        let mut k = k.clone();
                        k.push(x.clone());
                        k
                    })
                })
                .collect();
        }
        out.extend(keys.into_iter().map(|k| (i, Expression::Named(NamedExpression::Concat(k)))));
    }
    out
}

/// The key type of a merged rule's set and its flags (intervals unless
/// every field is an interface name).
fn merged_type(m: &Merged) -> (SetTypeValue<'static>, Option<HashSet<SetFlag>>) {
    let types: Vec<SetType> = m
        .fields
        .iter()
        .map(|f| match (f, m.family) {
            (MergeField::Source | MergeField::Destination, Some(Family::V6)) => SetType::Ipv6Addr,
            (MergeField::Source | MergeField::Destination, _) => SetType::Ipv4Addr,
            (MergeField::SourcePort | MergeField::DestinationPort, _) => SetType::InetService,
            (MergeField::InputInterface | MergeField::OutputInterface, _) => SetType::Ifname,
        })
        .collect();
    let interval = types.iter().any(|t| *t != SetType::Ifname);
    let set_type = match types.as_slice() {
        [one] => SetTypeValue::Single(*one),
        _ => SetTypeValue::Concatenated(types.into()),
    };
    (set_type, interval.then(|| HashSet::from([SetFlag::Interval])))
}

/// The nft rules of one IR rule: itself, after a log rule when its log is
/// rate-limited (a `limit` in the rule itself would stop the verdict too).
/// A merged rule whose lines keep their own rules (a verdict map) is only
/// its shared matches and the map lookup, which must come last: its
/// verdict ends the rule.
fn rule(t: &str, chain: &str, r: &Rule) -> Vec<schema::Rule<'static>> {
    let mut expr = matches(&r.matches, r.merged.as_ref());
    if let Some(m) = r.merged.as_ref().filter(|m| m.dispatch) {
        expr.push(Statement::VerdictMap(stmt::VerdictMap {
            key: merged_key(&r.matches, m),
            data: Expression::String(format!("@{}", m.set).into()),
        }));
        let comment = format!("{} +{} dispatched", r.comment(), m.parts.len() - 1);
        return vec![schema::Rule { expr: expr.into(), comment: Some(comment.into()), ..rule_base(t, chain) }];
    }
    let log_rule = limited_log(&expr, r.log.as_ref()).map(|expr| schema::Rule {
        expr: expr.into(),
        comment: Some(r.comment().into()),
        ..rule_base(t, chain)
    });
    if let Some(l) = &r.limit {
        match &l.per_source {
            Some(meter) => expr.push(Statement::Meter(stmt::Meter {
                name: meter.clone().into(),
                key: addr_field(r.matches.family.unwrap_or(Family::V4), "saddr"),
                stmt: Box::new(Statement::Limit(limit_stmt(l))),
            })),
            None => expr.push(Statement::Limit(limit_stmt(l))),
        }
    }
    if let Some(bytes) = r.quota {
        expr.push(Statement::Quota(stmt::QuotaOrQuotaRef::Quota(quota_stmt(bytes))));
    }
    expr.extend(r.set_marks.iter().map(|s| set_mark(*s)));
    // `flow add @NAME`: nft offloads the connection once it is established.
    expr.extend(
        r.offload
            .as_ref()
            .map(|f| Statement::Flow(stmt::Flow { op: stmt::SetOp::Add, flowtable: format!("@{f}").into() })),
    );
    // A named counter counts for the rule (the optimizer never merges such a rule).
    expr.extend(r.counter_name.as_ref().map(|n| Statement::Counter(Counter::Named(n.clone().into()))));
    let counter = r.counter && r.merged.is_none() && r.counter_name.is_none();
    expr.extend(tail(counter, r.log.as_ref(), r.action, r.matches.proto, r.reject));
    let comment = match &r.merged {
        // Starts with the first line's id, like every rule's comment.
        Some(m) => format!("{} +{} merged", r.comment(), m.parts.len() - 1),
        None => r.comment(),
    };
    let main = schema::Rule { expr: expr.into(), comment: Some(comment.into()), ..rule_base(t, chain) };
    log_rule.into_iter().chain([main]).collect()
}

/// An early rule in the raw-priority chain: a block drops there; a
/// `notrack` pass keeps the packet from conntrack and ends the early chain
/// (its counter, log and verdict are in the input or output chain).
fn early_rule(t: &str, chain: &str, r: &Rule) -> Vec<schema::Rule<'static>> {
    if !r.notrack {
        return rule(t, chain, r);
    }
    let mut expr = matches(&r.matches, None);
    if chain == EARLY_CHAIN {
        // Before routing: only packets for this host (the input chain passes them).
        let fib = expr::Fib { result: expr::FibResult::Type, flags: HashSet::from([expr::FibFlag::Daddr]) };
        expr.insert(
            0,
            m(Expression::Named(NamedExpression::Fib(fib)), Expression::String("local".into()), Operator::EQ),
        );
    }
    expr.extend([Statement::Notrack, Statement::Accept(None)]);
    vec![schema::Rule { expr: expr.into(), comment: Some(r.comment().into()), ..rule_base(t, chain) }]
}

/// A `match` rule: counts and sets the mark, no verdict.
fn mark_rule(t: &str, chain: &str, mr: &MarkRule) -> schema::Rule<'static> {
    let mut expr = matches(&mr.matches, None);
    if mr.counter {
        expr.push(Statement::Counter(Counter::Anonymous(None)));
    }
    expr.extend(mr.sets.iter().map(|s| set_mark(*s)));
    schema::Rule { expr: expr.into(), comment: Some(mr.origin.id.clone().into()), ..rule_base(t, chain) }
}

/// `meta mark set ...` or `ct mark set ...`.
fn set_mark(s: SetMark) -> Statement<'static> {
    let (key, value) = match s {
        SetMark::Mark(k) => (meta(MetaKey::Mark), Expression::Number(k)),
        SetMark::CtMark(k) => (ct("mark"), Expression::Number(k)),
        SetMark::MarkFromCtMark => (meta(MetaKey::Mark), ct("mark")),
        SetMark::CtMarkFromMark => (ct("mark"), meta(MetaKey::Mark)),
    };
    Statement::Mangle(stmt::Mangle { key, value })
}

/// `ct KEY` of the packet's connection.
fn ct(key: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::CT(expr::CT { key: key.into(), family: None, dir: None }))
}

/// `quota until N UNIT`: the largest unit nft takes (up to mbytes) that
/// states `bytes` exactly in 32 bits (lowering refuses any other quota).
fn quota_stmt(bytes: u64) -> stmt::Quota<'static> {
    let (val, unit) = [(20, "mbytes"), (10, "kbytes"), (0, "bytes")]
        .into_iter()
        .map(|(shift, unit)| (bytes >> shift, bytes & ((1u64 << shift) - 1), unit))
        .find(|(val, rest, _)| *rest == 0 && u32::try_from(*val).is_ok())
        .map_or((u32::MAX, "mbytes"), |(val, _, unit)| (val as u32, unit));
    stmt::Quota { val, val_unit: unit.into(), used: None, used_unit: None, inv: None }
}

fn limit_stmt(l: &Limit) -> stmt::Limit<'static> {
    stmt::Limit {
        rate: u32::try_from(l.rate).unwrap_or(u32::MAX),
        rate_unit: None,
        per: Some(l.unit.name().into()),
        burst: l.burst.map(|b| u32::try_from(b).unwrap_or(u32::MAX)),
        burst_unit: None,
        inv: None,
    }
}

/// `matches limit log`, without a verdict, for a rate-limited log; `None` otherwise.
fn limited_log(matches: &[Statement<'static>], log: Option<&Log>) -> Option<Vec<Statement<'static>>> {
    let log = log?;
    let limit = Statement::Limit(limit_stmt(log.limit.as_ref()?));
    let mut out = matches.to_vec();
    out.push(limit);
    out.push(log_stmt(log));
    Some(out)
}

fn log_stmt(log: &Log) -> Statement<'static> {
    let mut l = stmt::Log::new(log.group.map(u32::from));
    l.prefix = Some(log.prefix.clone().into());
    Statement::Log(Some(l))
}

/// Counter, log and verdict: the end of every filter rule. A rate-limited
/// log has its own rule before this one.
fn tail(
    counter: bool,
    log: Option<&Log>,
    action: Action,
    proto: Option<u8>,
    reject: Option<RejectWith>,
) -> Vec<Statement<'static>> {
    let mut out = Vec::new();
    if counter {
        out.push(Statement::Counter(Counter::Anonymous(None)));
    }
    if let Some(log) = log.filter(|l| l.limit.is_none()) {
        out.push(log_stmt(log));
    }
    out.push(match action {
        Action::Pass => Statement::Accept(None),
        Action::Block => Statement::Drop(None),
        Action::Reject if reject.is_some() => Statement::Reject(reject.map(reject_stmt)),
        Action::Reject if proto == Some(TCP) => {
            Statement::Reject(Some(stmt::Reject::new(Some(stmt::RejectType::TCPReset), None)))
        }
        Action::Reject => Statement::Reject(None),
    });
    out
}

fn reject_stmt(how: RejectWith) -> stmt::Reject {
    let code = |name: &str| {
        Some(match name {
            "admin-prohibited" => RejectCode::AdminProhibited,
            "port-unreachable" => RejectCode::PortUnreach,
            "no-route" => RejectCode::NoRoute,
            "host-unreachable" => RejectCode::HostUnreach,
            "net-unreachable" => RejectCode::NetUnreach,
            "prot-unreachable" => RejectCode::ProtUnreach,
            "net-prohibited" => RejectCode::NetProhibited,
            "host-prohibited" => RejectCode::HostProhibited,
            "addr-unreachable" => RejectCode::AddrUnreach,
            _ => return None, // lowering only lets nft's names through
        })
    };
    match how {
        RejectWith::TcpReset => stmt::Reject::new(Some(stmt::RejectType::TCPReset), None),
        RejectWith::Icmp(c) => stmt::Reject::new(Some(stmt::RejectType::ICMP), code(c)),
        RejectWith::Icmpv6(c) => stmt::Reject::new(Some(stmt::RejectType::ICMPv6), code(c)),
        RejectWith::Icmpx(c) => stmt::Reject::new(Some(stmt::RejectType::ICMPX), code(c)),
    }
}

/// A default policy that needs more than the chain's accept/drop (log,
/// counter or reject) becomes a final catch-all rule (after its log rule
/// when the log is rate-limited). Its comment starts with the policy
/// line's id, or `default:HOOK` for a built-in default.
fn default_rules(t: &str, hook: Hook, p: &DefaultPolicy) -> Vec<schema::Rule<'static>> {
    if p.log.is_none() && !p.counter && p.action != Action::Reject {
        return Vec::new();
    }
    let comment: Option<std::borrow::Cow<'static, str>> = Some(format!("{} policy", p.id(hook)).into());
    let log_rule = limited_log(&[], p.log.as_ref()).map(|expr| schema::Rule {
        expr: expr.into(),
        comment: comment.clone(),
        ..rule_base(t, hook.name())
    });
    let main = schema::Rule {
        expr: tail(p.counter, p.log.as_ref(), p.action, None, None).into(),
        comment,
        ..rule_base(t, hook.name())
    };
    log_rule.into_iter().chain([main]).collect()
}

fn nat_stmt(a: &NatAction) -> Statement<'static> {
    let fam = |addr: &std::net::IpAddr| Some(if addr.is_ipv4() { stmt::NATFamily::IP } else { stmt::NATFamily::IP6 });
    match a {
        NatAction::Masquerade => Statement::Masquerade(None),
        NatAction::Snat { addr } => Statement::SNAT(Some(stmt::NAT {
            addr: Some(Expression::String(addr.to_string().into())),
            family: fam(addr),
            port: None,
            flags: None,
        })),
        NatAction::Dnat { addr, port } => Statement::DNAT(Some(stmt::NAT {
            addr: Some(Expression::String(addr.to_string().into())),
            family: fam(addr),
            port: port.map(|p| Expression::Number(u32::from(p))),
            flags: None,
        })),
    }
}

fn m(left: Expression<'static>, right: Expression<'static>, op: Operator) -> Statement<'static> {
    Statement::Match(Match { left, right, op })
}

fn payload(proto: &str, field: &str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(PayloadField {
        protocol: proto.to_string().into(),
        field: field.to_string().into(),
    })))
}

fn meta(key: MetaKey) -> Expression<'static> {
    Expression::Named(NamedExpression::Meta(Meta { key }))
}

fn addr_field(f: Family, field: &str) -> Expression<'static> {
    payload(if f == Family::V4 { "ip" } else { "ip6" }, field)
}

/// One value, or an anonymous set of several.
fn one_or_set(mut items: Vec<Expression<'static>>) -> Expression<'static> {
    if items.len() == 1 {
        items.remove(0)
    } else {
        Expression::Named(NamedExpression::Set(items.into_iter().map(SetItem::Element).collect()))
    }
}

fn eq_or_neq(negated: bool) -> Operator {
    if negated {
        Operator::NEQ
    } else {
        Operator::EQ
    }
}

/// The header matches of an IR rule, in nft's customary order; a merged
/// rule's field is looked up in its set.
fn matches(mm: &IrMatch, merged: Option<&Merged>) -> Vec<Statement<'static>> {
    // A merged rule looks its fields up at the place of the first one (a
    // concatenation of all of them), and matches nothing at the others.
    // A verdict map's lookup is added at the end by the caller.
    let lookup = |field: MergeField| -> Option<Option<Statement<'static>>> {
        let mg = merged.filter(|mg| mg.fields.contains(&field))?;
        Some(
            (mg.fields[0] == field && !mg.dispatch)
                .then(|| m(merged_key(mm, mg), Expression::String(format!("@{}", mg.set).into()), Operator::EQ)),
        )
    };
    let mut out = Vec::new();
    for (names, key, field) in [
        (&mm.iif, MetaKey::Iifname, MergeField::InputInterface),
        (&mm.oif, MetaKey::Oifname, MergeField::OutputInterface),
    ] {
        if let Some(merged) = lookup(field) {
            out.extend(merged);
        } else if let Some(ifaces) = names {
            let items = ifaces.names.iter().map(|n| Expression::String(n.clone().into())).collect();
            out.push(m(meta(key), one_or_set(items), eq_or_neq(ifaces.negated)));
        }
    }
    let addr_given = !matches!(mm.src, AddrMatch::Any) || !matches!(mm.dst, AddrMatch::Any);
    if let (Some(f), false) = (mm.family, addr_given) {
        out.push(m(meta(MetaKey::Nfproto), Expression::String(f.name().into()), Operator::EQ));
    }
    for (a, field, merge) in [(&mm.src, "saddr", MergeField::Source), (&mm.dst, "daddr", MergeField::Destination)] {
        let family = mm.family.unwrap_or(Family::V4);
        if let Some(merged) = lookup(merge) {
            out.extend(merged);
            continue;
        }
        match a {
            AddrMatch::Any => {}
            AddrMatch::Nets { negated, nets } => {
                let items = nets.iter().map(|n| net_expr(*n)).collect();
                out.push(m(addr_field(family, field), one_or_set(items), eq_or_neq(*negated)));
            }
            AddrMatch::Set { negated, set } => {
                out.push(m(
                    addr_field(family, field),
                    Expression::String(format!("@{set}").into()),
                    eq_or_neq(*negated),
                ));
            }
        }
    }
    if mm.urpf_failed {
        // The route back to the source (with the packet's mark, for policy
        // routing by mark) does not leave by the arriving interface.
        let flags = HashSet::from([expr::FibFlag::Saddr, expr::FibFlag::Mark, expr::FibFlag::Iif]);
        let fib = expr::Fib { result: expr::FibResult::Oif, flags };
        out.push(m(Expression::Named(NamedExpression::Fib(fib)), Expression::Boolean(false), Operator::EQ));
    }
    if let Some(local) = mm.dst_local {
        // `to self`: the destination address is one of this host's.
        let fib = expr::Fib { result: expr::FibResult::Type, flags: HashSet::from([expr::FibFlag::Daddr]) };
        let op = if local { Operator::EQ } else { Operator::NEQ };
        out.push(m(Expression::Named(NamedExpression::Fib(fib)), Expression::String("local".into()), op));
    }
    if let Some(p) = mm.proto {
        let ports_given = mm.sport.is_some() || mm.dport.is_some();
        let icmp_given = mm.icmp_types.is_some() && matches!(p, ICMP | ICMPV6);
        if !ports_given && !icmp_given {
            out.push(m(meta(MetaKey::L4proto), proto_expr(p), Operator::EQ));
        }
        let pname = names::proto_name(p);
        for (ports, field, merge) in
            [(&mm.sport, "sport", MergeField::SourcePort), (&mm.dport, "dport", MergeField::DestinationPort)]
        {
            if let Some(merged) = lookup(merge) {
                out.extend(merged);
            } else if let Some(pm) = ports {
                out.push(m(payload(&pname, field), ports_expr(pm), eq_or_neq(pm.negated)));
            }
        }
        if let (Some(types), true) = (&mm.icmp_types, icmp_given) {
            let items = types.iter().map(|t| Expression::String(names::icmp_type_name(p, *t).into())).collect();
            out.push(m(payload(if p == ICMP { "icmp" } else { "icmpv6" }, "type"), one_or_set(items), Operator::EQ));
        }
    }
    if let Some(mark) = mm.mark {
        out.push(m(meta(MetaKey::Mark), Expression::Number(mark), Operator::EQ));
    }
    if let Some(mark) = mm.ct_mark {
        out.push(m(ct("mark"), Expression::Number(mark), Operator::EQ));
    }
    if let Some(states) = mm.ct_state {
        let names: Vec<Expression<'static>> =
            states.names().into_iter().map(|s| Expression::String(s.into())).collect();
        let right = if names.len() == 1 {
            names.into_iter().next().unwrap_or(Expression::Number(0))
        } else {
            Expression::List(names)
        };
        out.push(m(ct("state"), right, Operator::IN));
    }
    out
}

/// What a merged rule looks up: its field, or the concatenation of its fields.
fn merged_key(mm: &IrMatch, mg: &Merged) -> Expression<'static> {
    let mut keys: Vec<Expression<'static>> = mg.fields.iter().map(|f| field_expr(mm, *f)).collect();
    if keys.len() == 1 {
        keys.remove(0)
    } else {
        Expression::Named(NamedExpression::Concat(keys))
    }
}

/// The packet field a merged rule looks up.
fn field_expr(mm: &IrMatch, f: MergeField) -> Expression<'static> {
    let family = mm.family.unwrap_or(Family::V4);
    let pname = || names::proto_name(mm.proto.unwrap_or(TCP));
    match f {
        MergeField::Source => addr_field(family, "saddr"),
        MergeField::Destination => addr_field(family, "daddr"),
        MergeField::SourcePort => payload(&pname(), "sport"),
        MergeField::DestinationPort => payload(&pname(), "dport"),
        MergeField::InputInterface => meta(MetaKey::Iifname),
        MergeField::OutputInterface => meta(MetaKey::Oifname),
    }
}

fn proto_expr(p: u8) -> Expression<'static> {
    match names::PROTOCOLS.iter().find(|(_, n)| *n == p) {
        Some(_) => Expression::String(names::proto_name(p).into()),
        None => Expression::Number(u32::from(p)),
    }
}

fn ports_expr(pm: &PortMatch) -> Expression<'static> {
    one_or_set(pm.ranges.iter().map(|r| port_expr(*r)).collect())
}

fn port_expr((lo, hi): (u16, u16)) -> Expression<'static> {
    if lo == hi {
        Expression::Number(u32::from(lo))
    } else {
        Expression::Range(Box::new(expr::Range {
            range: [Expression::Number(u32::from(lo)), Expression::Number(u32::from(hi))],
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for o in 0..=255u8 {
            let a = IpAddr::V4(Ipv4Addr::new(o, o / 2, 255 - o, o % 10));
            assert_eq!(super::addr_text(a), a.to_string());
        }
        let v6: IpAddr = "fd00:7:a::1".parse().unwrap();
        assert_eq!(super::addr_text(v6), "fd00:7:a::1");
    }
}
