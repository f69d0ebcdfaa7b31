//! A hand-written recursive-descent parser for `grammar/policy.pest`, about
//! ten times cheaper than pest's generated one. It follows the grammar rule
//! for rule with PEG's meaning (ordered choice, no going back into a matched
//! alternative, whitespace and comments skipped between the parts of a
//! non-atomic rule, so spans end where pest's end), and builds the AST the
//! pest path builds, spans included. It gives up on any syntax or literal
//! error: the pest parser then reads the text and reports the diagnostics.
//! `tests/parser_parity.rs` holds the two to the same AST.

use super::ast::*;
use super::literal;
use super::parse::{parse_action, parse_direction, parse_hook};
use crate::diag::{FileId, Span};

/// The statements of one file, or None where the pest parser must decide.
pub fn parse_file(file: FileId, text: &str) -> Option<Vec<Stmt>> {
    let mut p = Descent { s: text.as_bytes(), text, pos: 0, file, invalid: false };
    p.skip();
    let stmts = p.repeat(Descent::statement);
    p.skip();
    (p.pos == p.s.len() && !p.invalid).then_some(stmts)
}

/// `reserved` of the grammar, in its order (the first that matches decides).
const RESERVED: [&str; 48] = [
    "port",
    "from",
    "to",
    "proto",
    "on",
    "in",
    "out",
    "log",
    "counter",
    "nocounter",
    "label",
    "limit",
    "quota",
    "state",
    "icmp-type",
    "any",
    "burst",
    "ipv4",
    "ipv6",
    "pass",
    "block",
    "reject",
    "masquerade",
    "snat",
    "dnat",
    "define",
    "include",
    "set",
    "feed",
    "policy",
    "table",
    "test",
    "forward",
    "expect",
    "allow-always",
    "provider",
    "expires",
    "except",
    "with",
    "early",
    "notrack",
    "mark",
    "match",
    "ct",
    "flowtable",
    "offload",
    "urpf-failed",
    "self",
];

const ADAPTIVE_KEYS: [&str; 8] =
    ["mode", "set", "thresholds", "timeout", "max-timeout", "max-blocks", "window", "min-confidence"];

fn is_word_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'*')
}

struct Descent<'t> {
    s: &'t [u8],
    text: &'t str,
    pos: usize,
    file: FileId,
    /// A literal failed its check: the parse goes on as pest's would, and the
    /// result is thrown away.
    invalid: bool,
}

impl<'t> Descent<'t> {
    // ---- machinery ----

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn span(&self, start: usize) -> Span {
        Span::new(self.file, start, self.pos)
    }

