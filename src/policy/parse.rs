//! pest parse tree -> [`ast`](super::ast), with literal validation.

use pest::iterators::{Pair, Pairs};
use pest::Parser;

use super::ast::*;
use super::literal;
use crate::diag::{Diag, FileId, Span};

#[derive(pest_derive::Parser)]
#[grammar = "../grammar/policy.pest"]
struct PolicyParser;

/// Parses one file's text into statements. Syntax errors stop at the first;
/// literal errors (bad address, port out of range) are all collected.
pub fn parse_file(file: FileId, text: &str) -> Result<Vec<Stmt>, Vec<Diag>> {
    let pairs = PolicyParser::parse(Rule::file, text).map_err(|e| vec![syntax_error(file, text, e)])?;
    let mut b = Builder { file, errors: Vec::new() };
    let mut stmts = Vec::new();
    for pair in pairs.flatten().take(1).flat_map(|p| p.into_inner()) {
        if pair.as_rule() == Rule::EOI {
            continue;
        }
        if let Some(s) = b.stmt(pair) {
            stmts.push(s);
        }
    }
    if b.errors.is_empty() {
        Ok(stmts)
    } else {
        Err(b.errors)
    }
}

fn syntax_error(file: FileId, text: &str, e: pest::error::Error<Rule>) -> Diag {
    let (start, end) = match e.location {
        pest::error::InputLocation::Pos(p) => (p, p),
        pest::error::InputLocation::Span((s, e)) => (s, e),
    };
    // Point at the whole offending word, not an empty caret.
    let word_end = text[start..]
        .find(|c: char| c.is_whitespace() || c == ',' || c == '}' || c == '{')
        .map_or(text.len(), |n| start + n)
        .max(end);
    let found = &text[start..word_end];
    let expected = match &e.variant {
        pest::error::ErrorVariant::ParsingError { positives, .. } => describe_expected(positives),
        pest::error::ErrorVariant::CustomError { message } => message.clone(),
    };
    let (message, label) = if found.is_empty() {
        ("unexpected end of file".to_string(), format!("expected {expected}"))
    } else {
        (format!("unexpected `{found}`"), format!("expected {expected}"))
    };
    let mut d = Diag::error("syntax", Span::new(file, start, word_end), message, label);
    if let Some(help) = syntax_help(found) {
        d = d.with_help(help);
    }
    d
}

fn describe_expected(rules: &[Rule]) -> String {
    let mut words: Vec<&str> = rules
        .iter()
        .map(|r| match r {
            Rule::action => "a rule (pass, block, reject)",
            Rule::nat_action => "a NAT rule (masquerade, snat, dnat)",
            Rule::table_stmt => "`table`",
            Rule::define_stmt => "`define`",
            Rule::include_stmt => "`include`",
            Rule::set_stmt => "`set`",
            Rule::feed_stmt => "`feed`",
            Rule::provider_stmt => "`provider`",
            Rule::allow_stmt | Rule::kw_allow_always => "`allow-always`",
            Rule::adaptive_stmt | Rule::kw_adaptive => "`adaptive`",
            Rule::adaptive_opt | Rule::adaptive_key => {
                "an adaptive option (mode, set, thresholds, timeout, max-timeout, max-blocks, window, min-confidence)"
            }
            Rule::policy_stmt => "`policy`",
            Rule::test_stmt => "`test`",
            Rule::flowtable_stmt | Rule::kw_flowtable => "`flowtable`",
            Rule::direction => "a direction (in, out, forward)",
            Rule::hook => "a hook (input, forward, output)",
            Rule::value | Rule::item | Rule::list => "a value",
            Rule::name => "a name",
            Rule::string => "a quoted string",
            Rule::number => "a number",
            Rule::duration => "a duration (30s, 5m, 1h, 1d)",
            Rule::date => "a date (2026-12-31)",
            Rule::priority => "`priority`",
            Rule::signed => "a number",
            Rule::except_clause => "`except`",
            Rule::reject_icmp | Rule::tcp_reset => "`icmp`, `icmpv6`, `icmpx` or `tcp reset`",
            Rule::rate => "a rate (10/minute)",
            Rule::host_spec | Rule::kw_any => "an address or `any`",
            Rule::port_clause => "`port`",
            Rule::set_dynamic => "`= { ... }` or `dynamic`",
            Rule::feed_opt | Rule::feed_key => {
                "a feed option (source, format, refresh, max-entries, max-shrink, max-coverage, column, provider, key-file, \
                 key-env, key-credential, key-header, min-confidence, max-age, pulses)"
            }
            Rule::nat_target => "`-> address`",
            Rule::expect => "`expect`",
            Rule::EOI => "end of file",
            Rule::list_sep | Rule::list_end => "`,` or `}`",
            _ => "a rule option",
        })
        .collect();
    // After a list entry, `expires` is possible but `,` or `}` is what was missing.
    if rules.contains(&Rule::list_sep) {
        words.retain(|w| *w != "a rule option");
    }
    words.sort_unstable();
    words.dedup();
    match words.len() {
        0 => "something else".into(),
        1 => words[0].into(),
        _ => {
            let last = words.pop().unwrap_or_default();
            format!("{} or {last}", words.join(", "))
        }
    }
}

