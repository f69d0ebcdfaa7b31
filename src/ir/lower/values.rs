//! Value resolution: defines, interfaces, protocols, ports, addresses (with
//! exclusions), conntrack states and ICMP types.

use super::*;

impl<'a> Lowerer<'a> {
    /// Takes `n` elements from the budget; false (reported once) when it is spent.
    pub(super) fn spend_elements(&mut self, n: usize, span: Span) -> bool {
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

    /// Expands macros (recursively, already expanded at their define) and
    /// flattens lists, for anything but a named set: entry timeouts are
    /// refused (only a named set's elements can time out in nft).
    pub(super) fn expand(&mut self, value: &Value) -> Vec<Resolved> {
        let mut out = self.expand_entries(value);
        for r in &mut out {
            if let Some(span) = r.timeout.take().and_then(|t| t.written) {
                let d = Diag::error(
                    "entry-timeout",
                    span,
                    "a timeout on a list entry needs a named set",
                    "only a named set's entries can time out",
                )
                .with_help("declare `set NAME = { ADDRESS timeout 1h, ... }` and match `<NAME>`");
                self.diags.push(d);
            }
        }
        out
    }

    /// [`Self::expand`] keeping each entry's timeout: for named sets and defines.
    pub(super) fn expand_entries(&mut self, value: &Value) -> Vec<Resolved> {
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
                            timeout: None,
                        });
                    }
                }
                Item::SetRef(name) => {
                    self.used.insert(format!("<{name}>"));
                    out.push(Resolved { item: it.node.clone(), span: it.span, via: None, timeout: None });
                }
                Item::Except(inner) => {
                    let inner = Value { items: vec![(**inner).clone()], span: inner.span };
                    for r in self.expand_entries(&inner) {
                        let span = r.span;
                        out.push(Resolved { item: Item::Except(Box::new(Spanned::new(r.item, span))), ..r });
                    }
                }
                Item::Expiring { item, date } => {
                    let what = self.sources.snippet(item.span).to_string();
                    if self.expiry("entry", what, date.node, it.span) {
                        // In force to the end of its day (UTC).
                        let end = u64::try_from(date.node.days() + 1).unwrap_or(0) * 86_400;
                        let seconds = end.saturating_sub(self.now).clamp(1, MAX_ENTRY_TIMEOUT);
                        let left = EntryTimeout { seconds, written: None };
                        let inner = Value { items: vec![(**item).clone()], span: item.span };
                        out.extend(
                            self.expand_entries(&inner)
                                .into_iter()
                                .map(|r| Resolved { timeout: Some(left.min(r.timeout)), ..r }),
                        );
                    }
                }
                Item::Timed { item, seconds } => {
                    let written = EntryTimeout { seconds: seconds.node, written: Some(seconds.span) };
                    if seconds.node == 0 || seconds.node > MAX_ENTRY_TIMEOUT {
                        let d = Diag::error(
                            "entry-timeout",
                            seconds.span,
                            format!("an entry timeout must be 1s to {MAX_ENTRY_TIMEOUT}s"),
                            "out of range",
                        )
                        .with_help("for an entry that never times out, leave `timeout` out");
                        self.diags.push(d);
                    }
                    let inner = Value { items: vec![(**item).clone()], span: item.span };
                    out.extend(
                        self.expand_entries(&inner)
                            .into_iter()
                            .map(|r| Resolved { timeout: Some(written.min(r.timeout)), ..r }),
                    );
                }
                other => out.push(Resolved { item: other.clone(), span: it.span, via: None, timeout: None }),
            }
        }
        out
    }

    /// Records an `expires` date; false when it has passed (the rule or entry is left out).
    pub(super) fn expiry(&mut self, kind: &'static str, what: String, date: Date, span: Span) -> bool {
        let expired = date < self.today;
        let origin = self.origin(span, self.stmt);
        self.out.expiries.push(Expiry { kind, what, date, expired, origin });
        !expired
    }

    pub(super) fn unknown_macro(&mut self, name: &str, span: Span) {
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

    /// `on [!]VALUE`. An excluded entry (`on { eth0, !docker0 }`) is refused:
    /// an interface has one name, so only the whole list can be negated.
    pub(super) fn ifaces(&mut self, spec: &IfaceSpec) -> Option<Ifaces> {
        let mut names = Vec::new();
        for r in self.expand(&spec.value) {
            match &r.item {
                Item::Name(n) if n.len() <= MAX_IFNAME => names.push(n.clone()),
                Item::Name(n) => self.diags.push(
                    r.diag("bad-iface", format!("interface name `{n}` is too long"), format!("{} characters", n.len()))
                        .with_help(format!("Linux interface names have at most {MAX_IFNAME} characters")),
                ),
                Item::Except(inner) => {
                    let name = match &inner.node {
                        Item::Name(n) => n.clone(),
                        _ => "IFACE".to_string(),
                    };
                    self.diags.push(
                        r.diag("iface-negation", "an interface list cannot exclude one of its entries", "excluded entry")
                            .with_help(format!(
                                "negate the whole clause instead: `on !{name}` or `on !{{ {name}, ... }}` matches every interface but those"
                            )),
                    )
                }
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
        (!names.is_empty()).then(|| {
            names.sort();
            names.dedup();
            Ifaces { negated: spec.negated, names }
        })
    }

    pub(super) fn protos(&mut self, v: &Value) -> Vec<(u8, Span)> {
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

    pub(super) fn ports(&mut self, v: &Value) -> Vec<PortItem> {
        let mut out = Vec::new();
        for r in self.expand(v) {
            let (proto, item, span) = match &r.item {
                Item::Service { proto, port } => (names::proto_number(proto), port.node.clone(), r.span),
                other => (None, other.clone(), r.span),
            };
            let (lo, hi) = match item {
                Item::Number(n) => (n, n),
                Item::PortRange(a, b) => (u64::from(a), u64::from(b)),
                Item::Name(n) if proto.is_none() => {
                    match names::service(&n) {
                        Some((port, protos)) => out.extend(protos.iter().map(|&p| PortItem {
                            proto: Some(p),
                            lo: port,
                            hi: port,
                            span,
                            named: true,
                        })),
                        None => {
                            let mut d =
                                r.diag("unknown-service", format!("unknown service name `{n}`"), "not a service");
                            d = match crate::diag::suggest(&n, names::SERVICES.iter().map(|(name, ..)| *name)) {
                                Some(s) => d.with_help(format!("did you mean `{s}`?")),
                                None => d.with_help(
                                    "write the port number; the service names phantomc knows are listed in docs/language.md",
                                ),
                            };
                            self.diags.push(d);
                        }
                    }
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
            out.push(PortItem { proto, lo: lo as u16, hi: hi as u16, span, named: false });
        }
        out
    }

    pub(super) fn addrs(&mut self, spec: &HostSpec) -> AddrSpec {
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
    pub(super) fn excluded_net(&mut self, r: &Resolved, inner: &Spanned<Item>) -> Option<(IpNet, Span)> {
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
    pub(super) fn exclude(&mut self, nets: Vec<(IpNet, Span)>, excluded: &[(IpNet, Span)]) -> Vec<(IpNet, Span)> {
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
    pub(super) fn addr_families(&self, spec: &AddrSpec) -> Vec<Family> {
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

    pub(super) fn addr_match(&self, spec: &AddrSpec, family: Family) -> AddrMatch {
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

    pub(super) fn ct_states(&mut self, v: &Value) -> Option<CtStates> {
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

    pub(super) fn icmp_types(&mut self, items: &[Resolved], proto: u8) -> Vec<u8> {
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
}

pub(super) fn merge_ranges(mut ranges: Vec<(u16, u16)>) -> Vec<(u16, u16)> {
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
