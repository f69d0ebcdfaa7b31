//! AST -> IR: resolves defines and sets, checks meaning, and expands each
//! policy rule into one IR rule per protocol and address family.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;

use super::expiry::{self, Date, Expiry};
use super::names::{self, ICMP, ICMPV6};
use super::ranges::{self, Ranges};
use super::*;
use crate::diag::{Diag, SourceMap, Span};
use crate::policy::ast::{self, Direction, HostSpec, Item, NatKind, RuleOpt, SetBody, Spanned, Stmt, Value};
use crate::policy::{self, LoadError, Policy, PolicyError};

const DEFAULT_TABLE: &str = "phantomc";
/// nft's limits (IFNAMSIZ - 1, NFT_USERDATA_MAXLEN, log prefix).
const MAX_IFNAME: usize = 15;
const MAX_COMMENT: usize = 128;
const MAX_LOG_PREFIX: usize = 127;

/// A compiled policy: its sources (for messages) and its IR.
#[derive(Debug)]
pub struct Compiled {
    pub sources: SourceMap,
    pub ruleset: Ruleset,
    /// Defines and sets that no rule used (for `lint`).
    pub unused: Vec<Unused>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unused {
    pub kind: &'static str,
    pub name: String,
    pub span: Span,
}

/// Reads, parses and lowers a policy file.
pub fn compile_file(path: &Path) -> Result<Compiled, LoadError> {
    let policy = policy::load(path)?;
    Ok(finish(policy)?)
}

/// Parses and lowers policy text (tests, fuzzing, `explain` on stdin).
pub fn compile(name: &str, text: &str) -> Result<Compiled, PolicyError> {
    let policy = policy::load_str(name, Path::new(name), text.to_string())?;
    finish(policy)
}

/// Lowers new text for the policy at `path` (its includes resolve from
/// there): a rewrite checked before it is written.
pub fn compile_text_at(path: &Path, text: String) -> Result<Compiled, PolicyError> {
    finish(policy::load_str(&path.display().to_string(), path, text)?)
}

fn finish(policy: Policy) -> Result<Compiled, PolicyError> {
    match lower(&policy) {
        Ok((ruleset, unused)) => Ok(Compiled { sources: policy.sources, ruleset, unused }),
        Err(diags) => Err(PolicyError { sources: policy.sources, diags }),
    }
}

/// Gives meaning to a parsed policy.
pub fn lower(policy: &Policy) -> Result<(Ruleset, Vec<Unused>), Vec<Diag>> {
    let mut l = Lowerer::new(&policy.sources);
    l.declare(&policy.stmts);
    for (idx, stmt) in policy.stmts.iter().enumerate() {
        if l.elements_left.is_none() {
            break; // over the element budget: the rest would only repeat it
        }
        l.stmt(idx, stmt);
    }
    l.finish()
}

/// A value item after macro expansion, remembering the `$macro` it came through.
#[derive(Clone, Debug)]
struct Resolved {
    item: Item,
    span: Span,
    via: Option<Span>,
}

impl Resolved {
    fn diag(&self, code: &'static str, message: impl Into<String>, label: impl Into<String>) -> Diag {
        let d = Diag::error(code, self.span, message, label);
        match self.via {
            Some(via) if via != self.span => d.with_related(via, "used here"),
            _ => d,
        }
    }
}

struct SetInfo {
    span: Span,
    /// Families the set can hold elements of.
    families: Vec<Family>,
}

/// An address clause after resolution, before splitting by family.
#[derive(Clone, Debug)]
enum AddrSpec {
    Any,
    Nets { negated: bool, nets: Vec<(IpNet, Span)> },
    Set { negated: bool, name: String },
}

#[derive(Clone, Debug)]
struct PortItem {
    proto: Option<u8>,
    lo: u16,
    hi: u16,
    span: Span,
}

#[derive(Default)]
struct Clauses<'a> {
    iif: Option<(Vec<String>, Span)>,
    oif: Option<(Vec<String>, Span)>,
    family: Option<(Family, Span)>,
    proto: Option<&'a Value>,
    from: Option<(&'a HostSpec, Span)>,
    to: Option<(&'a HostSpec, Span)>,
    icmp: Option<&'a Value>,
    state: Option<&'a Value>,
    limit: Option<(&'a ast::LimitSpec, Span)>,
    log: Option<(Option<&'a str>, Span)>,
    counter: Option<bool>,
    label: Option<(&'a str, Span)>,
    expires: Option<Date>,
    /// `with KIND CODE`: the kind (`icmp`, `icmpv6`, `icmpx`, `tcp reset`) and code.
    reject_with: Option<(&'a str, Option<&'a str>, Span)>,
    early: Option<Span>,
}

struct Lowerer<'a> {
    sources: &'a SourceMap,
    diags: Vec<Diag>,
    defines: HashMap<String, (Span, Vec<Resolved>)>,
    /// Every define name with its span, to tell "defined later" from "unknown".
    all_defines: HashMap<String, Span>,
    sets: BTreeMap<String, SetInfo>,
    used: BTreeSet<String>,
    table: Option<Spanned<String>>,
    policies: BTreeMap<Hook, (DefaultPolicy, Span)>,
    out: Ruleset,
    meters: usize,
    /// Where the adaptive block names its set (for messages).
    adaptive_set_span: Span,
    /// Rules and entries dated before this day are left out.
    today: Date,
    /// Index of the statement being lowered (for the origins of expiring entries).
    stmt: usize,
    /// Set and list elements that may still be produced by expanding defines;
    /// `None` once the budget is spent (and reported).
    elements_left: Option<u64>,
}

impl<'a> Lowerer<'a> {
    fn new(sources: &'a SourceMap) -> Self {
        Lowerer {
            sources,
            diags: Vec::new(),
            defines: HashMap::new(),
            all_defines: HashMap::new(),
            sets: BTreeMap::new(),
            used: BTreeSet::new(),
            table: None,
            policies: BTreeMap::new(),
            out: Ruleset {
                table: DEFAULT_TABLE.into(),
                sets: Vec::new(),
                chains: Hook::ALL
                    .iter()
                    .map(|&hook| Chain { hook, policy: builtin_policy(hook), rules: Vec::new(), priority: 0 })
                    .collect(),
                nat: Vec::new(),
                feeds: Vec::new(),
                allow_always: Vec::new(),
                tests: Vec::new(),
                adaptive: None,
                expiries: Vec::new(),
            },
            meters: 0,
            adaptive_set_span: Span::default(),
            today: expiry::today(),
            stmt: 0,
            elements_left: Some(crate::policy::max_elements()),
        }
    }

    fn origin(&self, span: Span, stmt: usize) -> Origin {
        Origin { id: self.sources.origin(span), span, stmt }
    }

    /// First pass: names that may be used before their statement (sets, feeds)
    /// and every define (for better "used before defined" messages).
    fn declare(&mut self, stmts: &[Stmt]) {
        for stmt in stmts {
            match stmt {
                Stmt::Define { name, .. } => {
                    self.all_defines.entry(name.node.clone()).or_insert(name.span);
                }
                Stmt::Set { name, body, .. } => {
                    let families = match body {
                        SetBody::Dynamic { .. } => vec![Family::V4, Family::V6],
                        // Filled in when the set statement itself is lowered.
                        SetBody::Static(_) => Vec::new(),
                    };
                    self.declare_set(name, families);
                }
                Stmt::Feed { name, .. } => self.declare_set(name, vec![Family::V4, Family::V6]),
                _ => {}
            }
        }
    }

    fn declare_set(&mut self, name: &Spanned<String>, families: Vec<Family>) {
        if let Some(prev) = self.sets.get(&name.node) {
            let d = Diag::error(
                "duplicate-set",
                name.span,
                format!("set `{}` is declared twice", name.node),
                "declared again here",
            )
            .with_related(prev.span, "first declared here")
            .with_help("set and feed names share one namespace; rename one of them");
            self.diags.push(d);
            return;
        }
        self.sets.insert(name.node.clone(), SetInfo { span: name.span, families });
    }

    fn stmt(&mut self, idx: usize, stmt: &Stmt) {
        self.stmt = idx;
        match stmt {
            Stmt::Table(name) => self.table_stmt(name),
            Stmt::Define { name, value } => {
                if let Some((prev, _)) = self.defines.get(&name.node) {
                    let d = Diag::error(
                        "duplicate-define",
                        name.span,
                        format!("`{}` is defined twice", name.node),
                        "defined again here",
                    )
                    .with_related(*prev, "first defined here")
                    .with_help("each define name can be used once; rename one of them");
                    self.diags.push(d);
                    return;
                }
                let items = self.expand(value);
                self.defines.insert(name.node.clone(), (name.span, items));
            }
            Stmt::Include { .. } => {} // resolved by the loader
            Stmt::Policy { hook, action, log, counter, priority, span } => {
                if let Some((_, prev)) = self.policies.get(&hook.node) {
                    let d = Diag::error(
                        "duplicate-policy",
                        *span,
                        format!("the {} policy is set twice", hook.node.name()),
                        "set again here",
                    )
                    .with_related(*prev, "first set here");
                    self.diags.push(d);
                    return;
                }
                let origin = self.origin(*span, idx);
                let log = log.as_ref().map(|custom| {
                    let verb = if action.node == Action::Pass { "accept" } else { "drop" };
                    format!("{} policy-{} {}", origin.id, hook.node.name(), log_tail(verb, custom.as_deref()))
                });
                let log = log.map(|l| self.log_prefix_from(l, *span));
                let policy = DefaultPolicy { action: action.node, log, counter: *counter, origin: Some(origin) };
                self.policies.insert(hook.node, (policy, *span));
                if let Some(p) = priority {
                    self.chain_priority(hook.node, p);
                }
            }
            Stmt::Set { name, body, span } => self.set_stmt(idx, name, body, *span),
            Stmt::Feed { name, opts, span } => self.feed_stmt(idx, name, opts, *span),
            Stmt::Adaptive { opts, span } => self.adaptive_stmt(idx, opts, *span),
            Stmt::AllowAlways { value, .. } => self.allow_always(value),
            Stmt::Rule(r) => self.rule(idx, r),
            Stmt::Nat(n) => self.nat(idx, n),
            Stmt::Test { name, expects, .. } => {
                for e in expects {
                    self.out.tests.push(TestCase {
                        name: name.node.clone(),
                        expect: e.action.node,
                        packet: e.packet.node.clone(),
                        span: e.packet.span,
                    });
                }
            }
        }
    }

    /// `priority N`: after conntrack (-200) and, for input, within nft's
    /// sensible range; before conntrack `state` would never see a state.
    fn chain_priority(&mut self, hook: Hook, p: &Spanned<i64>) {
        const RANGE: std::ops::RangeInclusive<i64> = -199..=1000;
        if !RANGE.contains(&p.node) {
            self.diags.push(
                Diag::error("bad-priority", p.span, format!("priority {} is out of range", p.node), "must be -199 to 1000")
                    .with_help("chains at -200 or lower run before conntrack, where `state` matches nothing; to drop before conntrack write `early` rules"),
            );
            return;
        }
        if let Some(ch) = self.out.chains.iter_mut().find(|c| c.hook == hook) {
            ch.priority = p.node as i32;
        }
    }

    fn table_stmt(&mut self, name: &Spanned<String>) {
        if let Some(prev) = &self.table {
            let d = Diag::error("duplicate-table", name.span, "the table is named twice", "named again here")
                .with_related(prev.span, "first named here")
                .with_help("a policy owns exactly one nft table");
            self.diags.push(d);
            return;
        }
        let valid =
            name.node.len() <= 64 && name.node.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid {
            self.diags.push(
                Diag::error(
                    "bad-table",
                    name.span,
                    format!("`{}` is not a valid table name", name.node),
                    "invalid name",
                )
                .with_help("use letters, digits, `_` and `-` (at most 64)"),
            );
            return;
        }
        self.out.table = name.node.clone();
        self.table = Some(name.clone());
    }

    /// Takes `n` elements from the budget; false (reported once) when it is spent.
    fn spend_elements(&mut self, n: usize, span: Span) -> bool {
        let Some(left) = self.elements_left else { return false };
        if n as u64 <= left {
            self.elements_left = Some(left - n as u64);
            return true;
        }
        self.elements_left = None;
        let what = format!("{} elements", crate::policy::max_elements());
        self.diags.push(crate::policy::expansion_limit(span, what));
        false
    }

    /// Expands macros (recursively, already expanded at their define) and flattens lists.
    fn expand(&mut self, value: &Value) -> Vec<Resolved> {
        let mut out = Vec::new();
        for it in &value.items {
            let n = match &it.node {
                Item::Macro(name) => self.defines.get(name).map_or(0, |(_, items)| items.len()),
                _ => 1,
            };
            if !self.spend_elements(n, it.span) {
                return out;
            }
            match &it.node {
                Item::Macro(name) => match self.defines.get(name) {
                    Some((_, items)) => {
                        self.used.insert(format!("${name}"));
                        out.extend(items.iter().map(|r| Resolved { via: Some(r.via.unwrap_or(it.span)), ..r.clone() }));
                    }
                    None => self.unknown_macro(name, it.span),
                },
                Item::Service { proto, port } if matches!(port.node, Item::Macro(_)) => {
                    let inner = Value { items: vec![(**port).clone()], span: port.span };
                    for r in self.expand(&inner) {
                        out.push(Resolved {
                            item: Item::Service { proto: proto.clone(), port: Box::new(Spanned::new(r.item, r.span)) },
                            span: it.span,
                            via: r.via,
                        });
                    }
                }
                Item::SetRef(name) => {
                    self.used.insert(format!("<{name}>"));
                    out.push(Resolved { item: it.node.clone(), span: it.span, via: None });
                }
                Item::Except(inner) => {
                    let inner = Value { items: vec![(**inner).clone()], span: inner.span };
                    for r in self.expand(&inner) {
                        let span = r.span;
                        out.push(Resolved { item: Item::Except(Box::new(Spanned::new(r.item, span))), ..r });
                    }
                }
                Item::Expiring { item, date } => {
                    let what = self.sources.snippet(item.span).to_string();
                    if self.expiry("entry", what, date.node, it.span) {
                        let inner = Value { items: vec![(**item).clone()], span: item.span };
                        out.extend(self.expand(&inner));
                    }
                }
                other => out.push(Resolved { item: other.clone(), span: it.span, via: None }),
            }
        }
        out
    }

    /// Records an `expires` date; false when it has passed (the rule or entry is left out).
    fn expiry(&mut self, kind: &'static str, what: String, date: Date, span: Span) -> bool {
        let expired = date < self.today;
        let origin = self.origin(span, self.stmt);
        self.out.expiries.push(Expiry { kind, what, date, expired, origin });
        !expired
    }

    fn unknown_macro(&mut self, name: &str, span: Span) {
        let mut d = Diag::error("unknown-define", span, format!("`${name}` is not defined"), "unknown define");
        if let Some(later) = self.all_defines.get(name) {
            let (line, _) = self.sources.line_col(*later);
            d = d.with_related(*later, "defined later here").with_help(format!(
                "defines must come before their first use; move the define (line {line}) above this line"
            ));
        } else if let Some(s) = names::suggest(name, self.defines.keys().map(String::as_str)) {
            d = d.with_help(format!("did you mean `${s}`?"));
        } else {
            d = d.with_help(format!("add `define {name} = ...` before this line"));
        }
        self.diags.push(d);
    }

    fn is_first_declaration(&self, name: &Spanned<String>) -> bool {
        self.sets.get(&name.node).is_some_and(|s| s.span == name.span)
    }

    fn set_stmt(&mut self, idx: usize, name: &Spanned<String>, body: &SetBody, span: Span) {
        if !self.is_first_declaration(name) {
            return; // a duplicate, already reported
        }
        let origin = self.origin(span, idx);
        match body {
            SetBody::Dynamic { timeout } => {
                for family in [Family::V4, Family::V6] {
                    self.out.sets.push(SetDef {
                        name: name.node.clone(),
                        nft_name: nft_set_name(&name.node, family),
                        family,
                        kind: SetKind::Dynamic { timeout: timeout.as_ref().map(|t| t.node) },
                        origin: origin.clone(),
                    });
                }
            }
            SetBody::Static(value) => {
                let errors_before = self.diags.len();
                let expiries_before = self.out.expiries.len();
                let items = self.expand(value);
                let mut nets = Vec::new();
                let mut excluded = Vec::new();
                for r in items {
                    match r.item {
                        Item::Net(n) => nets.push((n, r.span)),
                        Item::Except(ref inner) => excluded.extend(self.excluded_net(&r, inner)),
                        ref other => {
                            let d = r
                                .diag(
                                    "type-mismatch",
                                    format!("a set holds addresses, found {}", other.kind()),
                                    "not an address",
                                )
                                .with_help("sets hold IPv4/IPv6 addresses and networks");
                            self.diags.push(d);
                        }
                    }
                }
                if !excluded.is_empty() {
                    nets = self.exclude(nets, &excluded);
                }
                let (v4, v6): (Vec<IpNet>, Vec<IpNet>) =
                    nets.into_iter().map(|(n, _)| n).partition(|n| Family::of(&n.addr()) == Family::V4);
                // Every entry expired: the set stays, empty, so its rules match nothing.
                let all_expired = self.out.expiries[expiries_before..].iter().any(|e| e.expired);
                if v4.is_empty() && v6.is_empty() && self.diags.len() == errors_before && !all_expired {
                    self.diags.push(
                        Diag::error("empty-set", value.span, format!("set `{}` is empty", name.node), "no elements")
                            .with_help("for a set filled at run time write `set NAME dynamic`"),
                    );
                }
                let mut families = Vec::new();
                let keep_empty = v4.is_empty() && v6.is_empty();
                for (family, nets) in [(Family::V4, v4), (Family::V6, v6)] {
                    if nets.is_empty() && !keep_empty {
                        continue;
                    }
                    families.push(family);
                    self.out.sets.push(SetDef {
                        name: name.node.clone(),
                        nft_name: nft_set_name(&name.node, family),
                        family,
                        kind: SetKind::Static { elements: IpNet::aggregate(&nets) },
                        origin: origin.clone(),
                    });
                }
                if let Some(info) = self.sets.get_mut(&name.node) {
                    info.families = families;
                }
            }
        }
    }

    fn feed_stmt(
        &mut self,
        idx: usize,
        name: &Spanned<String>,
        opts: &[(Spanned<String>, Spanned<ast::FeedValue>)],
        span: Span,
    ) {
        if !self.is_first_declaration(name) {
            return; // a duplicate, already reported
        }
        let origin = self.origin(span, idx);
        let mut options = BTreeMap::new();
        let mut seen: HashMap<&str, Span> = HashMap::new();
        for (k, v) in opts {
            let key = crate::feeds::canonical_key(&k.node);
            if let Some(prev) = seen.insert(key, k.span) {
                self.diags.push(
                    Diag::error(
                        "duplicate-option",
                        k.span,
                        format!("feed option `{}` is given twice", k.node),
                        "given again here",
                    )
                    .with_related(prev, "first given here"),
                );
                continue;
            }
            match crate::feeds::check_option(&k.node, &v.node) {
                Ok(text) => {
                    options.insert(key.to_string(), text);
                }
                Err(bad) => self.diags.push(
                    Diag::error(
                        "feed-option",
                        v.span,
                        format!("bad `{}` for feed `{}`: {}", k.node, name.node, bad.message),
                        bad.label,
                    )
                    .with_help(bad.help),
                ),
            }
        }
        if let (Some((k, _)), false) =
            (opts.iter().find(|(k, _)| k.node == "column"), options.get("format").is_some_and(|f| f == "csv"))
        {
            self.diags.push(
                Diag::error(
                    "feed-option",
                    k.span,
                    format!("`column` needs `format csv` in feed `{}`", name.node),
                    "only for CSV feeds",
                )
                .with_help("add `format csv;` or remove `column`"),
            );
        }
        // A provider that was refused above leaves no source; that is not a second error.
        let bad_provider = opts.iter().any(|(k, _)| k.node == "provider") && !options.contains_key("provider");
        for p in crate::feeds::check_feed(&name.node, &options) {
            if bad_provider && p.code == "feed-source" {
                continue;
            }
            let at = p
                .option
                .and_then(|o| opts.iter().find(|(k, _)| crate::feeds::canonical_key(&k.node) == o))
                .map_or(name.span, |(k, _)| k.span);
            self.diags.push(Diag::error(p.code, at, p.bad.message, p.bad.label).with_help(p.bad.help));
        }
        for family in [Family::V4, Family::V6] {
            self.out.sets.push(SetDef {
                name: name.node.clone(),
                nft_name: nft_set_name(&name.node, family),
                family,
                kind: SetKind::Feed { feed: name.node.clone() },
                origin: origin.clone(),
            });
        }
        self.out.feeds.push(FeedDef { name: name.node.clone(), options, origin });
    }

    fn adaptive_stmt(&mut self, idx: usize, opts: &[(Spanned<String>, Spanned<ast::FeedValue>)], span: Span) {
        use ast::FeedValue as V;
        if let Some(prev) = &self.out.adaptive {
            let d = Diag::error("duplicate-adaptive", span, "`adaptive` is given twice", "given again here")
                .with_related(prev.origin.span, "first given here");
            self.diags.push(d);
            return;
        }
        let mut a = Adaptive {
            mode: AdaptiveMode::Observe,
            set: "blocklist".into(),
            thresholds: None,
            timeout: 600,
            max_timeout: 86_400,
            max_blocks: 10,
            window: 600,
            min_confidence: 50,
            origin: self.origin(span, idx),
        };
        let mut seen: HashMap<&str, Span> = HashMap::new();
        let mut set_span = span;
        for (k, v) in opts {
            if let Some(prev) = seen.insert(&k.node, k.span) {
                self.diags.push(
                    Diag::error(
                        "duplicate-option",
                        k.span,
                        format!("adaptive option `{}` is given twice", k.node),
                        "given again here",
                    )
                    .with_related(prev, "first given here"),
                );
                continue;
            }
            let problem: Option<(&str, &str)> = match (k.node.as_str(), &v.node) {
                ("mode", V::Name(m)) if m == "observe" => {
                    a.mode = AdaptiveMode::Observe;
                    None
                }
                ("mode", V::Name(m)) if m == "block" => {
                    a.mode = AdaptiveMode::Block;
                    None
                }
                ("mode", _) => Some((
                    "expected `observe` or `block`",
                    "`mode observe;` reports findings, `mode block;` also blocks",
                )),
                ("set", V::Name(n)) => {
                    set_span = v.span;
                    a.set = n.clone();
                    None
                }
                ("set", _) => {
                    Some(("expected a set name", "name a `set NAME dynamic` of this policy: `set attackers;`"))
                }
                ("thresholds", V::Str(p)) if !p.trim().is_empty() => {
                    a.thresholds = Some(p.clone());
                    None
                }
                ("thresholds", _) => {
                    Some(("expected a quoted path", "`thresholds \"detectors.yaml\";` (relative to this policy)"))
                }
                ("timeout" | "max-timeout" | "window", V::Seconds(0)) => Some(("must be longer than 0s", "e.g. `10m`")),
                ("timeout", V::Seconds(t)) => {
                    a.timeout = *t;
                    None
                }
                ("max-timeout", V::Seconds(t)) => {
                    a.max_timeout = *t;
                    None
                }
                ("window", V::Seconds(t)) => {
                    a.window = *t;
                    None
                }
                ("timeout" | "max-timeout" | "window", _) => Some(("expected a duration", "e.g. `10m`, `1h`, `1d`")),
                ("max-blocks", V::Number(n)) => {
                    a.max_blocks = *n;
                    None
                }
                ("max-blocks", _) => Some(("expected a number", "new blocks per minute, e.g. `max-blocks 10;`")),
                ("min-confidence", V::Number(n @ 50..=99)) => {
                    a.min_confidence = *n as u8;
                    None
                }
                ("min-confidence", _) => Some((
                    "expected a percentage from 50 to 99",
                    "50 blocks at the detector's threshold, 90 only far beyond it",
                )),
                _ => Some(("unknown option", "see docs/guide/adaptive.md")),
            };
            if let Some((label, help)) = problem {
                self.diags.push(
                    Diag::error("adaptive-option", v.span, format!("bad adaptive option `{}`", k.node), label)
                        .with_help(help),
                );
            }
        }
        // A week caps a block: the address may be reassigned to someone else.
        const MAX_BLOCK: u64 = 7 * 86_400;
        if a.timeout > a.max_timeout || a.max_timeout > MAX_BLOCK {
            let at = seen.get("max-timeout").or(seen.get("timeout")).copied().unwrap_or(span);
            self.diags.push(
                Diag::error("adaptive-option", at, "block timeouts out of range", "timeout > max-timeout, or over 7d")
                    .with_help("a first block lasts `timeout`, repeats double it up to `max-timeout` (at most 7d)"),
            );
        }
        self.adaptive_set_span = set_span;
        self.out.adaptive = Some(a);
    }

    /// The adaptive set must be a dynamic set that a rule matches sources
    /// against; otherwise blocks would change nothing.
    fn check_adaptive_set(&mut self) {
        let Some(a) = &self.out.adaptive else { return };
        let dynamic = self.out.sets.iter().any(|s| s.name == a.set && matches!(s.kind, SetKind::Dynamic { .. }));
        let nft_names = [nft_set_name(&a.set, Family::V4), nft_set_name(&a.set, Family::V6)];
        let matched = self.out.chains.iter().flat_map(|c| &c.rules).any(|r| {
            r.action != Action::Pass
                && matches!(&r.matches.src, AddrMatch::Set { negated: false, set } if nft_names.contains(set))
        });
        let problem = if !dynamic {
            Some((format!("no dynamic set `{}` for adaptive blocks", a.set), "not a `set NAME dynamic`"))
        } else if !matched {
            Some((format!("no rule blocks sources in `<{}>`", a.set), "adaptive blocks would change nothing"))
        } else {
            None
        };
        if let Some((message, label)) = problem {
            self.diags.push(
                Diag::error("adaptive-set", self.adaptive_set_span, message, label)
                    .with_help(format!("declare `set {0} dynamic` and add `block in from <{0}>`", a.set)),
            );
        }
    }

    fn allow_always(&mut self, value: &Value) {
        for r in self.expand(value) {
            match r.item {
                Item::Net(n) => self.out.allow_always.push(n.trunc()),
                ref other => {
                    let d = r
                        .diag(
                            "type-mismatch",
                            format!("`allow-always` holds addresses, found {}", other.kind()),
                            "not an address",
                        )
                        .with_help(
                            "list IPv4/IPv6 addresses and networks, e.g. `allow-always { 10.10.0.0/24, $admins }`",
                        );
                    self.diags.push(d);
                }
            }
        }
        self.out.allow_always = IpNet::aggregate(&self.out.allow_always);
    }

    fn clauses<'b>(&mut self, direction: &Spanned<Direction>, opts: &'b [Spanned<RuleOpt>]) -> Clauses<'b> {
        let mut c = Clauses::default();
        let mut seen: HashMap<&'static str, Span> = HashMap::new();
        for opt in opts {
            let kw = opt.node.keyword();
            // `counter` and `nocounter` fill one slot: both in a rule contradict.
            let slot = if matches!(opt.node, RuleOpt::Counter(_)) { "counter" } else { kw };
            if let Some(prev) = seen.insert(slot, opt.span) {
                let what = if slot == kw { format!("`{kw}`") } else { "`counter`/`nocounter`".to_string() };
                self.diags.push(
                    Diag::error(
                        "duplicate-clause",
                        opt.span,
                        format!("{what} is given twice in one rule"),
                        "given again here",
                    )
                    .with_related(prev, "first given here")
                    .with_help("to match several values use a list: `{ a, b }`"),
                );
                continue;
            }
            match &opt.node {
                RuleOpt::On(v) => match direction.node {
                    Direction::In => c.iif = self.ifaces(v).map(|i| (i, opt.span)),
                    Direction::Out => c.oif = self.ifaces(v).map(|i| (i, opt.span)),
                    Direction::Forward => self.diags.push(
                        Diag::error("iface-direction", opt.span, "`on` is ambiguous in a forward rule", "input or output interface?")
                            .with_help("write `in on IFACE` for the interface packets arrive on, `out on IFACE` for the one they leave by"),
                    ),
                },
                RuleOpt::InOn(v) => c.iif = self.directed_iface(v, opt.span, direction, Direction::Out),
                RuleOpt::OutOn(v) => c.oif = self.directed_iface(v, opt.span, direction, Direction::In),
                RuleOpt::Family(f) => c.family = Some((*f, opt.span)),
                RuleOpt::Proto(v) => c.proto = Some(v),
                RuleOpt::From(h) => c.from = Some((h, opt.span)),
                RuleOpt::To(h) => c.to = Some((h, opt.span)),
                RuleOpt::IcmpType(v) => c.icmp = Some(v),
                RuleOpt::State(v) => c.state = Some(v),
                RuleOpt::Limit(l) => c.limit = Some((l, opt.span)),
                RuleOpt::Log(s) => c.log = Some((s.as_deref(), opt.span)),
                RuleOpt::Counter(on) => c.counter = Some(*on),
                RuleOpt::Label(s) => c.label = Some((s.as_str(), opt.span)),
                RuleOpt::Expires(d) => c.expires = Some(*d),
                RuleOpt::RejectWith { kind, code } => c.reject_with = Some((kind, code.as_deref(), opt.span)),
                RuleOpt::Early => c.early = Some(opt.span),
            }
        }
        c
    }

    /// `in on IF` / `out on IF`: not in a rule of the `wrong` direction, which
    /// has no such interface.
    fn directed_iface(
        &mut self,
        v: &Value,
        span: Span,
        direction: &Spanned<Direction>,
        wrong: Direction,
    ) -> Option<(Vec<String>, Span)> {
        if direction.node != wrong {
            return self.ifaces(v).map(|i| (i, span));
        }
        let (rule, missing, other, instead) = match wrong {
            Direction::Out => {
                ("out", "input", "outgoing", "`on IFACE` (the output interface) or make this an `in` rule")
            }
            _ => ("in", "output", "incoming", "`on IFACE` (the input interface) or make this a `forward` rule"),
        };
        self.diags.push(
            Diag::error(
                "iface-direction",
                span,
                format!("an `{rule}` rule has no {missing} interface"),
                format!("not known on {}", if rule == "in" { "input" } else { "output" }),
            )
            .with_related(direction.span, format!("rule is for {other} packets"))
            .with_help(format!("use {instead}")),
        );
        None
    }

    fn ifaces(&mut self, v: &Value) -> Option<Vec<String>> {
        let mut out = Vec::new();
        for r in self.expand(v) {
            match &r.item {
                Item::Name(n) if n.len() <= MAX_IFNAME => out.push(n.clone()),
                Item::Name(n) => self.diags.push(
                    r.diag("bad-iface", format!("interface name `{n}` is too long"), format!("{} characters", n.len()))
                        .with_help(format!("Linux interface names have at most {MAX_IFNAME} characters")),
                ),
                other => {
                    let d = r.diag(
                        "type-mismatch",
                        format!("expected an interface name, found {}", other.kind()),
                        "not an interface",
                    );
                    self.diags.push(d);
                }
            }
        }
        (!out.is_empty()).then(|| {
            out.sort();
            out.dedup();
            out
        })
    }

    fn protos(&mut self, v: &Value) -> Vec<(u8, Span)> {
        let mut out = Vec::new();
        for r in self.expand(v) {
            match &r.item {
                Item::Name(n) => match names::proto_number(n) {
                    Some(p) => out.push((p, r.span)),
                    None => {
                        let mut d = r.diag("unknown-proto", format!("unknown protocol `{n}`"), "not a protocol");
                        d = match names::suggest(n, names::PROTOCOLS.iter().map(|(n, _)| *n)) {
                            Some(s) => d.with_help(format!("did you mean `{s}`?")),
                            None => d.with_help("known protocols: tcp, udp, icmp, icmpv6, sctp, gre, esp, ah, igmp, udplite, or a number"),
                        };
                        self.diags.push(d);
                    }
                },
                Item::Number(n) if *n <= 255 => out.push((*n as u8, r.span)),
                Item::Number(n) => self.diags.push(r.diag(
                    "bad-proto",
                    format!("protocol number {n} is out of range"),
                    "must be 0-255",
                )),
                other => {
                    let d = r.diag(
                        "type-mismatch",
                        format!("expected a protocol, found {}", other.kind()),
                        "not a protocol",
                    );
                    self.diags.push(d);
                }
            }
        }
        out.sort_by_key(|(p, _)| *p);
        out.dedup_by_key(|(p, _)| *p);
        out
    }

    fn ports(&mut self, v: &Value) -> Vec<PortItem> {
        let mut out = Vec::new();
        for r in self.expand(v) {
            let (proto, item, span) = match &r.item {
                Item::Service { proto, port } => (names::proto_number(proto), port.node.clone(), r.span),
                other => (None, other.clone(), r.span),
            };
            let (lo, hi) = match item {
                Item::Number(n) => (n, n),
                Item::PortRange(a, b) => (u64::from(a), u64::from(b)),
                Item::Name(n) => {
                    let mut d =
                        r.diag("type-mismatch", format!("expected a port number, found name `{n}`"), "not a port");
                    if let Some(p) = well_known_port(&n) {
                        d = d.with_help(format!("write the number: `{n}` is port {p}"));
                    }
                    self.diags.push(d);
                    continue;
                }
                other => {
                    let d = r.diag("type-mismatch", format!("expected a port, found {}", other.kind()), "not a port");
                    self.diags.push(d);
                    continue;
                }
            };
            if hi > 65535 {
                self.diags.push(
                    r.diag("bad-port", format!("port {hi} is out of range"), "ports are 0-65535")
                        .with_help("the largest port is 65535"),
                );
                continue;
            }
            if lo > hi {
                self.diags.push(
                    r.diag("bad-port-range", format!("port range {lo}-{hi} is backwards"), "start is after end")
                        .with_help(format!("did you mean `{hi}-{lo}`?")),
                );
                continue;
            }
            out.push(PortItem { proto, lo: lo as u16, hi: hi as u16, span });
        }
        out
    }

    fn addrs(&mut self, spec: &HostSpec) -> AddrSpec {
        let (negated, items) = match (&spec.addr, &spec.except) {
            // `any except X` is everything but X.
            (None, Some(except)) => (!spec.negated, self.expand(except)),
            (addr, except) => {
                let mut items = addr.as_ref().map_or_else(Vec::new, |v| self.expand(v));
                for r in except.as_ref().map_or_else(Vec::new, |v| self.expand(v)) {
                    let span = r.span;
                    items.push(Resolved { item: Item::Except(Box::new(Spanned::new(r.item, span))), ..r });
                }
                (spec.negated, items)
            }
        };
        if items.is_empty() {
            return AddrSpec::Any;
        }
        let mut nets = Vec::new();
        let mut excluded = Vec::new();
        let mut set: Option<(String, Span)> = None;
        for r in &items {
            match &r.item {
                Item::Net(n) => nets.push((*n, r.span)),
                Item::Except(inner) => excluded.extend(self.excluded_net(r, inner)),
                Item::SetRef(name) => {
                    if !self.sets.contains_key(name) {
                        let mut d = r.diag("unknown-set", format!("set `<{name}>` is not declared"), "unknown set");
                        d = match names::suggest(name, self.sets.keys().map(String::as_str)) {
                            Some(s) => d.with_help(format!("did you mean `<{s}>`?")),
                            None => d.with_help(format!(
                                "declare it: `set {name} = {{ ... }}`, `set {name} dynamic` or `feed {name} {{ ... }}`"
                            )),
                        };
                        self.diags.push(d);
                    } else if set.is_some() {
                        self.diags.push(
                            r.diag("set-list", "only one set can be matched per address clause", "second set")
                                .with_help("write one rule per set"),
                        );
                    } else {
                        set = Some((name.clone(), r.span));
                    }
                }
                Item::Name(n) => self.diags.push(
                    r.diag("type-mismatch", format!("expected an address, found name `{n}`"), "not an address")
                        .with_help("host names are not resolved at compile time; write the address or a define"),
                ),
                other => {
                    let d = r.diag(
                        "type-mismatch",
                        format!("expected an address, found {}", other.kind()),
                        "not an address",
                    );
                    self.diags.push(d);
                }
            }
        }
        match set {
            Some((name, span)) if !nets.is_empty() => {
                self.diags.push(
                    Diag::error(
                        "set-list",
                        span,
                        "a set cannot be mixed with addresses in one list",
                        "set in an address list",
                    )
                    .with_help(format!("add the addresses to set `{name}`, or write two rules")),
                );
                AddrSpec::Any
            }
            Some((name, span)) if !excluded.is_empty() => {
                self.diags.push(
                    Diag::error("set-list", span, "a set cannot be matched with exclusions", "set with `except`/`!`")
                        .with_help(format!("take the addresses out of set `{name}` itself, or write a rule for the exceptions before this one")),
                );
                AddrSpec::Any
            }
            Some((name, _)) => AddrSpec::Set { negated, name },
            None if nets.is_empty() && excluded.is_empty() => AddrSpec::Any,
            None => {
                if !excluded.is_empty() {
                    nets = self.exclude(nets, &excluded);
                }
                AddrSpec::Nets { negated, nets }
            }
        }
    }

    /// The network an `!entry` or `except` entry takes out of its list.
    fn excluded_net(&mut self, r: &Resolved, inner: &Spanned<Item>) -> Option<(IpNet, Span)> {
        match &inner.node {
            Item::Net(n) => Some((*n, r.span)),
            other => {
                let d = r
                    .diag("bad-exclusion", format!("only addresses can be excluded, found {}", other.kind()), "not an address")
                    .with_help("exclusions are networks: `{ 10.0.0.0/8, !10.1.0.0/16 }` or `from 10.0.0.0/8 except 10.1.0.0/16`");
                self.diags.push(d);
                None
            }
        }
    }

    /// `nets` with every excluded network taken out, as the exact CIDR difference.
    fn exclude(&mut self, nets: Vec<(IpNet, Span)>, excluded: &[(IpNet, Span)]) -> Vec<(IpNet, Span)> {
        for (x, span) in excluded {
            if !nets.iter().any(|(n, _)| n.contains(x) || x.contains(n)) {
                let help = if nets.is_empty() {
                    "a list of exclusions only excludes from nothing: list the addresses to include, or write `! NET` to match all others".to_string()
                } else {
                    "an exclusion must overlap an included network of the same list; check the address".to_string()
                };
                self.diags.push(
                    Diag::error(
                        "bad-exclusion",
                        *span,
                        format!("excluding {x} removes nothing"),
                        "no included network contains it",
                    )
                    .with_help(help),
                );
            }
        }
        let had_nets = !nets.is_empty();
        let mut out = Vec::new();
        for (n, span) in nets {
            let family = Family::of(&n.addr());
            let cut = Ranges::of(
                excluded.iter().filter(|(x, _)| Family::of(&x.addr()) == family).map(|(x, _)| ranges::net_range(x)),
            );
            let left = Ranges::of([ranges::net_range(&n)]).subtract(&cut);
            out.extend(ranges::to_nets(&left, family).into_iter().map(|m| (m, span)));
        }
        if out.is_empty() && had_nets {
            if let Some((_, span)) = excluded.first() {
                self.diags.push(
                    Diag::error(
                        "bad-exclusion",
                        *span,
                        "the exclusions take out every address of the list",
                        "excludes everything",
                    )
                    .with_help("a list that matches no address is almost surely a mistake; remove the exclusion"),
                );
            }
        }
        out
    }

    /// Families an address clause can match, and the span to blame.
    fn addr_families(&self, spec: &AddrSpec) -> Vec<Family> {
        match spec {
            AddrSpec::Any | AddrSpec::Nets { negated: true, .. } | AddrSpec::Set { negated: true, .. } => {
                vec![Family::V4, Family::V6]
            }
            AddrSpec::Nets { nets, .. } => {
                let mut f: Vec<Family> = nets.iter().map(|(n, _)| Family::of(&n.addr())).collect();
                f.sort();
                f.dedup();
                f
            }
            // An empty set was already reported; don't add a family error on top.
            AddrSpec::Set { name, .. } => match self.sets.get(name) {
                Some(s) if !s.families.is_empty() => s.families.clone(),
                _ => vec![Family::V4, Family::V6],
            },
        }
    }

    fn addr_match(&self, spec: &AddrSpec, family: Family) -> AddrMatch {
        match spec {
            AddrSpec::Any => AddrMatch::Any,
            AddrSpec::Nets { negated, nets } => {
                let of_family: Vec<IpNet> =
                    nets.iter().map(|(n, _)| *n).filter(|n| Family::of(&n.addr()) == family).collect();
                if of_family.is_empty() {
                    // `from ! 10.0.0.0/8` says nothing about IPv6 sources.
                    AddrMatch::Any
                } else {
                    AddrMatch::Nets { negated: *negated, nets: IpNet::aggregate(&of_family) }
                }
            }
            // `! <admins>` where admins holds no address of this family matches all of it.
            AddrSpec::Set { negated: true, name }
                if self.sets.get(name).is_some_and(|s| !s.families.contains(&family)) =>
            {
                AddrMatch::Any
            }
            AddrSpec::Set { negated, name } => AddrMatch::Set { negated: *negated, set: nft_set_name(name, family) },
        }
    }

    fn ct_states(&mut self, v: &Value) -> Option<CtStates> {
        let mut bits = 0u8;
        for r in self.expand(v) {
            match &r.item {
                Item::Name(n) => match names::ct_state_bit(n) {
                    Some(b) => bits |= b,
                    None => {
                        let mut d =
                            r.diag("unknown-state", format!("unknown connection state `{n}`"), "not a ct state");
                        d = match names::suggest(n, names::CT_STATES.iter().map(|(n, _)| *n)) {
                            Some(s) => d.with_help(format!("did you mean `{s}`?")),
                            None => d.with_help("states are new, established, related, invalid and untracked"),
                        };
                        self.diags.push(d);
                    }
                },
                other => {
                    let d = r.diag(
                        "type-mismatch",
                        format!("expected a connection state, found {}", other.kind()),
                        "not a ct state",
                    );
                    self.diags.push(d);
                }
            }
        }
        (bits != 0).then_some(CtStates(bits))
    }

    fn icmp_types(&mut self, items: &[Resolved], proto: u8) -> Vec<u8> {
        let table = names::icmp_table(proto);
        let mut out = Vec::new();
        for r in items {
            match &r.item {
                Item::Name(n) => match table.iter().find(|(name, _)| name == n) {
                    Some((_, t)) => out.push(*t),
                    None => {
                        let other = names::icmp_table(if proto == ICMP { ICMPV6 } else { ICMP });
                        let pname = if proto == ICMP { "icmp" } else { "icmpv6" };
                        let mut d = r.diag(
                            "unknown-icmp-type",
                            format!("`{n}` is not an {pname} type"),
                            format!("unknown for {pname}"),
                        );
                        d = if other.iter().any(|(name, _)| name == n) {
                            d.with_help(format!(
                                "`{n}` is a type of {}, not {pname}",
                                if proto == ICMP { "icmpv6" } else { "icmp" }
                            ))
                        } else if let Some(s) = names::suggest(n, table.iter().map(|(n, _)| *n)) {
                            d.with_help(format!("did you mean `{s}`?"))
                        } else {
                            d.with_help("use a type name as nft spells it (echo-request, ...) or a number")
                        };
                        self.diags.push(d);
                    }
                },
                Item::Number(n) if *n <= 255 => out.push(*n as u8),
                other => {
                    let d = r.diag(
                        "type-mismatch",
                        format!("expected an ICMP type, found {}", other.kind()),
                        "not an ICMP type",
                    );
                    self.diags.push(d);
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    fn rule(&mut self, idx: usize, r: &ast::RuleAst) {
        let hook = match r.direction.node {
            Direction::In => Hook::Input,
            Direction::Out => Hook::Output,
            Direction::Forward => Hook::Forward,
        };
        let c = self.clauses(&r.direction, &r.opts);
        let origin = self.origin(r.span, idx);
        let Some(shapes) = self.shapes(&c, r.span) else { return };
        if let Some(span) = c.early {
            if !self.early_allowed(r, &c, span) {
                return;
            }
        }

        let state = c.state.and_then(|v| self.ct_states(v));
        let verb = match r.action.node {
            Action::Pass => "accept",
            Action::Block => "drop",
            Action::Reject => "reject",
        };
        let log = c.log.map(|(custom, span)| {
            let prefix = format!("{} {}", origin.id, log_tail(verb, custom));
            self.log_prefix_from(prefix, span)
        });
        let label = c.label.map(|(l, span)| {
            if origin.id.len() + 1 + l.len() > MAX_COMMENT {
                self.diags.push(
                    Diag::error(
                        "long-label",
                        span,
                        "label is too long for an nft comment",
                        format!("{} characters", l.len()),
                    )
                    .with_help(format!("origin and label together must fit in {MAX_COMMENT} bytes")),
                );
            }
            l.to_string()
        });
        if let Some((l, span)) = c.limit {
            if l.burst == Some(0) {
                self.diags.push(
                    Diag::error("bad-limit", span, "a burst of 0 lets no packet through", "burst is 0")
                        .with_help("leave `burst` out for nft's default (5), or give at least 1"),
                );
            }
            if l.rate == 0 {
                self.diags.push(
                    Diag::error("bad-limit", span, "a rate limit of 0 never matches", "rate is 0")
                        .with_help("use `block` to drop all such packets, or a positive rate"),
                );
            }
        }
        let reject = match c.reject_with {
            None => None,
            Some((kind, code, span)) => match self.reject_with(r.action.node, kind, code, span, &shapes) {
                Some(how) => Some(how),
                None => return,
            },
        };
        if c.expires.is_some_and(|d| !self.expiry("rule", origin.id.clone(), d, r.span)) {
            return;
        }
        for shape in shapes {
            let limit = c.limit.map(|(l, _)| Limit {
                rate: l.rate,
                unit: l.unit,
                burst: l.burst,
                per_source: l.per_source.then(|| {
                    self.meters += 1;
                    format!("rl{}_{}", self.meters, shape.family.map_or("all", family_suffix))
                }),
            });
            let matches = Match { ct_state: state, ..shape };
            let rule = Rule {
                origin: origin.clone(),
                matches,
                action: r.action.node,
                limit,
                log: log.clone(),
                counter: c.counter.unwrap_or(true),
                label: label.clone(),
                reject,
                early: c.early.is_some(),
            };
            if rule.early {
                // Before routing: the packet may be for this host or forwarded.
                self.out_rule(Hook::Input, rule.clone());
                self.out_rule(Hook::Forward, rule);
            } else {
                self.out_rule(hook, rule);
            }
        }
    }

    /// `early` rules drop in prerouting: no conntrack state and no output interface yet.
    fn early_allowed(&mut self, r: &ast::RuleAst, c: &Clauses<'_>, span: Span) -> bool {
        let problem = if r.action.node != Action::Block {
            Some((
                "an early rule can only `block`",
                "packets an early rule accepts still meet the filter chains; write `block`",
            ))
        } else if r.direction.node == Direction::Out {
            Some(("an `out` rule cannot be early", "early rules see arriving packets (in and forward) before routing"))
        } else if c.state.is_some() {
            Some((
                "an early rule cannot match `state`",
                "early rules run before conntrack, so no packet has a state yet",
            ))
        } else if c.oif.is_some() {
            Some(("an early rule cannot match `out on`", "early rules run before routing chooses an output interface"))
        } else {
            None
        };
        match problem {
            None => true,
            Some((message, help)) => {
                self.diags.push(
                    Diag::error("early-rule", span, message, "early here")
                        .with_related(r.action.span, "rule")
                        .with_help(help),
                );
                false
            }
        }
    }

    /// Checks `with ...` against the rule's verdict, protocols and families.
    fn reject_with(
        &mut self,
        action: Action,
        kind: &str,
        code: Option<&str>,
        span: Span,
        shapes: &[Match],
    ) -> Option<RejectWith> {
        let fail = |message: String, label: &str, help: &str| {
            Diag::error("reject-with", span, message, label.to_string()).with_help(help.to_string())
        };
        if action != Action::Reject {
            self.diags.push(fail(
                format!("`with {kind}` on a {} rule", action.keyword()),
                "only reject rules answer",
                "make it a `reject` rule, or remove `with ...`",
            ));
            return None;
        }
        let Some(code) = code else {
            if shapes.iter().all(|s| s.proto == Some(names::TCP)) {
                return Some(RejectWith::TcpReset);
            }
            self.diags.push(fail(
                "`with tcp reset` on a rule that is not TCP-only".into(),
                "only TCP can be reset",
                "add `proto tcp`, or answer other protocols with `with icmpx port-unreachable`",
            ));
            return None;
        };
        let codes = names::reject_codes(kind);
        let Some(code) = codes.iter().copied().find(|c| *c == code) else {
            let hint = match names::suggest(code, codes.iter().copied()) {
                Some(s) => format!("did you mean `{s}`? {kind} codes: {}", codes.join(", ")),
                None => format!("{kind} codes: {}", codes.join(", ")),
            };
            self.diags.push(fail(format!("`{code}` is not an {kind} reject code"), "unknown code", &hint));
            return None;
        };
        let only = match kind {
            "icmp" => Some(Family::V4),
            "icmpv6" => Some(Family::V6),
            _ => None,
        };
        if let Some(family) = only {
            if shapes.iter().any(|s| s.family != Some(family)) {
                let other = if family == Family::V4 { "IPv6" } else { "IPv4" };
                self.diags.push(fail(
                    format!(
                        "`with {kind}` answers {} only, but this rule also matches {other}",
                        if family == Family::V4 { "IPv4" } else { "IPv6" }
                    ),
                    "family-specific answer",
                    &format!("add `{}` to the rule, or use `icmpx`, which answers both families", family.name()),
                ));
                return None;
            }
        }
        Some(match kind {
            "icmp" => RejectWith::Icmp(code),
            "icmpv6" => RejectWith::Icmpv6(code),
            _ => RejectWith::Icmpx(code),
        })
    }

    /// Appends to a chain; early rules go after the chain's other early rules,
    /// before every rule that is not early (the prerouting chain runs first).
    fn out_rule(&mut self, hook: Hook, rule: Rule) {
        if let Some(ch) = self.out.chains.iter_mut().find(|c| c.hook == hook) {
            let at = if rule.early { ch.rules.iter().take_while(|r| r.early).count() } else { ch.rules.len() };
            ch.rules.insert(at, rule);
        }
    }

    /// The header matches of a rule, one per protocol and family it expands to.
    fn shapes(&mut self, c: &Clauses<'_>, span: Span) -> Option<Vec<Match>> {
        let errors_before = self.diags.len();
        let proto_list = c.proto.map(|v| self.protos(v));
        let src = c.from.map_or(AddrSpec::Any, |(h, _)| self.addrs(h));
        let dst = c.to.map_or(AddrSpec::Any, |(h, _)| self.addrs(h));
        let sports = c.from.and_then(|(h, _)| h.port.as_ref()).map(|p| (p.negated, self.ports(&p.value), p.value.span));
        let dports = c.to.and_then(|(h, _)| h.port.as_ref()).map(|p| (p.negated, self.ports(&p.value), p.value.span));
        let icmp_items = c.icmp.map(|v| (self.expand(v), v.span));
        if self.diags.len() > errors_before {
            return None;
        }

        // Protocols: the proto clause, else the services named in port lists.
        let service_protos: BTreeSet<u8> =
            sports.iter().chain(dports.iter()).flat_map(|(_, items, _)| items.iter().filter_map(|p| p.proto)).collect();
        let protos: Vec<Option<u8>> = match &proto_list {
            Some(list) => {
                for (_, items, _) in sports.iter().chain(dports.iter()) {
                    for it in items {
                        if let Some(p) = it.proto.filter(|p| !list.iter().any(|(q, _)| q == p)) {
                            self.diags.push(
                                Diag::error(
                                    "proto-conflict",
                                    it.span,
                                    format!("service is {} but the rule is for another protocol", names::proto_name(p)),
                                    "protocol not in `proto`",
                                )
                                .with_related(c.proto.map_or(span, |v| v.span), "rule's protocols")
                                .with_help("add the protocol to `proto`, or drop `proto` and let the services decide"),
                            );
                        }
                    }
                }
                list.iter().map(|(p, _)| Some(*p)).collect()
            }
            None if !service_protos.is_empty() => service_protos.iter().map(|p| Some(*p)).collect(),
            None => {
                if let Some((_, _, pspan)) = sports.as_ref().or(dports.as_ref()) {
                    self.diags.push(
                        Diag::error("port-without-proto", *pspan, "a port needs a protocol", "which protocol?")
                            .with_help("add `proto tcp` (or udp, sctp), or name services: `port { tcp 80, udp 53 }`"),
                    );
                    return None;
                }
                if let Some((_, ispan)) = &icmp_items {
                    self.diags.push(
                        Diag::error(
                            "icmp-without-proto",
                            *ispan,
                            "`icmp-type` needs `proto icmp` or `proto icmpv6`",
                            "which ICMP?",
                        )
                        .with_help("add `proto icmp` for IPv4 or `proto icmpv6` for IPv6"),
                    );
                    return None;
                }
                vec![None]
            }
        };

        let mut out = Vec::new();
        for proto in protos {
            let port_span = |list: &Option<(bool, Vec<PortItem>, Span)>| list.as_ref().map(|(_, _, s)| *s);
            if let Some(p) = proto.filter(|p| !names::has_ports(*p)) {
                if let Some(pspan) = port_span(&sports).or(port_span(&dports)) {
                    self.diags.push(
                        Diag::error(
                            "port-on-portless",
                            pspan,
                            format!("{} has no ports", names::proto_name(p)),
                            "port given here",
                        )
                        .with_related(c.proto.map_or(span, |v| v.span), "protocol chosen here")
                        .with_help("ports exist for tcp, udp, sctp and udplite only"),
                    );
                    return None;
                }
            }
            let pick = |list: &Option<(bool, Vec<PortItem>, Span)>| -> Option<Option<PortMatch>> {
                let Some((negated, items, _)) = list else { return Some(None) };
                let ranges: Vec<(u16, u16)> =
                    items.iter().filter(|i| i.proto.is_none() || i.proto == proto).map(|i| (i.lo, i.hi)).collect();
                if ranges.is_empty() {
                    return None; // no port of this protocol in the list
                }
                Some(Some(PortMatch { negated: *negated, ranges: merge_ranges(ranges) }))
            };
            let (Some(sport), Some(dport)) = (pick(&sports), pick(&dports)) else { continue };

            let icmp_types = match (&icmp_items, proto) {
                (None, _) => None,
                (Some((items, _)), Some(p @ (ICMP | ICMPV6))) => Some(self.icmp_types(items, p)),
                (Some((_, ispan)), p) => {
                    self.diags.push(
                        Diag::error(
                            "icmp-on-non-icmp",
                            *ispan,
                            format!("`icmp-type` on {}", p.map_or("any protocol".into(), names::proto_name)),
                            "only for icmp/icmpv6",
                        )
                        .with_help("use `proto icmp` or `proto icmpv6` with `icmp-type`"),
                    );
                    return None;
                }
            };

            let families = self.families(c, proto, &src, &dst, span)?;
            for family in families {
                out.push(Match {
                    family,
                    iif: c.iif.as_ref().map(|(i, _)| i.clone()),
                    oif: c.oif.as_ref().map(|(i, _)| i.clone()),
                    proto,
                    src: family.map_or(AddrMatch::Any, |f| self.addr_match(&src, f)),
                    dst: family.map_or(AddrMatch::Any, |f| self.addr_match(&dst, f)),
                    sport: sport.clone(),
                    dport: dport.clone(),
                    icmp_types: icmp_types.clone(),
                    ct_state: None,
                });
            }
        }
        if self.diags.len() > errors_before {
            return None;
        }
        if out.is_empty() {
            let pspan = sports.as_ref().or(dports.as_ref()).map_or(span, |(_, _, s)| *s);
            self.diags.push(
                Diag::error(
                    "no-port-for-proto",
                    pspan,
                    "no port in this list fits the rule's protocols",
                    "ports of other protocols",
                )
                .with_help("each service's protocol must be one of the rule's `proto`"),
            );
            return None;
        }
        Some(out)
    }

    /// Address families a rule is expanded to: `[None]` when nothing in it
    /// depends on the family, else each family all its clauses allow.
    fn families(
        &mut self,
        c: &Clauses<'_>,
        proto: Option<u8>,
        src: &AddrSpec,
        dst: &AddrSpec,
        span: Span,
    ) -> Option<Vec<Option<Family>>> {
        let proto_family = match proto {
            Some(ICMP) => Some(Family::V4),
            Some(ICMPV6) => Some(Family::V6),
            _ => None,
        };
        let per_source = c.limit.is_some_and(|(l, _)| l.per_source);
        let constrained = c.family.is_some()
            || proto_family.is_some()
            || per_source
            || !matches!(src, AddrSpec::Any)
            || !matches!(dst, AddrSpec::Any);
        if !constrained {
            return Some(vec![None]);
        }
        let mut allowed = vec![Family::V4, Family::V6];
        let mut reasons: Vec<(Span, String)> = Vec::new();
        if let Some((f, fspan)) = c.family {
            allowed.retain(|x| *x == f);
            reasons.push((fspan, format!("rule is {} only", f.name())));
        }
        if let Some(f) = proto_family {
            allowed.retain(|x| *x == f);
            reasons.push((c.proto.map_or(span, |v| v.span), format!("protocol is {} only", f.name())));
        }
        for (spec, clause) in [(src, c.from), (dst, c.to)] {
            let fams = self.addr_families(spec);
            let Some((_, cspan)) = clause else { continue };
            let before = allowed.clone();
            allowed.retain(|x| fams.contains(x));
            if allowed.is_empty() {
                let what = match fams.as_slice() {
                    [f] => format!("{} addresses", f.name()),
                    _ => "no addresses".to_string(),
                };
                let mut d = Diag::error(
                    "family-mismatch",
                    cspan,
                    format!(
                        "{what} in a rule that can only be {}",
                        before.iter().map(|f| f.name()).collect::<Vec<_>>().join("/")
                    ),
                    format!("{what} here"),
                )
                .with_help("IPv4 and IPv6 never match the same packet; split this into two rules or fix the address");
                for (rspan, why) in &reasons {
                    d = d.with_related(*rspan, why.clone());
                }
                self.diags.push(d);
                return None;
            }
            if fams.len() == 1 {
                reasons.push((cspan, format!("{} addresses", fams[0].name())));
            }
        }
        Some(allowed.into_iter().map(Some).collect())
    }

    fn nat(&mut self, idx: usize, n: &ast::NatAst) {
        let kind = n.kind.node;
        let want = if kind == NatKind::Dnat { Direction::In } else { Direction::Out };
        if n.direction.node != want {
            let (w, why) = if kind == NatKind::Dnat {
                ("in", "destination NAT happens as packets arrive (prerouting)")
            } else {
                ("out", "source NAT happens as packets leave (postrouting)")
            };
            self.diags.push(
                Diag::error(
                    "nat-direction",
                    n.direction.span,
                    format!("{} must be an `{w}` rule", nat_keyword(kind)),
                    format!("should be `{w}`"),
                )
                .with_help(why),
            );
            return;
        }
        for opt in &n.opts {
            if matches!(
                opt.node,
                RuleOpt::State(_)
                    | RuleOpt::Limit(_)
                    | RuleOpt::Log(_)
                    | RuleOpt::IcmpType(_)
                    | RuleOpt::RejectWith { .. }
                    | RuleOpt::Early
            ) {
                self.diags.push(
                    Diag::error(
                        "nat-option",
                        opt.span,
                        format!("`{}` is not available on NAT rules", opt.node.keyword()),
                        "not for NAT",
                    )
                    .with_help(
                        "NAT rules only choose packets (interfaces, protocol, addresses, ports) and a translation",
                    ),
                );
                return;
            }
        }
        let c = self.clauses(&n.direction, &n.opts);
        let origin = self.origin(n.span, idx);
        let target = match (&n.target, kind) {
            (Some(t), NatKind::Masquerade) => {
                self.diags.push(
                    Diag::error("nat-target", t.span, "masquerade takes no target address", "remove this").with_help(
                        "masquerade uses the outgoing interface's address; use `snat ... -> ADDR` for a fixed one",
                    ),
                );
                return;
            }
            (None, NatKind::Masquerade) => None,
            (None, _) => {
                self.diags.push(
                    Diag::error(
                        "nat-target",
                        n.span,
                        format!("{} needs a target", nat_keyword(kind)),
                        "no `-> address`",
                    )
                    .with_help(if kind == NatKind::Dnat {
                        "add `-> 192.168.1.10 port 80`"
                    } else {
                        "add `-> 203.0.113.7`"
                    }),
                );
                return;
            }
            (Some(t), _) => match self.nat_target(t, kind) {
                Some(x) => Some(x),
                None => return,
            },
        };
        let Some(mut shapes) = self.shapes(&c, n.span) else { return };
        let action = match target {
            None => NatAction::Masquerade,
            Some((addr, port)) => {
                let fam = Family::of(&addr);
                shapes.retain(|s| s.family.is_none_or(|f| f == fam));
                if port.is_some() && shapes.iter().any(|s| !s.proto.is_some_and(names::has_ports)) {
                    self.diags.push(
                        Diag::error(
                            "nat-port",
                            n.target.as_ref().map_or(n.span, |t| t.span),
                            "a port translation needs a protocol with ports",
                            "port without protocol",
                        )
                        .with_help("add `proto tcp` (or udp) to the rule"),
                    );
                    return;
                }
                for s in &mut shapes {
                    s.family = Some(fam);
                }
                if kind == NatKind::Dnat {
                    NatAction::Dnat { addr, port }
                } else {
                    NatAction::Snat { addr }
                }
            }
        };
        if shapes.is_empty() {
            self.diags.push(
                Diag::error(
                    "family-mismatch",
                    n.span,
                    "the NAT target's family matches none of the rule's addresses",
                    "no family fits",
                )
                .with_help("an IPv4 target can only translate IPv4 packets"),
            );
            return;
        }
        if c.expires.is_some_and(|d| !self.expiry("rule", origin.id.clone(), d, n.span)) {
            return;
        }
        for matches in shapes {
            self.out.nat.push(NatRule { origin: origin.clone(), matches, action: action.clone() });
        }
    }

    fn nat_target(&mut self, t: &ast::NatTarget, kind: NatKind) -> Option<(IpAddr, Option<u16>)> {
        let items = self.expand(&t.addr);
        let addr = match items.as_slice() {
            [r] => match &r.item {
                Item::Net(n) if n.prefix_len() == n.max_prefix_len() => n.addr(),
                other => {
                    self.diags.push(r.diag(
                        "nat-target",
                        format!("a NAT target is one address, found {}", other.kind()),
                        "not a single address",
                    ));
                    return None;
                }
            },
            _ => {
                self.diags.push(Diag::error("nat-target", t.addr.span, "a NAT target is one address", "list given"));
                return None;
            }
        };
        let port = match &t.port {
            None => None,
            Some(v) if kind == NatKind::Dnat => {
                let ports = self.ports(v);
                match ports.as_slice() {
                    [p] if p.lo == p.hi => Some(p.lo),
                    [] => return None,
                    _ => {
                        self.diags.push(Diag::error(
                            "nat-target",
                            v.span,
                            "a NAT target has one port",
                            "several ports",
                        ));
                        return None;
                    }
                }
            }
            Some(v) => {
                self.diags.push(
                    Diag::error("nat-target", v.span, "snat does not translate ports here", "remove the port")
                        .with_help("only dnat takes `port`"),
                );
                return None;
            }
        };
        Some((addr, port))
    }

    fn log_prefix_from(&mut self, prefix: String, span: Span) -> String {
        let full = format!("{} {prefix}", self.out.table);
        if full.len() > MAX_LOG_PREFIX {
            self.diags.push(
                Diag::error("long-log-prefix", span, "log prefix is too long", format!("{} bytes", full.len()))
                    .with_help(format!("nft log prefixes are at most {MAX_LOG_PREFIX} bytes; shorten the log text")),
            );
        }
        full
    }

    fn finish(mut self) -> Result<(Ruleset, Vec<Unused>), Vec<Diag>> {
        self.check_adaptive_set();
        for ch in &mut self.out.chains {
            if let Some((p, _)) = self.policies.remove(&ch.hook) {
                ch.policy = p;
            }
        }
        if !self.diags.is_empty() {
            self.diags.sort_by_key(|d| d.span);
            return Err(self.diags);
        }
        let mut unused: Vec<Unused> = self
            .defines
            .iter()
            .filter(|(name, _)| !self.used.contains(&format!("${name}")))
            .map(|(name, (span, _))| Unused { kind: "define", name: name.clone(), span: *span })
            .chain(
                self.sets
                    .iter()
                    .filter(|(name, _)| !self.used.contains(&format!("<{name}>")))
                    .map(|(name, info)| Unused { kind: "set", name: name.clone(), span: info.span }),
            )
            .collect();
        unused.sort_by_key(|u| u.span);
        Ok((self.out, unused))
    }
}

/// Input and forward drop by default, output passes: the usual server stance.
/// Counted like every rule, so `hits` shows what the default decided.
fn builtin_policy(hook: Hook) -> DefaultPolicy {
    let action = if hook == Hook::Output { Action::Pass } else { Action::Block };
    DefaultPolicy { action, log: None, counter: true, origin: None }
}

fn log_tail(verb: &str, custom: Option<&str>) -> String {
    match custom {
        Some(text) => format!("{verb} {text} "),
        None => format!("{verb} "),
    }
}

pub fn nft_set_name(name: &str, family: Family) -> String {
    format!("{name}_{}", family_suffix(family))
}

fn family_suffix(f: Family) -> &'static str {
    match f {
        Family::V4 => "v4",
        Family::V6 => "v6",
    }
}

fn nat_keyword(k: NatKind) -> &'static str {
    match k {
        NatKind::Masquerade => "masquerade",
        NatKind::Snat => "snat",
        NatKind::Dnat => "dnat",
    }
}

fn merge_ranges(mut ranges: Vec<(u16, u16)>) -> Vec<(u16, u16)> {
    ranges.sort_unstable();
    let mut out: Vec<(u16, u16)> = Vec::new();
    for (lo, hi) in ranges {
        match out.last_mut() {
            Some(last) if u32::from(lo) <= u32::from(last.1) + 1 => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out
}

fn well_known_port(name: &str) -> Option<u16> {
    Some(match name {
        "ssh" => 22,
        "smtp" => 25,
        "dns" | "domain" => 53,
        "http" | "www" => 80,
        "ntp" => 123,
        "https" => 443,
        "imaps" => 993,
        "mysql" => 3306,
        "postgres" | "postgresql" => 5432,
        "redis" => 6379,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::merge_ranges;
    use crate::ir::{compile, AddrMatch, SetKind};

    #[test]
    fn a_set_whose_entries_all_expired_is_kept_empty() {
        let c = compile("t.pf", "set old = { 192.0.2.1 expires 2020-01-01 }\nblock in from <old>\n").expect("compiles");
        let kinds: Vec<_> = c.ruleset.sets.iter().map(|s| (s.nft_name.as_str(), &s.kind)).collect();
        let empty = SetKind::Static { elements: vec![] };
        assert_eq!(kinds, vec![("old_v4", &empty), ("old_v6", &empty)]);
        assert_eq!(c.ruleset.chains[0].rules.len(), 2, "the rule stays, matching nothing");
    }

    #[test]
    fn exclusions_lower_to_the_exact_difference() {
        let nets = |text: &str| {
            let c = compile("t.pf", text).expect("compiles");
            match &c.ruleset.chains[0].rules[0].matches.src {
                AddrMatch::Nets { negated, nets } => {
                    (*negated, nets.iter().map(ToString::to_string).collect::<Vec<_>>())
                }
                other => panic!("{other:?}"),
            }
        };
        let want = (
            false,
            vec!["10.0.0.0/9".to_string(), "10.128.0.0/10".into(), "10.192.0.0/11".into(), "10.224.0.0/12".into()],
        );
        assert_eq!(nets("pass in from { 10.0.0.0/8, !10.240.0.0/12 }\n"), want);
        assert_eq!(nets("pass in from 10.0.0.0/8 except 10.240.0.0/12\n"), want);
        assert_eq!(nets("define x = { 10.0.0.0/8, !10.240.0.0/12 }\npass in from $x\n"), want);
        // `any except X` is `! X`; `! A except B` negates the difference.
        assert_eq!(nets("pass in from any except 10.0.0.0/8\n"), (true, vec!["10.0.0.0/8".into()]));
        assert!(nets("pass in from ! 10.0.0.0/8 except 10.240.0.0/12\n").0);
    }

    #[test]
    fn rules_and_default_policies_count_unless_nocounter() {
        let c = crate::ir::compile(
            "c.pf",
            "policy input block nocounter\npass in proto tcp\npass in proto udp nocounter\n",
        )
        .expect("compiles");
        let input = c.ruleset.chain(crate::ir::Hook::Input);
        assert_eq!(input.rules.iter().map(|r| r.counter).collect::<Vec<_>>(), [true, false]);
        assert!(!input.policy.counter);
        assert!(c.ruleset.chain(crate::ir::Hook::Output).policy.counter, "built-in defaults count");
        let err = crate::ir::compile("c.pf", "pass in proto tcp counter nocounter\n").expect_err("contradiction");
        assert_eq!(err.diags[0].code, "duplicate-clause");
        assert!(err.diags[0].message.contains("`counter`/`nocounter`"), "{}", err.diags[0].message);
    }

    #[test]
    fn merges_adjacent_and_overlapping_port_ranges() {
        assert_eq!(merge_ranges(vec![(80, 80), (81, 90), (443, 443), (85, 100)]), vec![(80, 100), (443, 443)]);
        assert_eq!(merge_ranges(vec![(65535, 65535), (0, 0)]), vec![(0, 0), (65535, 65535)]);
    }
}

#[cfg(test)]
mod adaptive_tests {
    use super::*;

    const BASE: &str = "set attackers dynamic\nblock in from <attackers>\npass in proto tcp to port 22\n";

    #[test]
    fn adaptive_block_with_defaults_and_options() {
        let c = compile("p.pf", &format!("{BASE}adaptive {{ set attackers; }}\n")).expect("compiles");
        let a = c.ruleset.adaptive.expect("adaptive");
        assert_eq!(
            (a.mode, a.set.as_str(), a.timeout, a.max_timeout),
            (AdaptiveMode::Observe, "attackers", 600, 86_400)
        );
        assert_eq!((a.max_blocks, a.window, a.min_confidence, a.thresholds), (10, 600, 50, None));
        assert_eq!(a.origin.id, "p.pf:4");
        let text = format!(
            "{BASE}adaptive {{\n mode block; set attackers; thresholds \"t.yaml\"; timeout 1m; max-timeout 1h;\n max-blocks 3; window 2m; min-confidence 80;\n}}\n"
        );
        let a = compile("p.pf", &text).expect("compiles").ruleset.adaptive.expect("adaptive");
        assert_eq!((a.mode, a.timeout, a.max_timeout, a.max_blocks), (AdaptiveMode::Block, 60, 3600, 3));
        assert_eq!((a.window, a.min_confidence, a.thresholds.as_deref()), (120, 80, Some("t.yaml")));
        // Without the block, nothing adaptive.
        assert!(compile("p.pf", BASE).expect("compiles").ruleset.adaptive.is_none());
    }

    #[test]
    fn adaptive_needs_a_dynamic_set_that_a_rule_blocks() {
        let codes =
            |text: &str| compile("p.pf", text).err().map(|e| e.diags.iter().map(|d| d.code).collect::<Vec<_>>());
        assert_eq!(codes("adaptive { mode block; }\npass in on lo\n"), Some(vec!["adaptive-set"]));
        assert_eq!(codes("set a = { 10.0.0.1 }\nblock in from <a>\nadaptive { set a; }\n"), Some(vec!["adaptive-set"]));
        assert_eq!(
            codes(&format!("{BASE}adaptive {{ set attackers; }}\nadaptive {{ }}\n")),
            Some(vec!["duplicate-adaptive"])
        );
        assert_eq!(codes(&format!("{BASE}adaptive {{ window 0s; }}\n")), Some(vec!["adaptive-set", "adaptive-option"]));
    }
}