/// Words that start a statement or a rule clause, for "did you mean".
const KEYWORDS: [&str; 33] = [
    "pass",
    "block",
    "reject",
    "in",
    "out",
    "forward",
    "on",
    "ipv4",
    "ipv6",
    "proto",
    "from",
    "to",
    "port",
    "icmp-type",
    "state",
    "limit",
    "burst",
    "per-source",
    "log",
    "counter",
    "nocounter",
    "label",
    "define",
    "include",
    "set",
    "feed",
    "policy",
    "table",
    "test",
    "masquerade",
    "snat",
    "dnat",
    "allow-always",
];

fn syntax_help(found: &str) -> Option<String> {
    Some(match found {
        "allow" | "accept" | "permit" => "rules start with `pass`, `block` or `reject`".into(),
        "drop" | "deny" => "to drop traffic write `block`".into(),
        "dport" | "sport" => "ports follow the address: `to any port 22` or `from 10.0.0.0/8 port 1024-65535`".into(),
        "established" | "new" | "related" => {
            "connection states follow `state`: `state { established, related }`".into()
        }
        _ if found.contains(':') && found.chars().all(|c| c.is_ascii_digit() || c == ':') => {
            "port ranges are written with a dash: `1024-65535`".into()
        }
        // A keyword in the wrong place is not a typo.
        _ if KEYWORDS.contains(&found) => return None,
        _ => format!("did you mean `{}`?", crate::diag::suggest(found, KEYWORDS.iter().copied())?),
    })
}

struct Builder {
    file: FileId,
    errors: Vec<Diag>,
}

impl Builder {
    fn span(&self, p: &Pair<'_, Rule>) -> Span {
        Span::from_pest(self.file, p.as_span())
    }

    /// The span of a pair that ends in optional parts, without the
    /// whitespace pest leaves after its last part.
    fn trimmed_span(&self, p: &Pair<'_, Rule>, keyword: &str) -> Span {
        let mut span = self.span(p);
        span.end = p.clone().into_inner().last().map_or(span.start + keyword.len(), |last| self.span(&last).end);
        span
    }

    fn spanned<T>(&self, p: &Pair<'_, Rule>, node: T) -> Spanned<T> {
        Spanned::new(node, self.span(p))
    }

