//! NAT statements: masquerade, snat and dnat.

use super::*;

impl<'a> Lowerer<'a> {
    pub(super) fn nat(&mut self, idx: usize, n: &ast::NatAst) {
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
                    | RuleOpt::Quota(_)
                    | RuleOpt::Log(_)
                    | RuleOpt::IcmpType(_)
                    | RuleOpt::RejectWith { .. }
                    | RuleOpt::Early
                    | RuleOpt::Notrack
                    | RuleOpt::Mark(_)
                    | RuleOpt::SetMark(_)
                    | RuleOpt::CtMark(_)
                    | RuleOpt::SetCtMark(_)
                    | RuleOpt::Offload(_)
                    | RuleOpt::NamedCounter(_)
                    | RuleOpt::UrpfFailed
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
        if let Some((_, span)) = c.to.filter(|(h, _)| h.local && kind != NatKind::Dnat) {
            self.diags.push(
                Diag::error(
                    "self-match",
                    span,
                    format!("`to self` on a {} rule", nat_keyword(kind)),
                    "not addressed to this host",
                )
                .with_help("source NAT rewrites packets leaving this host; `to self` belongs on `dnat` (prerouting) and filter rules"),
            );
            return;
        }
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

    pub(super) fn nat_target(&mut self, t: &ast::NatTarget, kind: NatKind) -> Option<(IpAddr, Option<u16>)> {
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
}

pub(super) fn nat_keyword(k: NatKind) -> &'static str {
    match k {
        NatKind::Masquerade => "masquerade",
        NatKind::Snat => "snat",
        NatKind::Dnat => "dnat",
    }
}
