//! `flowtable` statements and the `offload` clauses that name them.

use super::*;

impl<'a> Lowerer<'a> {
    pub(super) fn flowtable(&mut self, idx: usize, name: &Spanned<String>, devices: &Value, span: Span) {
        if let Some(prev) = self.out.flowtables.iter().find(|f| f.name == name.node) {
            self.diags.push(
                Diag::error(
                    "flowtable",
                    name.span,
                    format!("flowtable `{}` is declared twice", name.node),
                    "again here",
                )
                .with_related(prev.origin.span, "first declared here")
                .with_help("give each flowtable its own name, or list every device in one"),
            );
            return;
        }
        let Some(ifaces) = self.ifaces(&IfaceSpec { negated: false, value: devices.clone() }) else { return };
        if let Some(wild) = ifaces.names.iter().find(|n| n.ends_with('*')) {
            self.diags.push(
                Diag::error(
                    "flowtable",
                    span,
                    format!("`{wild}` is a pattern; a flowtable needs device names"),
                    "devices",
                )
                .with_help("the kernel hooks a flowtable on each listed device: name them (`devices { eth0, eth1 }`)"),
            );
            return;
        }
        let origin = self.origin(span, idx);
        self.out.flowtables.push(Flowtable { origin, name: name.node.clone(), devices: ifaces.names });
    }

    /// `offload` belongs on `pass forward` rules: a flowtable holds forwarded
    /// connections only, and only accepted ones.
    pub(super) fn offload_allowed(&mut self, r: &ast::RuleAst, span: Span) -> bool {
        let problem = if r.direction.node != Direction::Forward {
            Some((
                "`offload` on a rule that is not `forward`",
                "a flowtable is a fast path for forwarded connections; traffic to or from this host always meets its chains",
            ))
        } else if r.action.node != Action::Pass {
            Some(("`offload` on a rule that does not pass", "only accepted connections can take the fast path"))
        } else {
            None
        };
        let Some((message, help)) = problem else {
            let name = r.opts.iter().find_map(|o| match &o.node {
                RuleOpt::Offload(n) => Some(n.clone()),
                _ => None,
            });
            self.offloads.push((name.flatten(), span));
            return true;
        };
        self.diags.push(
            Diag::error("flowtable", span, message, "offload here").with_related(r.action.span, "rule").with_help(help),
        );
        false
    }

    /// Every `offload` names a declared flowtable; a bare `offload` takes the
    /// only one there is.
    pub(super) fn resolve_offloads(&mut self) {
        let names: Vec<String> = self.out.flowtables.iter().map(|f| f.name.clone()).collect();
        for (name, span) in std::mem::take(&mut self.offloads) {
            let problem = match (&name, names.as_slice()) {
                (Some(n), _) if names.contains(n) => None,
                (Some(n), _) => Some(format!("no flowtable `{n}` is declared")),
                (None, []) => Some("`offload` without a flowtable".to_string()),
                (None, [_]) => None,
                (None, _) => Some("`offload` without a name, and several flowtables are declared".to_string()),
            };
            if let Some(message) = problem {
                self.diags.push(Diag::error("flowtable", span, message, "offload here").with_help(
                    "declare `flowtable NAME { devices { eth0, eth1 } }` and write `offload NAME` when there are several",
                ));
            }
        }
        if let [only] = names.as_slice() {
            for r in self.out.chains.iter_mut().flat_map(|c| &mut c.rules) {
                if r.offload.as_deref() == Some("") {
                    r.offload = Some(only.clone());
                }
            }
        }
    }
}