    fn stmt(&mut self, pair: Pair<'_, Rule>) -> Option<Stmt> {
        let span = self.span(&pair);
        let rule = pair.as_rule();
        let mut inner = pair.into_inner();
        Some(match rule {
            Rule::table_stmt => {
                let n = inner.next()?;
                Stmt::Table(self.spanned(&n, n.as_str().to_string()))
            }
            Rule::define_stmt => {
                let n = inner.next()?;
                let name = self.spanned(&n, n.as_str().to_string());
                let value = self.value(inner.next()?);
                Stmt::Define { name, value }
            }
            Rule::include_stmt => {
                let s = inner.next()?;
                Stmt::Include { path: self.spanned(&s, string_text(&s)), span }
            }
            Rule::policy_stmt => {
                let h = inner.next()?;
                let hook = self.spanned(&h, parse_hook(h.as_str()));
                let a = inner.next()?;
                let action = self.spanned(&a, parse_action(a.as_str()));
                let mut log = None;
                let mut counter = true;
                let mut priority = None;
                for p in inner {
                    match p.as_rule() {
                        Rule::log_opt => log = Some(self.log_spec(p.into_inner())),
                        Rule::counter_opt => counter = p.as_str() == "counter",
                        Rule::priority => {
                            let n = p.into_inner().next()?;
                            priority = Some(self.spanned(&n, literal::priority(n.as_str())));
                        }
                        _ => {}
                    }
                }
                Stmt::Policy { hook, action, log, counter, priority, span }
            }
            Rule::set_stmt => {
                let n = inner.next()?;
                let name = self.spanned(&n, n.as_str().to_string());
                let b = inner.next()?;
                let body = if b.as_rule() == Rule::set_dynamic {
                    let timeout = b.into_inner().next().map(|d| {
                        let secs = self.duration(&d);
                        self.spanned(&d, secs)
                    });
                    SetBody::Dynamic { timeout }
                } else {
                    SetBody::Static(self.value(b))
                };
                Stmt::Set { name, body, span }
            }
            Rule::feed_stmt | Rule::provider_stmt => {
                let n = inner.next()?;
                let name = self.spanned(&n, n.as_str().to_string());
                let mut opts = Vec::new();
                if rule == Rule::provider_stmt {
                    // `provider NAME { ... }`: a feed named after its preset.
                    opts.push((
                        self.spanned(&n, "provider".to_string()),
                        self.spanned(&n, FeedValue::Name(name.node.clone())),
                    ));
                }
                opts.extend(self.block_opts(inner)?);
                Stmt::Feed { name, opts, span }
            }
            Rule::adaptive_stmt => Stmt::Adaptive { opts: self.block_opts(inner.skip(1))?, span },
            Rule::allow_stmt => Stmt::AllowAlways { value: self.value(inner.nth(1)?), span },
            Rule::flowtable_stmt => {
                let n = inner.nth(1)?;
                let name = self.spanned(&n, n.as_str().to_string());
                Stmt::Flowtable { name, devices: self.value(inner.next()?), span }
            }
            Rule::rule_stmt => {
                let a = inner.next()?;
                let action = self.spanned(&a, parse_action(a.as_str()));
                let d = inner.next()?;
                let direction = self.spanned(&d, parse_direction(d.as_str()));
                let opts = inner.filter_map(|p| self.rule_opt(p)).collect();
                Stmt::Rule(RuleAst { action, direction, opts, span })
            }
            Rule::match_stmt => {
                let keyword = self.span(&inner.next()?);
                let d = inner.next()?;
                let direction = self.spanned(&d, parse_direction(d.as_str()));
                let opts = inner.filter_map(|p| self.rule_opt(p)).collect();
                Stmt::Match(MatchAst { keyword, direction, opts, span })
            }
            Rule::nat_stmt => {
                let k = inner.next()?;
                let kind = self.spanned(
                    &k,
                    match k.as_str() {
                        "masquerade" => NatKind::Masquerade,
                        "snat" => NatKind::Snat,
                        _ => NatKind::Dnat,
                    },
                );
                let d = inner.next()?;
                let direction = self.spanned(&d, parse_direction(d.as_str()));
                let mut opts = Vec::new();
                let mut target = None;
                for p in inner {
                    if p.as_rule() == Rule::nat_target {
                        let tspan = self.span(&p);
                        let mut t = p.into_inner();
                        let addr = self.value(t.next()?);
                        let port = t.next().map(|v| self.value(v));
                        target = Some(NatTarget { addr, port, span: tspan });
                    } else if let Some(o) = self.rule_opt(p) {
                        opts.push(o);
                    }
                }
                Stmt::Nat(NatAst { kind, direction, opts, target, span })
            }
            Rule::test_stmt => {
                let n = inner.next()?;
                let name = self.spanned(&n, string_text(&n));
                let expects = inner
                    .filter_map(|e| {
                        let mut ei = e.into_inner();
                        let a = ei.next()?;
                        let p = ei.next()?;
                        Some(Expect {
                            action: self.spanned(&a, parse_action(a.as_str())),
                            packet: self.spanned(&p, p.as_str().trim_end().to_string()),
                        })
                    })
                    .collect();
                Stmt::Test { name, expects, span }
            }
            _ => return None,
        })
    }

