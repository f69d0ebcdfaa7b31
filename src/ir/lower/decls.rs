//! Declarations: table, chain priorities, sets, feeds, `adaptive` and `allow-always`.

use super::*;
use crate::ir::feed_options::{canonical_key, check_feed, FeedOptions, Format};

impl<'a> Lowerer<'a> {
    /// First pass: names that may be used before their statement (sets, feeds)
    /// and every define (for better "used before defined" messages).
    pub(super) fn declare(&mut self, stmts: &[Stmt]) {
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

    pub(super) fn declare_set(&mut self, name: &Spanned<String>, families: Vec<Family>) {
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

    /// `priority N`: after conntrack (-200) and, for input, within nft's
    /// sensible range; before conntrack `state` would never see a state.
    pub(super) fn chain_priority(&mut self, hook: Hook, p: &Spanned<i64>) {
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

    pub(super) fn table_stmt(&mut self, name: &Spanned<String>) {
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

    pub(super) fn is_first_declaration(&self, name: &Spanned<String>) -> bool {
        self.sets.get(&name.node).is_some_and(|s| s.span == name.span)
    }

    pub(super) fn set_stmt(&mut self, idx: usize, name: &Spanned<String>, body: &SetBody, span: Span) {
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
                let items = self.expand_entries(value);
                let mut nets = Vec::new();
                let mut excluded = Vec::new();
                let mut timeouts = HashMap::new();
                for r in items {
                    match r.item {
                        Item::Net(n) => {
                            nets.push((n, r.span));
                            if let Some(t) = r.timeout {
                                timeouts.insert(r.span, t.seconds);
                            }
                        }
                        Item::Except(ref inner) => {
                            if let Some(span) = r.timeout.and_then(|t| t.written) {
                                self.diags.push(
                                    Diag::error(
                                        "entry-timeout",
                                        span,
                                        "an exclusion cannot time out",
                                        "timeout on an exclusion",
                                    )
                                    .with_help("put the timeout on the entry the exclusion is taken from"),
                                );
                            }
                            excluded.extend(self.excluded_net(&r, inner));
                        }
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
                let (timed, nets): (Vec<_>, Vec<_>) =
                    nets.into_iter().partition(|(_, span)| timeouts.contains_key(span));
                let timed: Vec<TimedNet> =
                    timed.into_iter().map(|(net, span)| TimedNet { net, timeout: timeouts[&span] }).collect();
                let (v4, v6): (Vec<IpNet>, Vec<IpNet>) =
                    nets.into_iter().map(|(n, _)| n).partition(|n| Family::of(&n.addr()) == Family::V4);
                // Every entry expired: the set stays, empty, so its rules match nothing.
                let all_expired = self.out.expiries[expiries_before..].iter().any(|e| e.expired);
                let is_v4 = |t: &&TimedNet| Family::of(&t.net.addr()) == Family::V4;
                let (timed_v4, timed_v6): (Vec<&TimedNet>, Vec<&TimedNet>) = timed.iter().partition(is_v4);
                let empty = v4.is_empty() && v6.is_empty() && timed.is_empty();
                if empty && self.diags.len() == errors_before && !all_expired {
                    self.diags.push(
                        Diag::error("empty-set", value.span, format!("set `{}` is empty", name.node), "no elements")
                            .with_help("for a set filled at run time write `set NAME dynamic`"),
                    );
                }
                let mut families = Vec::new();
                for (family, nets, timed) in [(Family::V4, v4, timed_v4), (Family::V6, v6, timed_v6)] {
                    if nets.is_empty() && timed.is_empty() && !empty {
                        continue;
                    }
                    families.push(family);
                    let elements = IpNet::aggregate(&nets);
                    let timed = disjoint_timed(&elements, timed, family);
                    self.out.sets.push(SetDef {
                        name: name.node.clone(),
                        nft_name: nft_set_name(&name.node, family),
                        family,
                        kind: SetKind::Static { elements, timed },
                        origin: origin.clone(),
                    });
                }
                if let Some(info) = self.sets.get_mut(&name.node) {
                    info.families = families;
                }
            }
        }
    }

    pub(super) fn feed_stmt(
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
        let mut options = FeedOptions::default();
        let mut seen: HashMap<&str, Span> = HashMap::new();
        for (k, v) in opts {
            let key = canonical_key(&k.node);
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
            if let Err(bad) = options.set(&k.node, &v.node) {
                self.diags.push(
                    Diag::error(
                        "feed-option",
                        v.span,
                        format!("bad `{}` for feed `{}`: {}", k.node, name.node, bad.message),
                        bad.label,
                    )
                    .with_help(bad.help),
                );
            }
        }
        if let (Some((k, _)), false) =
            (opts.iter().find(|(k, _)| k.node == "column"), options.format == Some(Format::Csv))
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
        let bad_provider = opts.iter().any(|(k, _)| k.node == "provider") && options.provider.is_none();
        for p in check_feed(&name.node, &options) {
            if bad_provider && p.code == "feed-source" {
                continue;
            }
            let at = p
                .option
                .and_then(|o| opts.iter().find(|(k, _)| canonical_key(&k.node) == o))
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

    pub(super) fn adaptive_stmt(
        &mut self,
        idx: usize,
        opts: &[(Spanned<String>, Spanned<ast::FeedValue>)],
        span: Span,
    ) {
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
    pub(super) fn check_adaptive_set(&mut self) {
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

    pub(super) fn allow_always(&mut self, value: &Value) {
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
}

/// Timed entries as nft can hold them beside `elements` in one interval set:
/// no overlaps, and an address covered by several entries stays as long as
/// the longest-lived of them (a permanent entry wins over any timeout).
fn disjoint_timed(elements: &[IpNet], mut timed: Vec<&TimedNet>, family: Family) -> Vec<TimedNet> {
    timed.sort_by_key(|t| std::cmp::Reverse(t.timeout));
    let mut covered = Ranges::of(elements.iter().map(ranges::net_range));
    let mut out = Vec::new();
    for t in timed {
        let left = Ranges::of([ranges::net_range(&t.net)]).subtract(&covered);
        out.extend(ranges::to_nets(&left, family).into_iter().map(|net| TimedNet { net, timeout: t.timeout }));
        covered = covered.union(&left);
    }
    out.sort();
    out
}