    fn slice(&self, start: usize) -> &'t str {
        &self.text[start..self.pos]
    }

    /// `f`, or nothing consumed when it fails.
    fn attempt<T>(&mut self, f: impl FnOnce(&mut Self) -> Option<T>) -> Option<T> {
        let start = self.pos;
        let r = f(self);
        if r.is_none() {
            self.pos = start;
        }
        r
    }

    /// `(f ~ (skip ~ f)*)?` of a non-atomic rule: `f` must restore on failure.
    fn repeat<T>(&mut self, mut f: impl FnMut(&mut Self) -> Option<T>) -> Vec<T> {
        let mut out = Vec::new();
        if let Some(x) = f(self) {
            out.push(x);
            loop {
                let before = self.pos;
                self.skip();
                match f(self) {
                    Some(x) => out.push(x),
                    None => {
                        self.pos = before;
                        break;
                    }
                }
            }
        }
        out
    }

    /// WHITESPACE and COMMENT, as pest skips them between a rule's parts.
    fn skip(&mut self) {
        while let Some(b) = self.peek() {
            match b {
                b' ' | b'\t' | b'\r' | b'\n' => self.pos += 1,
                b'#' => {
                    self.pos =
                        self.s[self.pos..].iter().position(|&c| c == b'\n').map_or(self.s.len(), |n| self.pos + n);
                }
                _ => break,
            }
        }
    }

    /// A literal string of the grammar (no word boundary).
    fn lit(&mut self, word: &str) -> Option<()> {
        if self.s[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Some(())
        } else {
            None
        }
    }

    fn boundary(&self) -> bool {
        !self.peek().is_some_and(is_word_char)
    }

    /// `@{ ("a" | "b" | ...) ~ !word_char }`: the first alternative that
    /// matches, which must end a word.
    fn keyword(&mut self, words: &[&'static str]) -> Option<Spanned<&'static str>> {
        let start = self.pos;
        let rest = &self.s[start..];
        let word = *words.iter().find(|w| rest.starts_with(w.as_bytes()))?;
        self.pos += word.len();
        if self.boundary() {
            Some(Spanned::new(word, self.span(start)))
        } else {
            self.pos = start;
            None
        }
    }

    fn digits(&mut self) -> usize {
        let n = self.s[self.pos..].iter().take_while(|b| b.is_ascii_digit()).count();
        self.pos += n;
        n
    }

    fn hex_digits(&mut self) -> usize {
        let n = self.s[self.pos..].iter().take_while(|b| b.is_ascii_hexdigit()).count();
        self.pos += n;
        n
    }

    fn check<T: Default>(&mut self, checked: literal::Checked<T>) -> T {
        checked.unwrap_or_else(|_| {
            self.invalid = true;
            T::default()
        })
    }

    // ---- statements ----

    fn statement(&mut self) -> Option<Stmt> {
        let rules: [fn(&mut Self) -> Option<Stmt>; 14] = [
            Self::rule_stmt,
            Self::nat_stmt,
            Self::match_stmt,
            Self::table_stmt,
            Self::define_stmt,
            Self::include_stmt,
            Self::set_stmt,
            Self::feed_stmt,
            Self::adaptive_stmt,
            Self::provider_stmt,
            Self::allow_stmt,
            Self::policy_stmt,
            Self::flowtable_stmt,
            Self::test_stmt,
        ];
        rules.iter().find_map(|rule| self.attempt(rule))
    }

    fn rule_stmt(&mut self) -> Option<Stmt> {
        let start = self.pos;
        let a = self.keyword(&["pass", "block", "reject"])?;
        self.skip();
        let direction = self.direction()?;
        self.skip();
        let opts = self.repeat(Self::rule_opt);
        let action = Spanned::new(parse_action(a.node), a.span);
        Some(Stmt::Rule(RuleAst { action, direction, opts, span: self.span(start) }))
    }

    fn nat_stmt(&mut self) -> Option<Stmt> {
        let start = self.pos;
        let k = self.keyword(&["masquerade", "snat", "dnat"])?;
        let kind = Spanned::new(
            match k.node {
                "masquerade" => NatKind::Masquerade,
                "snat" => NatKind::Snat,
                _ => NatKind::Dnat,
            },
            k.span,
        );
        self.skip();
        let direction = self.direction()?;
        self.skip();
        let opts = self.repeat(Self::rule_opt);
        self.skip();
        let target = self.attempt(Self::nat_target);
        Some(Stmt::Nat(NatAst { kind, direction, opts, target, span: self.span(start) }))
    }

    fn nat_target(&mut self) -> Option<NatTarget> {
        let start = self.pos;
        self.lit("->")?;
        self.skip();
        let addr = self.value()?;
        self.skip();
        let port = self.attempt(|p| {
            p.lit("port")?;
            p.skip();
            p.value()
        });
        Some(NatTarget { addr, port, span: self.span(start) })
    }

    fn match_stmt(&mut self) -> Option<Stmt> {
        let start = self.pos;
        let keyword = self.keyword(&["match"])?.span;
        self.skip();
        let direction = self.direction()?;
        self.skip();
        let opts = self.repeat(Self::rule_opt);
        Some(Stmt::Match(MatchAst { keyword, direction, opts, span: self.span(start) }))
    }

    fn table_stmt(&mut self) -> Option<Stmt> {
        self.lit("table")?;
        self.skip();
        Some(Stmt::Table(self.name()?))
    }

    fn define_stmt(&mut self) -> Option<Stmt> {
        self.lit("define")?;
        self.skip();
        let name = self.name()?;
        self.skip();
        self.lit("=")?;
        self.skip();
        Some(Stmt::Define { name, value: self.value()? })
    }

    fn include_stmt(&mut self) -> Option<Stmt> {
        let start = self.pos;
        self.lit("include")?;
        self.skip();
        let path = self.string()?;
        Some(Stmt::Include { path, span: self.span(start) })
    }

    fn set_stmt(&mut self) -> Option<Stmt> {
        let start = self.pos;
        self.lit("set")?;
        self.skip();
        let name = self.name()?;
        self.skip();
        let body = match self.attempt(|p| {
            p.lit("=")?;
            p.skip();
            p.value()
        }) {
            Some(v) => SetBody::Static(v),
            None => {
                self.lit("dynamic")?;
                self.skip();
                let timeout = self.attempt(|p| {
                    p.lit("timeout")?;
                    p.skip();
                    p.duration()
                });
                SetBody::Dynamic { timeout }
            }
        };
        Some(Stmt::Set { name, body, span: self.span(start) })
    }

    fn feed_stmt(&mut self) -> Option<Stmt> {
        self.feed_block("feed")
    }

    fn provider_stmt(&mut self) -> Option<Stmt> {
        self.feed_block("provider")
    }

    /// `feed NAME { ... }`, or `provider NAME { ... }`: a feed named after its preset.
    fn feed_block(&mut self, keyword: &str) -> Option<Stmt> {
        let start = self.pos;
        self.lit(keyword)?;
        self.skip();
        let name = self.name()?;
        let mut opts = Vec::new();
        if keyword == "provider" {
            opts.push((
                Spanned::new("provider".to_string(), name.span),
                Spanned::new(FeedValue::Name(name.node.clone()), name.span),
            ));
        }
        self.skip();
        opts.extend(self.block(&FEED_KEYS, false)?);
        Some(Stmt::Feed { name, opts, span: self.span(start) })
    }

    fn adaptive_stmt(&mut self) -> Option<Stmt> {
        let start = self.pos;
        self.keyword(&["adaptive"])?;
        self.skip();
        let opts = self.block(&ADAPTIVE_KEYS, true)?;
        Some(Stmt::Adaptive { opts, span: self.span(start) })
    }

    /// `{ key value; ... }` of a feed or `adaptive`.
    fn block(&mut self, keys: &[&'static str], modes: bool) -> Option<Vec<(Spanned<String>, Spanned<FeedValue>)>> {
        self.lit("{")?;
        self.skip();
        let opts = self.repeat(|p| {
            p.attempt(|p| {
                let key = p.keyword(keys)?;
                p.skip();
                let start = p.pos;
                let value = if let Some(s) = p.string() {
                    FeedValue::Str(s.node)
                } else if let Some(d) = p.duration() {
                    FeedValue::Seconds(d.node)
                } else if let Some(n) = p.number() {
                    FeedValue::Number(n.node)
                } else if modes && p.keyword(&["observe", "block"]).is_some() {
                    FeedValue::Name(p.slice(start).to_string())
                } else {
                    FeedValue::Name(p.name()?.node)
                };
                let value = Spanned::new(value, p.span(start));
                p.skip();
                let _ = p.lit(";");
                Some((Spanned::new(key.node.to_string(), key.span), value))
            })
        });
        self.skip();
        self.lit("}")?;
        Some(opts)
    }

    /// `flowtable NAME { devices VALUE [;] }`.
    fn flowtable_stmt(&mut self) -> Option<Stmt> {
        let start = self.pos;
        self.keyword(&["flowtable"])?;
        self.skip();
        let name = self.name()?;
        self.skip();
        self.lit("{")?;
        self.skip();
        self.lit("devices")?;
        self.skip();
        let devices = self.value()?;
        self.skip();
        if self.lit(";").is_some() {
            self.skip();
        }
        self.lit("}")?;
        Some(Stmt::Flowtable { name, devices, span: self.span(start) })
    }

    fn allow_stmt(&mut self) -> Option<Stmt> {
        let start = self.pos;
        self.keyword(&["allow-always"])?;
        self.skip();
        let value = self.value()?;
        Some(Stmt::AllowAlways { value, span: self.span(start) })
    }

    fn policy_stmt(&mut self) -> Option<Stmt> {
        let start = self.pos;
        self.lit("policy")?;
        self.skip();
        let h = ["input", "forward", "output"].into_iter().find(|w| self.lit(w).is_some())?;
        let hook = Spanned::new(parse_hook(h), Span::new(self.file, self.pos - h.len(), self.pos));
        self.skip();
        let a = self.keyword(&["pass", "block", "reject"])?;
        let action = Spanned::new(parse_action(a.node), a.span);
        self.skip();
        let log = self.attempt(Self::log_opt).map(|l| l.node);
        self.skip();
        let counter = self.keyword(&["counter", "nocounter"]).is_none_or(|c| c.node == "counter");
        self.skip();
        let priority = self.attempt(|p| {
            p.lit("priority")?;
            p.skip();
            let start = p.pos;
            p.lit("-");
            (p.digits() > 0 && p.boundary()).then(|| Spanned::new(literal::priority(p.slice(start)), p.span(start)))
        });
        Some(Stmt::Policy { hook, action, log, counter, priority, span: self.span(start) })
    }

    fn test_stmt(&mut self) -> Option<Stmt> {
        let start = self.pos;
        self.lit("test")?;
        self.skip();
        let name = self.string()?;
        self.skip();
        self.lit("{")?;
        self.skip();
        let expects = self.repeat(|p| {
            p.attempt(|p| {
                p.lit("expect")?;
                p.skip();
                let a = p.keyword(&["pass", "block", "reject"])?;
                p.skip();
                let from = p.pos;
                let n = p.s[from..].iter().take_while(|b| !matches!(b, b'\n' | b'}' | b'#')).count();
                if n == 0 {
                    return None;
                }
                p.pos += n;
                Some(Expect {
                    action: Spanned::new(parse_action(a.node), a.span),
                    packet: Spanned::new(p.slice(from).trim_end().to_string(), p.span(from)),
                })
            })
        });
        self.skip();
        self.lit("}")?;
        Some(Stmt::Test { name, expects, span: self.span(start) })
    }

    fn direction(&mut self) -> Option<Spanned<Direction>> {
        let d = self.keyword(&["in", "out", "forward"])?;
        Some(Spanned::new(parse_direction(d.node), d.span))
    }

    // ---- rule clauses ----

    fn rule_opt(&mut self) -> Option<Spanned<RuleOpt>> {
        let start = self.pos;
        let opt = match self.peek()? {
            // Clauses by their first letter; in each group the grammar's order.
            b'f' => self
                .attempt(|p| {
                    p.lit("from")?;
                    p.skip();
                    p.keyword(&["urpf-failed"]).map(|_| RuleOpt::UrpfFailed)
                })
                .or_else(|| self.attempt(|p| p.host_clause("from").map(RuleOpt::From)))?,
            b't' => self.attempt(|p| p.host_clause("to").map(RuleOpt::To))?,
            b'p' => self.attempt(|p| p.value_clause("proto").map(RuleOpt::Proto))?,
            b's' => self
                .attempt(|p| p.value_clause("state").map(RuleOpt::State))
                .or_else(|| self.attempt(|p| p.mark_clause(true, false)))
                .or_else(|| self.attempt(|p| p.mark_clause(true, true)))?,
            b'o' => self
                .attempt(|p| p.iface_clause("on").map(RuleOpt::On))
                .or_else(|| self.attempt(|p| p.iface_clause("out").map(RuleOpt::OutOn)))
                .or_else(|| {
                    // `offload [NAME]`: like pest, the skip before the optional name stays.
                    self.keyword(&["offload"])?;
                    self.skip();
                    let name = self.attempt(Self::name);
                    Some(RuleOpt::Offload(name.map(|n| n.node)))
                })?,
            b'i' => self
                .attempt(|p| p.iface_clause("in").map(RuleOpt::InOn))
                .or_else(|| {
                    self.keyword(&["ipv4", "ipv6"])
                        .map(|f| RuleOpt::Family(if f.node == "ipv4" { Family::V4 } else { Family::V6 }))
                })
                .or_else(|| self.attempt(|p| p.value_clause("icmp-type").map(RuleOpt::IcmpType)))?,
            b'l' => {
                if let Some(log) = self.attempt(Self::log_opt) {
                    return Some(log.map_node(RuleOpt::Log));
                }
                self.attempt(|p| p.limit(true).map(|(l, _)| RuleOpt::Limit(l))).or_else(|| {
                    self.attempt(|p| {
                        p.lit("label")?;
                        p.skip();
                        p.string().map(|s| RuleOpt::Label(s.node))
                    })
                })?
            }
            b'c' | b'n' => self
                .attempt(|p| {
                    p.lit("counter")?;
                    p.skip();
                    p.string().map(|s| RuleOpt::NamedCounter(s.node))
                })
                .or_else(|| self.keyword(&["counter", "nocounter"]).map(|c| RuleOpt::Counter(c.node == "counter")))
                .or_else(|| self.keyword(&["notrack"]).map(|_| RuleOpt::Notrack))
                .or_else(|| self.attempt(|p| p.mark_clause(false, true)))?,
            b'q' => self.attempt(|p| {
                p.lit("quota")?;
                p.skip();
                let n = p.number()?;
                p.skip();
                let unit = p.keyword(&["bytes", "kbytes", "mbytes", "gbytes"])?;
                Some(RuleOpt::Quota(n.node.saturating_mul(literal::quota_scale(unit.node))))
            })?,
            b'e' => self
                .attempt(|p| {
                    p.lit("expires")?;
                    p.skip();
                    p.date().map(|d| RuleOpt::Expires(d.node))
                })
                .or_else(|| self.keyword(&["early"]).map(|_| RuleOpt::Early))?,
            b'w' => self.attempt(Self::reject_with)?,
            b'm' => self.attempt(|p| p.mark_clause(false, false))?,
            _ => return None,
        };
        Some(Spanned::new(opt, self.span(start)))
    }

    /// `from`/`to`: `KEYWORD host_spec port_clause?`.
    fn host_clause(&mut self, keyword: &str) -> Option<HostSpec> {
        self.lit(keyword)?;
        self.skip();
        let mut spec = HostSpec { negated: false, local: false, addr: None, except: None, port: None };
        // host_spec = { (negation? ~ (kw_self | kw_any | value) ~ except_clause?)? }
        if let Some((negated, local, addr, except)) = self.attempt(|p| {
            let negated = p.lit("!").is_some();
            p.skip();
            let (local, addr) = match p.keyword(&["self", "any"]) {
                Some(k) => (k.node == "self", None),
                None => (false, Some(p.value()?)),
            };
            p.skip();
            let except = p.attempt(|p| {
                p.lit("except")?;
                p.skip();
                p.value()
            });
            Some((negated, local, addr, except))
        }) {
            (spec.negated, spec.local, spec.addr, spec.except) = (negated, local, addr, except);
        }
        self.skip();
        spec.port = self.attempt(|p| {
            p.lit("port")?;
            p.skip();
            let negated = p.lit("!").is_some();
            p.skip();
            Some(PortSpec { negated, value: p.value()? })
        });
        Some(spec)
    }

    fn value_clause(&mut self, keyword: &str) -> Option<Value> {
        self.lit(keyword)?;
        self.skip();
        self.value()
    }

    /// `on [!]VALUE`, `in on [!]VALUE`, `out on [!]VALUE`.
    fn iface_clause(&mut self, keyword: &str) -> Option<IfaceSpec> {
        self.lit(keyword)?;
        self.skip();
        if keyword != "on" {
            self.lit("on")?;
            self.skip();
        }
        let negated = self.lit("!").is_some();
        self.skip();
        Some(IfaceSpec { negated, value: self.value()? })
    }

    /// `[set] [ct] mark ...`: `mark N`, `ct mark N`, `set mark N|from [ct] mark`,
    /// `set ct mark N|from [ct] mark`.
    fn mark_clause(&mut self, set: bool, ct: bool) -> Option<RuleOpt> {
        if set {
            self.lit("set")?;
            self.skip();
        }
        if ct {
            self.keyword(&["ct"])?;
            self.skip();
        }
        self.lit("mark")?;
        self.skip();
        // Only a set may copy the other mark.
        let from = if set { self.attempt(Self::mark_from) } else { None };
        let source = match from {
            Some(from) => from,
            None => MarkSource::Value(self.mark_value()?),
        };
        Some(match (set, ct, source) {
            (false, false, MarkSource::Value(n)) => RuleOpt::Mark(n),
            (false, _, MarkSource::Value(n)) => RuleOpt::CtMark(n),
            (true, false, source) => RuleOpt::SetMark(source),
            (_, _, source) => RuleOpt::SetCtMark(source),
        })
    }

    /// `from [ct] mark`: a copy of the other mark.
    fn mark_from(&mut self) -> Option<MarkSource> {
        self.lit("from")?;
        self.skip();
        let ct = self.keyword(&["ct"]).is_some();
        self.skip();
        self.lit("mark")?;
        Some(if ct { MarkSource::CtMark } else { MarkSource::Mark })
    }

    /// `0x10` or `16`, ending a word.
    fn mark_value(&mut self) -> Option<u64> {
        let start = self.pos;
        let hex = self.attempt(|p| {
            p.lit("0x").or_else(|| p.lit("0X"))?;
            (p.hex_digits() > 0).then_some(())
        });
        if (hex.is_none() && self.digits() == 0) || !self.boundary() {
            self.pos = start;
            return None;
        }
        Some(literal::mark(self.slice(start)))
    }

    fn reject_with(&mut self) -> Option<RuleOpt> {
        self.lit("with")?;
        self.skip();
        let tcp_reset = self.attempt(|p| {
            p.lit("tcp")?;
            p.skip();
            p.lit("reset")
        });
        if tcp_reset.is_some() {
            return Some(RuleOpt::RejectWith { kind: "tcp reset".into(), code: None });
        }
        let kind = self.keyword(&["icmpx", "icmpv6", "icmp"])?;
        self.skip();
        let code = self.name()?;
        Some(RuleOpt::RejectWith { kind: kind.node.to_string(), code: Some(code.node) })
    }

    /// `log ["text"] [limit N/unit [burst N]] [group N]`, spanning to its last part.
    fn log_opt(&mut self) -> Option<Spanned<LogSpec>> {
        let start = self.pos;
        self.lit("log")?;
        let mut end = self.pos;
        self.skip();
        let mut spec = LogSpec::default();
        if let Some(text) = self.string() {
            end = self.pos;
            spec.text = Some(text.node);
        }
        self.skip();
        let parts = self.repeat(|p| {
            let from = p.pos;
            let part = match p.attempt(|p| p.limit(false)) {
                Some((limit, limit_end)) => Ok(Spanned::new(limit, Span::new(p.file, from, limit_end))),
                None => p.attempt(|p| {
                    p.lit("group")?;
                    p.skip();
                    let n = p.number()?;
                    Some(Err(Spanned::new(n.node, p.span(from))))
                })?,
            };
            Some((part, p.pos))
        });
        // pest ends the clause where its last part's rule ends.
        for (part, part_end) in parts {
            end = part_end;
            match part {
                Ok(limit) => spec.limit = Some(limit),
                Err(group) => spec.group = Some(group),
            }
        }
        Some(Spanned::new(spec, Span::new(self.file, start, end)))
    }

    /// `limit N/unit [per-source] [burst N]` (the log's has no per-source),
    /// with the end of its last part (pest's span of the log's limit).
    fn limit(&mut self, per_source_allowed: bool) -> Option<(LimitSpec, usize)> {
        self.lit("limit")?;
        self.skip();
        let (rate, unit) = self.rate()?;
        let mut end = self.pos;
        let mut per_source = false;
        self.skip();
        if per_source_allowed {
            if let Some(k) = self.keyword(&["per-source"]) {
                per_source = true;
                end = k.span.end;
            }
            self.skip();
        }
        let burst = self.attempt(|p| {
            p.lit("burst")?;
            p.skip();
            p.number()
        });
        if let Some(b) = &burst {
            end = b.span.end;
        }
        Some((LimitSpec { rate, unit, per_source, burst: burst.map(|b| b.node) }, end))
    }

    /// `N/unit`, without whitespace.
    fn rate(&mut self) -> Option<(u64, TimeUnit)> {
        let n = self.number()?;
        self.lit("/")?;
        let unit = match self.keyword(&["second", "minute", "hour", "day"])?.node {
            "second" => TimeUnit::Second,
            "minute" => TimeUnit::Minute,
            "hour" => TimeUnit::Hour,
            _ => TimeUnit::Day,
        };
        Some((n.node, unit))
    }

    // ---- values ----

    fn value(&mut self) -> Option<Value> {
        let start = self.pos;
        if self.peek() == Some(b'{') {
            if let Some(items) = self.attempt(Self::list) {
                return Some(Value { items, span: self.span(start) });
            }
        }
        let item = self.item()?;
        let span = item.span;
        Some(Value { items: vec![item], span })
    }

    /// `{ entry, entry, ... }` with an optional trailing comma.
    fn list(&mut self) -> Option<Vec<Spanned<Item>>> {
        self.lit("{")?;
        self.skip();
        let mut items = Vec::new();
        if let Some(first) = self.entry() {
            items.push(first);
            self.skip();
            let rest = self.repeat(|p| {
                p.attempt(|p| {
                    p.lit(",")?;
                    p.skip();
                    p.entry()
                })
            });
            items.extend(rest);
            self.skip();
            let _ = self.lit(",");
        }
        self.skip();
        self.lit("}")?;
        Some(items)
    }

    /// A list entry: an item, maybe excluded (`!net`), maybe expiring, maybe timed.
    fn entry(&mut self) -> Option<Spanned<Item>> {
        self.attempt(|p| {
            let start = p.pos;
            let negated = p.lit("!").is_some();
            p.skip();
            let item = p.item()?;
            p.skip();
            let expires = |p: &mut Self| {
                p.lit("expires")?;
                p.skip();
                p.date()
            };
            let timeout = |p: &mut Self| {
                p.lit("timeout")?;
                p.skip();
                p.duration()
            };
            let (mut date, mut seconds) = (None, None);
            if let Some(d) = p.attempt(expires) {
                date = Some(d);
                p.skip();
                seconds = p.attempt(timeout);
            } else if let Some(t) = p.attempt(timeout) {
                seconds = Some(t);
                p.skip();
                date = p.attempt(expires);
            }
            Some(Item::entry(item, negated, date, seconds, p.span(start)))
        })
    }

    /// `service | macro_ref | set_ref | cidr6 | cidr4 | port_range | number | name`.
    fn item(&mut self) -> Option<Spanned<Item>> {
        let start = self.pos;
        let b = self.peek()?;
        if b.is_ascii_alphabetic() {
            if let Some(service) = self.attempt(Self::service) {
                return Some(service);
            }
        }
        if let Some(m) = self.attempt(Self::macro_ref) {
            return Some(m);
        }
        if b == b'<' {
            if let Some(s) = self.attempt(|p| {
                p.lit("<")?;
                let name = p.name()?;
                p.lit(">")?;
                Some(Item::SetRef(name.node))
            }) {
                return Some(Spanned::new(s, self.span(start)));
            }
        }
        if let Some(net) = self.attempt(Self::cidr6).or_else(|| self.attempt(Self::cidr4)) {
            return Some(net);
        }
        if b.is_ascii_digit() {
            if let Some(range) = self.attempt(Self::port_range) {
                return Some(range);
            }
            return self.number().map(|n| n.map_node(Item::Number));
        }
        self.name().map(|n| n.map_node(Item::Name))
    }

    /// `tcp 80`, `udp 5000-5100`, `tcp $port`: one or more whitespace, no comment.
    fn service(&mut self) -> Option<Spanned<Item>> {
        let start = self.pos;
        let proto = self.keyword(&["tcp", "udp", "sctp"])?;
        let gap = self.s[self.pos..].iter().take_while(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n')).count();
        if gap == 0 {
            return None;
        }
        self.pos += gap;
        let port = match self.attempt(Self::port_range) {
            Some(range) => range,
            None => match self.number() {
                Some(n) => n.map_node(Item::Number),
                None => self.attempt(Self::macro_ref)?,
            },
        };
        Some(Spanned::new(Item::Service { proto: proto.node.to_string(), port: Box::new(port) }, self.span(start)))
    }

    /// `1024-65535`.
    fn port_range(&mut self) -> Option<Spanned<Item>> {
        let start = self.pos;
        let low = self.digits();
        self.lit("-")?;
        let high = self.digits();
        if low == 0 || high == 0 || !self.boundary() {
            return None;
        }
        let span = self.span(start);
        let (a, b) = self.slice(start).split_once('-')?;
        let (a, b) = (literal::port_bound(a, span), literal::port_bound(b, span));
        Some(Spanned::new(Item::PortRange(self.check(a), self.check(b)), span))
    }

    fn macro_ref(&mut self) -> Option<Spanned<Item>> {
        let start = self.pos;
        self.lit("$")?;
        let name = self.name()?;
        Some(Spanned::new(Item::Macro(name.node), self.span(start)))
    }

    /// `ipv6 ~ ("/" ~ digits)?`, where ipv6 is `hex* ":" (hex | ":" | ".")*`.
    fn cidr6(&mut self) -> Option<Spanned<Item>> {
        let start = self.pos;
        self.hex_digits();
        self.lit(":")?;
        let n = self.s[self.pos..].iter().take_while(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.')).count();
        self.pos += n;
        self.prefix_len();
        Some(self.net(start))
    }

    /// `ipv4 ~ ("/" ~ digits)? ~ !word_char`, ipv4 being four dotted digit runs.
    fn cidr4(&mut self) -> Option<Spanned<Item>> {
        let start = self.pos;
        if self.digits() == 0 {
            return None;
        }
        for _ in 0..3 {
            self.lit(".")?;
            if self.digits() == 0 {
                return None;
            }
        }
        self.prefix_len();
        self.boundary().then(|| self.net(start))
    }

    /// An optional `/N`.
    fn prefix_len(&mut self) {
        let from = self.pos;
        if self.lit("/").is_none() || self.digits() == 0 {
            self.pos = from;
        }
    }

    fn net(&mut self, start: usize) -> Spanned<Item> {
        let span = self.span(start);
        let net = literal::net(self.slice(start), span);
        let net = match net {
            Ok(n) => n,
            Err(_) => {
                self.invalid = true;
                ipnet::IpNet::default()
            }
        };
        Spanned::new(Item::Net(net), span)
    }

    fn number(&mut self) -> Option<Spanned<u64>> {
        let start = self.pos;
        if self.digits() == 0 || !self.boundary() {
            self.pos = start;
            return None;
        }
        let span = self.span(start);
        let n = literal::number(self.slice(start), span);
        Some(Spanned::new(self.check(n), span))
    }

    /// `30s`, `5m`, `1h`, `1d`.
    fn duration(&mut self) -> Option<Spanned<u64>> {
        let start = self.pos;
        if self.digits() == 0 || !matches!(self.peek(), Some(b's' | b'm' | b'h' | b'd')) {
            self.pos = start;
            return None;
        }
        self.pos += 1;
        if !self.boundary() {
            self.pos = start;
            return None;
        }
        let span = self.span(start);
        let secs = literal::duration(self.slice(start), span);
        Some(Spanned::new(self.check(secs), span))
    }

    /// `YYYY-MM-DD`.
    fn date(&mut self) -> Option<Spanned<Date>> {
        let start = self.pos;
        let shape = [4usize, 2, 2].iter().enumerate().all(|(i, &n)| {
            if i > 0 && self.lit("-").is_none() {
                return false;
            }
            let got = self.s[self.pos..].iter().take(n).take_while(|b| b.is_ascii_digit()).count();
            self.pos += got;
            got == n
        });
        if !shape || !self.boundary() {
            self.pos = start;
            return None;
        }
        let span = self.span(start);
        match literal::date(self.slice(start), span) {
            Ok(d) => Some(Spanned::new(d, span)),
            Err(_) => {
                self.invalid = true;
                Some(Spanned::new(Date::from_days(0), span))
            }
        }
    }

    /// `"text"` (no escapes, no newline): the text, spanned with its quotes.
    fn string(&mut self) -> Option<Spanned<String>> {
        let start = self.pos;
        self.lit("\"")?;
        let n = self.s[self.pos..].iter().take_while(|b| !matches!(b, b'"' | b'\\' | b'\n')).count();
        self.pos += n;
        if self.lit("\"").is_none() {
            self.pos = start;
            return None;
        }
        Some(Spanned::new(self.text[start + 1..self.pos - 1].to_string(), self.span(start)))
    }

    /// A name: not a reserved word, a letter or `_`, then word characters.
    fn name(&mut self) -> Option<Spanned<String>> {
        let start = self.pos;
        let rest = &self.s[start..];
        let first = *rest.first()?;
        if !(first.is_ascii_alphabetic() || first == b'_') {
            return None;
        }
        let n = rest.iter().take_while(|&&b| is_word_char(b)).count();
        // Reserved words are all word characters, so the first one the text
        // starts with is a prefix of this word: reserved if it is all of it.
        let word = &rest[..n];
        let reserved = RESERVED.iter().find(|w| w.as_bytes()[0] == first && word.starts_with(w.as_bytes()));
        if reserved.is_some_and(|w| w.len() == n) {
            return None;
        }
        self.pos += n;
        Some(Spanned::new(self.slice(start).to_string(), self.span(start)))
    }
}

impl<T> Spanned<T> {
    fn map_node<U>(self, f: impl FnOnce(T) -> U) -> Spanned<U> {
        Spanned::new(f(self.node), self.span)
    }
}
