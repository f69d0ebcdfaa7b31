//! Filter rules: clauses, the `early`/`reject with` checks and the expansion
//! of one policy rule into IR rules per protocol and family.

use super::values::merge_ranges;
use super::*;

impl<'a> Lowerer<'a> {
    pub(super) fn clauses<'b>(&mut self, direction: &Spanned<Direction>, opts: &'b [Spanned<RuleOpt>]) -> Clauses<'b> {
        let mut c = Clauses::default();
        // A handful of clauses per rule: a list beats hashing them.
        let mut seen: Vec<(&'static str, Span)> = Vec::with_capacity(opts.len());
        for opt in opts {
            let kw = opt.node.keyword();
            // `counter` and `nocounter` fill one slot: both in a rule contradict.
            let slot = if matches!(opt.node, RuleOpt::Counter(_) | RuleOpt::NamedCounter(_)) { "counter" } else { kw };
            let prev = match seen.iter_mut().find(|(s, _)| *s == slot) {
                Some((_, at)) => Some(std::mem::replace(at, opt.span)),
                None => {
                    seen.push((slot, opt.span));
                    None
                }
            };
            if let Some(prev) = prev {
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
                RuleOpt::Quota(q) => c.quota = Some((*q, opt.span)),
                RuleOpt::Log(s) => c.log = Some((s, opt.span)),
                RuleOpt::Counter(on) => c.counter = Some(*on),
                RuleOpt::NamedCounter(name) => {
                    c.counter = Some(true);
                    c.counter_name = self.counter_name(name, opt.span).map(|n| (n, opt.span));
                }
                RuleOpt::Label(s) => c.label = Some((s.as_str(), opt.span)),
                RuleOpt::Expires(d) => c.expires = Some(*d),
                RuleOpt::RejectWith { kind, code } => c.reject_with = Some((kind, code.as_deref(), opt.span)),
                RuleOpt::Early => c.early = Some(opt.span),
                RuleOpt::Notrack => c.notrack = Some(opt.span),
                RuleOpt::Mark(n) => c.mark = self.mark_value(*n, opt.span),
                RuleOpt::CtMark(n) => c.ct_mark = self.mark_value(*n, opt.span),
                RuleOpt::Offload(name) => c.offload = Some((name.as_deref(), opt.span)),
                RuleOpt::SetMark(from) => c.sets.extend(self.set_mark(false, *from, opt.span)),
                RuleOpt::SetCtMark(from) => c.sets.extend(self.set_mark(true, *from, opt.span)),
                RuleOpt::UrpfFailed => c.urpf = Some(opt.span),
            }
        }
        c
    }

    /// `in on IF` / `out on IF`: not in a rule of the `wrong` direction, which
    /// has no such interface.
    pub(super) fn directed_iface(
        &mut self,
        v: &IfaceSpec,
        span: Span,
        direction: &Spanned<Direction>,
        wrong: Direction,
    ) -> Option<(Ifaces, Span)> {
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

    pub(super) fn rule(&mut self, idx: usize, r: &ast::RuleAst) {
        let hook = match r.direction.node {
            Direction::In => Hook::Input,
            Direction::Out => Hook::Output,
            Direction::Forward => Hook::Forward,
        };
        let c = self.clauses(&r.direction, &r.opts);
        let origin = self.origin(r.span, idx);
        let Some(shapes) = self.shapes(&c, r.span) else { return };
        if c.notrack.is_some_and(|span| !self.notrack_allowed(r, &c, span)) {
            return;
        }
        if let (Some((_, span)), false) = (c.sets.first(), r.action.node == Action::Pass) {
            self.diags.push(
                Diag::error("bad-mark", *span, format!("`set mark` on a {} rule", r.action.node.keyword()), "mark of a dropped packet")
                    .with_related(r.action.span, "rule")
                    .with_help("a dropped packet goes nowhere; mark packets with `pass ... set mark N` or `match in ... set mark N`"),
            );
            return;
        }
        if !self.ct_mark_allowed(r, &c) {
            return;
        }
        if c.offload.is_some_and(|(_, span)| !self.offload_allowed(r, span)) {
            return;
        }
        if let Some(span) = c.early {
            if !self.early_allowed(r, &c, span) {
                return;
            }
        }
        if c.urpf.is_some_and(|span| !self.urpf_allowed(r, span)) {
            return;
        }

        let state = c.state.and_then(|v| self.ct_states(v));
        let verb = match r.action.node {
            Action::Pass => "accept",
            Action::Block => "drop",
            Action::Reject => "reject",
        };
        let log = c.log.map(|(spec, span)| {
            let prefix = format!("{} {}", origin.id, log_tail(verb, spec.text.as_deref()));
            if let (Some(_), Some(log_limit)) = (c.limit, &spec.limit) {
                self.diags.push(
                    Diag::error(
                        "log-limit",
                        log_limit.span,
                        "a rate-limited rule cannot limit its log too",
                        "second limit",
                    )
                    .with_help("the rule's `limit` already bounds what it logs; drop the `limit` after `log`"),
                );
            }
            self.log(prefix, spec, span)
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
            self.check_limit(l, span);
        }
        if let Some((bytes, span)) = c.quota {
            // One budget: a rule that becomes several nft rules would get one quota each.
            let problem = if bytes == 0 {
                Some(("a quota of 0 bytes never matches", "use `block` to drop these packets, or a positive quota"))
            } else if bytes > u64::from(u32::MAX) << 20 {
                Some(("a quota is at most 4294967295 mbytes", "give a smaller quota"))
            } else if bytes > u64::from(u32::MAX) && bytes % 1024 != 0 {
                Some((
                    "nft states a quota in 32 bits of its unit",
                    "write a quota above 4 GiB in kbytes, mbytes or gbytes",
                ))
            } else if shapes.len() > 1 {
                Some((
                    "this rule compiles to several nft rules (protocols or address families), each with its own quota",
                    "write one rule per protocol and family (`ipv4 proto tcp ...`) so one quota counts all its bytes",
                ))
            } else {
                None
            };
            if let Some((message, help)) = problem {
                self.diags.push(Diag::error("bad-quota", span, message, "quota here").with_help(help));
                return;
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
                quota: c.quota.map(|(q, _)| q),
                log: log.clone(),
                counter: c.counter.unwrap_or(true),
                label: label.clone(),
                reject,
                early: c.early.is_some(),
                notrack: c.notrack.is_some(),
                set_marks: c.sets.iter().map(|(s, _)| *s).collect(),
                // Named once every flowtable is known (see `resolve_offloads`).
                offload: c.offload.map(|(name, _)| name.unwrap_or_default().to_string()),
                counter_name: c.counter_name.map(|(n, _)| n.to_string()),
                merged: None,
            };
            if rule.early && hook != Hook::Output && !rule.notrack {
                // Before routing: the packet may be for this host or forwarded.
                self.out_rule(Hook::Input, rule.clone());
                self.out_rule(Hook::Forward, rule);
            } else {
                self.out_rule(hook, rule);
            }
        }
    }

    /// `early` rules drop in prerouting, or exempt packets from the early
    /// rules after them (a `pass`), or with `notrack` pass in prerouting or
    /// output: no conntrack state, and arriving packets have no output
    /// interface yet.
    pub(super) fn early_allowed(&mut self, r: &ast::RuleAst, c: &Clauses<'_>, span: Span) -> bool {
        let problem = if r.action.node == Action::Reject {
            Some((
                "an early rule can only `block` or `pass`",
                "early rules run before routing, where nothing answers for this host yet; write `block ... early`, or `reject` in a filter rule",
            ))
        } else if r.action.node == Action::Pass && c.notrack.is_none() && (c.limit.is_some() || c.quota.is_some()) {
            Some((
                "an early `pass` cannot have a `limit` or `quota`",
                "an early pass exempts its packets from the early rules after it; packets over a limit would meet them after all: exempt them all, and rate-limit in a filter rule",
            ))
        } else if r.direction.node == Direction::Out && c.notrack.is_none() {
            Some((
                "an `out` rule can be early only with `notrack`",
                "early rules see arriving packets (in and forward) before routing; `pass out ... early notrack` leaves outgoing packets untracked",
            ))
        } else if c.state.is_some() {
            Some((
                "an early rule cannot match `state`",
                "early rules run before conntrack, so no packet has a state yet",
            ))
        } else if c.oif.is_some() && r.direction.node != Direction::Out {
            Some(("an early rule cannot match `out on`", "early rules run before routing chooses an output interface"))
        } else {
            None
        };
        self.clause_fits("early-rule", span, r.action.span, problem)
    }

    /// An early `pass` must exempt a fixed set of packets: with a run-time
    /// set (dynamic or a feed) which packets skip the early rules is only
    /// known in the kernel, and `lint` and `diff` decide exemptions exactly.
    /// And a `notrack` pass after one would never untrack the packets it
    /// exempted (they left the early chain before it), though nft still
    /// passes them in the input chain. Checked once all rules are lowered.
    pub(super) fn check_early_passes(&mut self) {
        let mut problems: Vec<(Span, Option<Span>, &str, &str)> = Vec::new();
        for ch in &self.out.chains {
            let mut exemption: Option<&Rule> = None;
            for r in ch.rules.iter().filter(|r| r.early) {
                let runtime = |a: &AddrMatch| {
                    matches!(a, AddrMatch::Set { set, .. }
                        if !matches!(self.out.set(set).map(|s| &s.kind), Some(SetKind::Static { .. })))
                };
                let problem = if r.exempts() && (runtime(&r.matches.src) || runtime(&r.matches.dst)) {
                    Some((None, "an early `pass` cannot match a run-time set", "which packets skip the early rules must be fixed by the policy; list the addresses, or use a static `set NAME = { ... }`"))
                } else if let (true, Some(e)) = (r.notrack, exemption) {
                    Some((Some(e.origin.span), "a `notrack` rule after an early `pass`", "packets the early pass let through never reach it in the early chain, so they would be tracked; put the `notrack` rules first"))
                } else {
                    None
                };
                if let Some((related, message, help)) = problem {
                    if !problems.iter().any(|(span, ..)| *span == r.origin.span) {
                        problems.push((r.origin.span, related, message, help));
                    }
                }
                if r.exempts() {
                    exemption = exemption.or(Some(r));
                }
            }
        }
        for (span, related, message, help) in problems {
            let mut d = Diag::error("early-rule", span, message, "early rule").with_help(help);
            if let Some(at) = related {
                d = d.with_related(at, "early pass before it");
            }
            self.diags.push(d);
        }
    }

    /// `from urpf-failed` looks the source up as the route back to it: only
    /// an arriving packet has an input interface to compare (nft accepts
    /// `fib saddr . iif` in prerouting, input and forward, not output).
    pub(super) fn urpf_allowed(&mut self, r: &ast::RuleAst, span: Span) -> bool {
        let problem = (r.direction.node == Direction::Out).then_some((
            "an `out` rule has no reverse path to check",
            "`from urpf-failed` tests where an arriving packet's source is routed; write it in an `in` or `forward` rule (or `block in from urpf-failed early` for both)",
        ));
        self.clause_fits("urpf-rule", span, r.action.span, problem)
    }

    /// `to self` / `to !self`: whether the destination must be (or must not
    /// be) one of this host's addresses. `self` names destinations only, and
    /// `!self except X` (not ours, or X) is no single test.
    fn self_clauses(&mut self, c: &Clauses<'_>) -> Option<bool> {
        if let Some((_, span)) = c.from.filter(|(h, _)| h.local) {
            self.diags.push(
                Diag::error("self-match", span, "`self` is a destination: `from self` is not supported", "source")
                    .with_help(
                    "`to self` matches packets addressed to this host; for packets this host sends write an `out` rule",
                ),
            );
        }
        let (h, span) = c.to.filter(|(h, _)| h.local)?;
        if h.negated && h.except.is_some() {
            self.diags.push(
                Diag::error("self-match", span, "`to !self except ...` is not one test", "negated self with except")
                    .with_help("write `to !self` and a separate rule for the excepted addresses"),
            );
        }
        Some(!h.negated)
    }

    /// `notrack` marks an early `pass`: the raw-priority chain keeps the
    /// packet from conntrack, and the same rule passes it in the filter chain.
    /// A limit or quota there would let the excess fall through untracked
    /// past the other early rules, so it is refused.
    pub(super) fn notrack_allowed(&mut self, r: &ast::RuleAst, c: &Clauses<'_>, span: Span) -> bool {
        let problem = if c.early.is_none() {
            Some((
                "`notrack` needs `early`",
                "conntrack has seen the packet before the filter chains run; add `early` so the rule runs in the raw-priority chain before it",
            ))
        } else if r.action.node != Action::Pass {
            Some(("`notrack` on a rule that does not pass", "a dropped packet is never tracked; remove `notrack`"))
        } else if r.direction.node == Direction::Forward {
            Some((
                "`notrack` is for this host's own traffic",
                "write `pass in ... early notrack` or `pass out ... early notrack`; forwarded packets stay tracked",
            ))
        } else if c.limit.is_some() || c.quota.is_some() {
            Some((
                "a `notrack` rule cannot have a `limit` or `quota`",
                "packets over it would skip conntrack without being passed; rate-limit in a later rule instead",
            ))
        } else {
            None
        };
        self.clause_fits("notrack-rule", span, r.action.span, problem)
    }

    /// True without a problem; else reports it at the clause (`code`, e.g.
    /// `early-rule` for the `early` clause), with the rule's verb as context.
    fn clause_fits(&mut self, code: &'static str, span: Span, verb: Span, problem: Option<(&str, &str)>) -> bool {
        let Some((message, help)) = problem else { return true };
        let clause = code.trim_end_matches("-rule");
        self.diags.push(
            Diag::error(code, span, message, format!("{clause} here")).with_related(verb, "rule").with_help(help),
        );
        false
    }

    /// A name nft takes for a counter object: a letter or `_`, then
    /// letters, digits, `_`, `-` or `.`, at most 64 bytes.
    fn counter_name<'n>(&mut self, name: &'n str, span: Span) -> Option<&'n str> {
        let mut chars = name.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        if first_ok && name.len() <= 64 && chars.all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)) {
            return Some(name);
        }
        self.diags.push(
            Diag::error("bad-counter-name", span, format!("`{name}` cannot name an nft counter"), "counter name")
                .with_help("start with a letter or `_`, then letters, digits, `_`, `-` or `.` (at most 64)"),
        );
        None
    }

    /// A mark as nft takes it: 32 bits.
    fn mark_value(&mut self, n: u64, span: Span) -> Option<(u32, Span)> {
        match u32::try_from(n) {
            Ok(n) => Some((n, span)),
            Err(_) => {
                self.diags.push(
                    Diag::error("bad-mark", span, "a packet mark has 32 bits", "larger than 0xffffffff")
                        .with_help("give a mark from 0 to 4294967295 (0xffffffff)"),
                );
                None
            }
        }
    }

    /// One `set mark` / `set ct mark` (`ct`): a 32-bit value, or a copy of
    /// the other mark (copying a mark onto itself is refused).
    fn set_mark(&mut self, ct: bool, from: MarkSource, span: Span) -> Option<(SetMark, Span)> {
        let set = match (ct, from) {
            (false, MarkSource::Value(n)) => SetMark::Mark(self.mark_value(n, span)?.0),
            (true, MarkSource::Value(n)) => SetMark::CtMark(self.mark_value(n, span)?.0),
            (false, MarkSource::CtMark) => SetMark::MarkFromCtMark,
            (true, MarkSource::Mark) => SetMark::CtMarkFromMark,
            (false, MarkSource::Mark) | (true, MarkSource::CtMark) => {
                self.diags.push(
                    Diag::error("ct-mark", span, "a mark copied onto itself", "changes nothing")
                        .with_help("`set ct mark from mark` saves the packet mark on the connection; `set mark from ct mark` restores it"),
                );
                return None;
            }
        };
        Some((set, span))
    }

    /// The connection mark exists once conntrack has seen the packet: not
    /// in an early rule. Restoring it on a pass rule is refused: nft stops
    /// a rule that reads the ct mark of a packet without a connection, so
    /// the pass would not apply to invalid or untracked packets.
    fn ct_mark_allowed(&mut self, r: &ast::RuleAst, c: &Clauses<'_>) -> bool {
        let ct_span = c.ct_mark.map(|(_, s)| s).or(c.sets.iter().find(|(s, _)| s.uses_ct()).map(|(_, s)| *s));
        let problem = match (ct_span, c.early) {
            (Some(span), Some(_)) => Some((
                span,
                "an early rule has no connection mark",
                "early rules run before conntrack; match or set the ct mark in a later rule or a `match` rule",
            )),
            _ => c.sets.iter().find(|(s, _)| *s == SetMark::MarkFromCtMark).map(|(_, span)| {
                (
                    *span,
                    "`set mark from ct mark` on a pass rule",
                    "a packet without a connection would skip the pass (nft stops the rule where it reads the ct mark); restore the mark in a `match in` rule",
                )
            }),
        };
        let Some((span, message, help)) = problem else { return true };
        self.diags.push(
            Diag::error("ct-mark", span, message, "connection mark here")
                .with_related(r.action.span, "rule")
                .with_help(help),
        );
        false
    }

    /// Checks `with ...` against the rule's verdict, protocols and families.
    pub(super) fn reject_with(
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
    pub(super) fn out_rule(&mut self, hook: Hook, rule: Rule) {
        if let Some(ch) = self.out.chains.iter_mut().find(|c| c.hook == hook) {
            let at = if rule.early { ch.rules.iter().take_while(|r| r.early).count() } else { ch.rules.len() };
            ch.rules.insert(at, rule);
        }
    }

    /// The header matches of a rule, one per protocol and family it expands to.
    pub(super) fn shapes(&mut self, c: &Clauses<'_>, span: Span) -> Option<Vec<Match>> {
        let errors_before = self.diags.len();
        let dst_local = self.self_clauses(c);
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
                let listed = |p: Option<u8>| p.is_some_and(|p| list.iter().any(|(q, _)| *q == p));
                for (_, items, _) in sports.iter().chain(dports.iter()) {
                    for it in items {
                        // A service name served on several protocols conflicts only if none is listed.
                        let reported = items.iter().take_while(|o| !std::ptr::eq(*o, it)).any(|o| o.span == it.span);
                        if it.named && (reported || items.iter().any(|o| o.span == it.span && listed(o.proto))) {
                            continue;
                        }
                        if it.proto.is_some() && !listed(it.proto) {
                            let served: Vec<String> = items
                                .iter()
                                .filter(|o| o.span == it.span)
                                .filter_map(|o| o.proto.map(names::proto_name))
                                .collect();
                            self.diags.push(
                                Diag::error(
                                    "proto-conflict",
                                    it.span,
                                    format!("service is {} but the rule is for another protocol", served.join(" and ")),
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
                    mark: c.mark.map(|(n, _)| n),
                    ct_mark: c.ct_mark.map(|(n, _)| n),
                    urpf_failed: c.urpf.is_some(),
                    dst_local,
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
    pub(super) fn families(
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

    /// A rate that lets packets through: not 0, and a burst of at least 1.
    fn check_limit(&mut self, l: &ast::LimitSpec, span: Span) {
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

    /// A `log` clause: its prefix (checked for length), line rate and NFLOG group.
    pub(super) fn log(&mut self, prefix: String, spec: &ast::LogSpec, span: Span) -> Log {
        let limit = spec.limit.as_ref().map(|l| {
            self.check_limit(&l.node, l.span);
            Limit { rate: l.node.rate, unit: l.node.unit, burst: l.node.burst, per_source: None }
        });
        let group = spec.group.as_ref().and_then(|g| match u16::try_from(g.node) {
            Ok(n) => Some(n),
            Err(_) => {
                self.diags.push(
                    Diag::error("bad-log-group", g.span, "NFLOG groups are 0 to 65535", format!("group {}", g.node))
                        .with_help("pick the group `phantomc log` (or ulogd) listens on, e.g. `log group 1`"),
                );
                None
            }
        });
        Log { prefix: self.log_prefix_from(prefix, span), limit, group }
    }

    pub(super) fn log_prefix_from(&mut self, prefix: String, span: Span) -> String {
        let full = format!("{} {prefix}", self.out.table);
        if full.len() > MAX_LOG_PREFIX {
            self.diags.push(
                Diag::error("long-log-prefix", span, "log prefix is too long", format!("{} bytes", full.len()))
                    .with_help(format!("nft log prefixes are at most {MAX_LOG_PREFIX} bytes; shorten the log text")),
            );
        }
        full
    }
}
