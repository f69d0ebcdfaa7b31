//! `match` statements: packet and connection marks set before the filter
//! chains, and the order checks between them and early rules.

use super::*;

impl<'a> Lowerer<'a> {
    pub(super) fn match_rule(&mut self, idx: usize, m: &ast::MatchAst) {
        let c = self.clauses(&m.direction, &m.opts);
        // Only header matches and the mark: the rule decides nothing, and it
        // runs before conntrack.
        let other = m.opts.iter().find(|o| {
            !matches!(
                o.node,
                RuleOpt::On(_)
                    | RuleOpt::InOn(_)
                    | RuleOpt::OutOn(_)
                    | RuleOpt::Family(_)
                    | RuleOpt::Proto(_)
                    | RuleOpt::From(_)
                    | RuleOpt::To(_)
                    | RuleOpt::IcmpType(_)
                    | RuleOpt::Mark(_)
                    | RuleOpt::SetMark(_)
                    | RuleOpt::CtMark(_)
                    | RuleOpt::SetCtMark(_)
                    | RuleOpt::Counter(_)
            )
        });
        let problem = if let Some(o) = other {
            Some((o.span, format!("`{}` is not available on a match rule", o.node.keyword()), "match rules only choose packets (interfaces, addresses, protocol, ports, mark) and set a mark; they run before conntrack and decide nothing"))
        } else if !m.opts.iter().any(|o| matches!(o.node, RuleOpt::SetMark(_) | RuleOpt::SetCtMark(_))) {
            Some((
                m.span,
                "a match rule without `set mark`".to_string(),
                "add `set mark N` or `set ct mark N`: a match rule only marks packets",
            ))
        } else if m.direction.node == Direction::Forward {
            Some((
                m.direction.span,
                "a match rule cannot be `forward`".to_string(),
                "`match in` marks arriving packets before routing, for this host and forwarded alike",
            ))
        } else if let (Some((_, span)), Direction::In) = (&c.oif, m.direction.node) {
            Some((
                *span,
                "a `match in` rule cannot use `out on`".to_string(),
                "it runs before routing chooses an output interface",
            ))
        } else {
            None
        };
        if let Some((span, message, help)) = problem {
            self.diags.push(
                Diag::error("match-rule", span, message, "here").with_related(m.keyword, "match rule").with_help(help),
            );
            return;
        }
        let origin = self.origin(m.span, idx);
        let Some(shapes) = self.shapes(&c, m.span) else { return };
        if c.sets.is_empty() {
            return; // a bad value is reported already
        }
        let hook = if m.direction.node == Direction::Out { Hook::Output } else { Hook::Input };
        let sets: Vec<SetMark> = c.sets.iter().map(|(s, _)| *s).collect();
        for matches in shapes {
            let rule = MarkRule {
                origin: origin.clone(),
                hook,
                matches,
                sets: sets.clone(),
                counter: c.counter.unwrap_or(true),
            };
            if !self.runs_in_order(&rule, m.keyword) {
                return;
            }
            self.out.marks.push(rule);
        }
    }

    /// Match rules that use the connection mark run after conntrack, after
    /// the others of their direction (at raw priority): a plain one written
    /// after such a rule would run before it, so it is refused.
    fn runs_in_order(&mut self, rule: &MarkRule, keyword: Span) -> bool {
        if rule.uses_ct() {
            return true;
        }
        let Some(ct) = self.out.marks.iter().find(|mr| mr.hook == rule.hook && mr.uses_ct()) else { return true };
        self.diags.push(
            Diag::error(
                "ct-mark",
                rule.origin.span,
                "this match rule would run before an earlier one",
                "runs at raw priority",
            )
            .with_related(ct.origin.span, "uses the connection mark: runs after conntrack")
            .with_related(keyword, "match rule")
            .with_help("write the match rules that use `ct mark` after the other match rules of their direction"),
        );
        false
    }

    /// Early rules run before conntrack, so before the match rules that
    /// use the connection mark: one that tests `mark` would not see a mark
    /// such a rule sets. Checked once all rules are lowered.
    pub(super) fn check_early_marks(&mut self) {
        let sets_mark = |mr: &&MarkRule| {
            mr.uses_ct() && mr.sets.iter().any(|s| matches!(s, SetMark::Mark(_) | SetMark::MarkFromCtMark))
        };
        let mut problems = Vec::new();
        for ch in &self.out.chains {
            let Some(late) = self.out.marks.iter().filter(|mr| mr.runs_before(ch.hook)).find(sets_mark) else {
                continue;
            };
            for r in ch.rules.iter().filter(|r| r.early && r.matches.mark.is_some()) {
                if !problems.iter().any(|(span, _)| *span == r.origin.span) {
                    problems.push((r.origin.span, late.origin.span));
                }
            }
        }
        for (early, late) in problems {
            self.diags.push(
                Diag::error("ct-mark", early, "this early rule tests a mark set after it runs", "early rule with `mark`")
                    .with_related(late, "sets the mark after conntrack")
                    .with_help("early rules run before conntrack; test the mark in a rule that is not early, or set it in a match rule without `ct mark`"),
            );
        }
    }
}