    fn rule_opt(&mut self, p: Pair<'_, Rule>) -> Option<Spanned<RuleOpt>> {
        let span = if p.as_rule() == Rule::log_opt { self.trimmed_span(&p, "log") } else { self.span(&p) };
        let rule = p.as_rule();
        let text = p.as_str();
        let mut inner = p.into_inner();
        let opt = match rule {
            Rule::on_iface => RuleOpt::On(self.iface_spec(inner)?),
            Rule::in_on => RuleOpt::InOn(self.iface_spec(inner)?),
            Rule::out_on => RuleOpt::OutOn(self.iface_spec(inner)?),
            Rule::family => RuleOpt::Family(if text == "ipv4" { Family::V4 } else { Family::V6 }),
            Rule::proto => RuleOpt::Proto(self.value(inner.next()?)),
            Rule::from => RuleOpt::From(self.host_spec(inner)),
            Rule::to => RuleOpt::To(self.host_spec(inner)),
            Rule::icmp_type => RuleOpt::IcmpType(self.value(inner.next()?)),
            Rule::state => RuleOpt::State(self.value(inner.next()?)),
            Rule::limit => RuleOpt::Limit(self.limit_spec(inner)?),
            Rule::quota => {
                let n = inner.next()?;
                let count = self.number(&n);
                let scale = literal::quota_scale(inner.next()?.as_str());
                RuleOpt::Quota(count.saturating_mul(scale))
            }
            Rule::log_opt => RuleOpt::Log(self.log_spec(inner)),
            Rule::counter_opt => RuleOpt::Counter(text == "counter"),
            Rule::label => RuleOpt::Label(inner.next().map(|s| string_text(&s)).unwrap_or_default()),
            Rule::expires => RuleOpt::Expires(self.date(&inner.next()?)?.node),
            Rule::early => RuleOpt::Early,
            Rule::urpf_failed => RuleOpt::UrpfFailed,
            Rule::notrack => RuleOpt::Notrack,
            Rule::named_counter => RuleOpt::NamedCounter(inner.next().map(|s| string_text(&s)).unwrap_or_default()),
            Rule::mark => RuleOpt::Mark(literal::mark(inner.next()?.as_str())),
            Rule::ct_mark => RuleOpt::CtMark(literal::mark(inner.nth(1)?.as_str())),
            Rule::offload => RuleOpt::Offload(inner.nth(1).map(|n| n.as_str().to_string())),
            Rule::set_mark => RuleOpt::SetMark(mark_source(inner.next()?)),
            Rule::set_ct_mark => RuleOpt::SetCtMark(mark_source(inner.nth(1)?)),
            Rule::reject_with => {
                let how = inner.next()?;
                match how.as_rule() {
                    Rule::tcp_reset => RuleOpt::RejectWith { kind: "tcp reset".into(), code: None },
                    _ => RuleOpt::RejectWith {
                        kind: how.as_str().to_string(),
                        code: inner.next().map(|c| c.as_str().to_string()),
                    },
                }
            }
            _ => return None,
        };
        Some(Spanned::new(opt, span))
    }

    fn iface_spec(&mut self, inner: pest::iterators::Pairs<'_, Rule>) -> Option<IfaceSpec> {
        let mut negated = false;
        for p in inner {
            match p.as_rule() {
                Rule::negation => negated = true,
                _ => return Some(IfaceSpec { negated, value: self.value(p) }),
            }
        }
        None
    }

