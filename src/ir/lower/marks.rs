//! `match` statements: packet marks set before the filter chains.

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
                    | RuleOpt::Counter(_)
            )
        });
        let problem = if let Some(o) = other {
            Some((o.span, format!("`{}` is not available on a match rule", o.node.keyword()), "match rules only choose packets (interfaces, addresses, protocol, ports, mark) and set a mark; they run before conntrack and decide nothing"))
        } else if c.set_mark.is_none() && !m.opts.iter().any(|o| matches!(o.node, RuleOpt::SetMark(_))) {
            Some((
                m.span,
                "a match rule without `set mark`".to_string(),
                "add `set mark N`: a match rule only marks packets",
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
        let Some((mark, _)) = c.set_mark else { return }; // a bad value is reported already
        let hook = if m.direction.node == Direction::Out { Hook::Output } else { Hook::Input };
        for matches in shapes {
            self.out.marks.push(MarkRule {
                origin: origin.clone(),
                hook,
                matches,
                mark,
                counter: c.counter.unwrap_or(true),
            });
        }
    }
}