    fn host_spec(&mut self, inner: pest::iterators::Pairs<'_, Rule>) -> HostSpec {
        let mut spec = HostSpec { negated: false, local: false, addr: None, except: None, port: None };
        for p in inner {
            match p.as_rule() {
                Rule::host_spec => {
                    for h in p.into_inner() {
                        match h.as_rule() {
                            Rule::negation => spec.negated = true,
                            Rule::kw_self => spec.local = true,
                            Rule::value => spec.addr = Some(self.value(h)),
                            Rule::except_clause => spec.except = h.into_inner().next().map(|v| self.value(v)),
                            _ => {} // `any`
                        }
                    }
                }
                Rule::port_clause => {
                    let mut negated = false;
                    let mut value = None;
                    for q in p.into_inner() {
                        match q.as_rule() {
                            Rule::negation => negated = true,
                            _ => value = Some(self.value(q)),
                        }
                    }
                    if let Some(value) = value {
                        spec.port = Some(PortSpec { negated, value });
                    }
                }
                _ => {}
            }
        }
        spec
    }

    fn value(&mut self, p: Pair<'_, Rule>) -> Value {
        let span = self.span(&p);
        let mut items = Vec::new();
        for child in p.into_inner() {
            if child.as_rule() == Rule::list {
                for it in child.into_inner() {
                    if let Some(i) = self.item(it) {
                        items.push(i);
                    }
                }
            } else if let Some(i) = self.item(child) {
                items.push(i);
            }
        }
        Value { items, span }
    }

    fn item(&mut self, p: Pair<'_, Rule>) -> Option<Spanned<Item>> {
        let span = self.span(&p);
        let text = p.as_str();
        let item = match p.as_rule() {
            Rule::service => {
                let mut inner = p.into_inner();
                let proto = inner.next()?.as_str().to_string();
                let port = self.item(inner.next()?)?;
                Item::Service { proto, port: Box::new(port) }
            }
            Rule::macro_ref => Item::Macro(text[1..].to_string()),
            Rule::set_ref => Item::SetRef(text[1..text.len() - 1].to_string()),
            Rule::cidr4 | Rule::cidr6 => Item::Net(self.net(text, span)?),
            Rule::port_range => {
                let (a, b) = text.split_once('-')?;
                Item::PortRange(self.parse_u32(a, span), self.parse_u32(b, span))
            }
            Rule::number => Item::Number(self.number(&p)),
            Rule::name => Item::Name(text.to_string()),
            Rule::entry => return self.entry(p),
            _ => return None,
        };
        Some(Spanned::new(item, span))
    }

    /// A list entry: an item, maybe excluded (`!net`), maybe expiring, maybe timed.
    fn entry(&mut self, p: Pair<'_, Rule>) -> Option<Spanned<Item>> {
        let span = self.span(&p);
        let (mut negated, mut item, mut date, mut timeout) = (false, None, None, None);
        for part in p.into_inner() {
            match part.as_rule() {
                Rule::negation => negated = true,
                Rule::expires => date = Some(self.date(&part.into_inner().next()?)?),
                Rule::entry_timeout => {
                    let d = part.into_inner().next()?;
                    timeout = Some(Spanned::new(self.duration(&d), self.span(&d)));
                }
                _ => item = Some(self.item(part)?),
            }
        }
        Some(Item::entry(item?, negated, date, timeout, span))
    }

    fn date(&mut self, p: &Pair<'_, Rule>) -> Option<Spanned<Date>> {
        let span = self.span(p);
        let date = self.check(literal::date(p.as_str(), span))?;
        Some(Spanned::new(date, span))
    }

    fn net(&mut self, text: &str, span: Span) -> Option<ipnet::IpNet> {
        self.check(literal::net(text, span))
    }

    /// The value of a checked literal; its diagnostic is kept.
    fn check<T>(&mut self, checked: literal::Checked<T>) -> Option<T> {
        checked.map_err(|d| self.errors.push(*d)).ok()
    }

    fn parse_u32(&mut self, s: &str, span: Span) -> u32 {
        self.check(literal::port_bound(s, span)).unwrap_or(0)
    }

    /// The `key value;` options of a `feed` or `adaptive` block.
    fn block_opts<'i>(
        &mut self,
        opts: impl Iterator<Item = Pair<'i, Rule>>,
    ) -> Option<Vec<(Spanned<String>, Spanned<FeedValue>)>> {
        let mut out = Vec::new();
        for opt in opts {
            let mut kv = opt.into_inner();
            let (k, v) = (kv.next()?, kv.next()?);
            let value = match v.as_rule() {
                Rule::string => FeedValue::Str(string_text(&v)),
                Rule::duration => FeedValue::Seconds(self.duration(&v)),
                Rule::number => FeedValue::Number(self.number(&v)),
                _ => FeedValue::Name(v.as_str().to_string()),
            };
            out.push((self.spanned(&k, k.as_str().to_string()), self.spanned(&v, value)));
        }
        Some(out)
    }

    /// `limit N/unit [per-source] [burst N]` (also the log's, which has no per-source).
    fn limit_spec(&mut self, mut inner: Pairs<'_, Rule>) -> Option<LimitSpec> {
        let rate = inner.next()?;
        let mut r = rate.into_inner();
        let n = r.next()?;
        let count = self.number(&n);
        let unit = match r.next()?.as_str() {
            "second" => TimeUnit::Second,
            "minute" => TimeUnit::Minute,
            "hour" => TimeUnit::Hour,
            _ => TimeUnit::Day,
        };
        let mut per_source = false;
        let mut burst = None;
        for q in inner {
            match q.as_rule() {
                Rule::per_source => per_source = true,
                Rule::number => burst = Some(self.number(&q)),
                _ => {}
            }
        }
        Some(LimitSpec { rate: count, unit, per_source, burst })
    }

    /// `log ["text"] [limit N/unit [burst N]] [group N]`.
    fn log_spec(&mut self, inner: Pairs<'_, Rule>) -> LogSpec {
        let mut spec = LogSpec::default();
        for p in inner {
            let span = self.trimmed_span(&p, "");
            match p.as_rule() {
                Rule::string => spec.text = Some(string_text(&p)),
                Rule::log_limit => spec.limit = self.limit_spec(p.into_inner()).map(|l| Spanned::new(l, span)),
                Rule::log_group => {
                    let n = p.into_inner().next().map_or(0, |n| self.number(&n));
                    spec.group = Some(Spanned::new(n, span));
                }
                _ => {}
            }
        }
        spec
    }

    fn number(&mut self, p: &Pair<'_, Rule>) -> u64 {
        let span = self.span(p);
        self.check(literal::number(p.as_str(), span)).unwrap_or(0)
    }

    fn duration(&mut self, p: &Pair<'_, Rule>) -> u64 {
        let span = self.span(p);
        self.check(literal::duration(p.as_str(), span)).unwrap_or(0)
    }
}

fn string_text(p: &Pair<'_, Rule>) -> String {
    p.clone().into_inner().next().map_or_else(String::new, |s| s.as_str().to_string())
}

pub(super) fn parse_hook(s: &str) -> Hook {
    match s {
        "input" => Hook::Input,
        "forward" => Hook::Forward,
        _ => Hook::Output,
    }
}

pub fn parse_action(s: &str) -> Action {
    match s {
        "pass" => Action::Pass,
        "reject" => Action::Reject,
        _ => Action::Block,
    }
}

pub(super) fn parse_direction(s: &str) -> Direction {
    match s {
        "in" => Direction::In,
        "out" => Direction::Out,
        _ => Direction::Forward,
    }
}

/// The value of `set mark` / `set ct mark`: a number or `from [ct] mark`.
fn mark_source(p: Pair<'_, Rule>) -> MarkSource {
    match p.as_rule() {
        Rule::mark_from if p.clone().into_inner().next().is_some() => MarkSource::CtMark,
        Rule::mark_from => MarkSource::Mark,
        _ => MarkSource::Value(literal::mark(p.as_str())),
    }
}
