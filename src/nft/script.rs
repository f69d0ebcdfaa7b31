//! Prints an [`NftTable`] as an nft script (`nft -f` syntax).
//!
//! Only the statements [`super::emit`] produces are printed; anything else
//! is a bug in phantomc, reported by a panic in tests rather than printed wrong.

use std::fmt::Write;

use nftables::expr::{Expression, FibFlag, MetaKey, NamedExpression, Payload, SetItem, Verdict};
use nftables::schema::{self, SetFlag, SetType, SetTypeValue};
use nftables::stmt::{Counter, NATFamily, Operator, RejectType, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfHook};

use super::emit::NftTable;

/// The whole script: replaces phantomc's table atomically when run with `nft -f`.
pub fn script(t: &NftTable, header: &str) -> String {
    let mut out = String::new();
    for line in header.lines() {
        let _ = writeln!(out, "# {line}");
    }
    let name = &t.name;
    // `table` creates it if missing so that `delete` cannot fail; nft runs
    // the whole file as one transaction.
    let _ = writeln!(out, "table inet {name}\ndelete table inet {name}\n\ntable inet {name} {{");
    let mut first = true;
    for s in &t.sets {
        if !first {
            out.push('\n');
        }
        first = false;
        set(&mut out, s);
    }
    for m in &t.maps {
        if !first {
            out.push('\n');
        }
        first = false;
        map(&mut out, m);
    }
    for c in &t.counters {
        if !first {
            out.push('\n');
        }
        first = false;
        let _ = writeln!(out, "\tcounter {c} {{\n\t}}");
    }
    for f in &t.flowtables {
        if !first {
            out.push('\n');
        }
        first = false;
        let devices: Vec<String> = f.dev.iter().flat_map(|d| d.iter()).map(|d| quote(d)).collect();
        let _ = writeln!(
            out,
            "\tflowtable {} {{\n\t\thook ingress priority filter; devices = {{ {} }};\n\t}}",
            f.name,
            devices.join(", ")
        );
    }
    for c in &t.chains {
        if !first {
            out.push('\n');
        }
        first = false;
        let ch = &c.chain;
        let _ = writeln!(out, "\tchain {} {{", ch.name);
        if let (Some(kind), Some(hook), Some(prio)) = (ch._type, ch.hook, ch.prio) {
            let policy = match ch.policy {
                Some(NfChainPolicy::Drop) => "drop",
                _ => "accept",
            };
            let _ = writeln!(
                out,
                "\t\ttype {} hook {} priority {}; policy {policy};",
                chain_type(kind),
                hook_name(hook),
                prio_name(kind, prio)
            );
        }
        for r in &c.rules {
            let _ = writeln!(out, "\t\t{}", rule(r));
        }
        out.push_str("\t}\n");
    }
    out.push_str("}\n");
    out
}

/// A set's key types, and their nft names joined (`ipv4_addr . inet_service`).
fn key_types<'a>(t: &'a SetTypeValue<'_>) -> (Vec<&'a SetType>, String) {
    let types: Vec<&SetType> = match t {
        SetTypeValue::Single(t) => vec![t],
        SetTypeValue::Concatenated(ts) => ts.iter().collect(),
    };
    let name = |t: &SetType| match t {
        SetType::Ipv6Addr => "ipv6_addr",
        SetType::InetService => "inet_service",
        SetType::Ifname => "ifname",
        _ => "ipv4_addr",
    };
    let joined = types.iter().map(|t| name(t)).collect::<Vec<_>>().join(" . ");
    (types, joined)
}

fn flags_line(out: &mut String, flags: &Option<std::collections::HashSet<SetFlag>>) {
    if let Some(flags) = flags {
        let mut names: Vec<&str> = flags
            .iter()
            .map(|f| match f {
                SetFlag::Interval => "interval",
                SetFlag::Timeout => "timeout",
                SetFlag::Constant => "constant",
                SetFlag::Dynamic => "dynamic",
            })
            .collect();
        names.sort_unstable();
        let _ = writeln!(out, "\t\tflags {}", names.join(","));
    }
}

/// A verdict map (the only kind of map phantomc emits).
fn map(out: &mut String, m: &schema::Map<'_>) {
    let _ = writeln!(out, "\tmap {} {{", m.name);
    let (types, ty) = key_types(&m.set_type);
    let _ = writeln!(out, "\t\ttype {ty} : verdict");
    flags_line(out, &m.flags);
    if let Some(elems) = &m.elem {
        let quoted: Vec<bool> = types.iter().map(|t| matches!(t, SetType::Ifname)).collect();
        let items: Vec<String> = elems
            .iter()
            .map(|e| match e {
                Expression::List(pair) => format!("{} : {}", element(&pair[0], &quoted), verdict(&pair[1])),
                other => unreachable!("a verdict map element is a key and a verdict, not {other:?}"),
            })
            .collect();
        let _ = writeln!(out, "\t\telements = {{ {} }}", wrap_elements(&items));
    }
    out.push_str("\t}\n");
}

fn verdict(e: &Expression<'_>) -> String {
    match e {
        Expression::Verdict(Verdict::Jump(j)) => format!("jump {}", j.target),
        Expression::Verdict(Verdict::Goto(j)) => format!("goto {}", j.target),
        other => unreachable!("emit never maps to {other:?}"),
    }
}

fn set(out: &mut String, s: &schema::Set<'_>) {
    let _ = writeln!(out, "\tset {} {{", s.name);
    let (types, ty) = key_types(&s.set_type);
    let _ = writeln!(out, "\t\ttype {ty}");
    flags_line(out, &s.flags);
    if let Some(t) = s.timeout {
        let _ = writeln!(out, "\t\ttimeout {t}s");
    }
    if let Some(c) = &s.comment {
        let _ = writeln!(out, "\t\tcomment {}", quote(c));
    }
    if super::run::counts_elements(s) {
        let _ = writeln!(out, "\t\tcounter");
    }
    if let Some(elems) = &s.elem {
        // Interface names are strings to nft: quoted like in a rule.
        let quoted: Vec<bool> = types.iter().map(|t| matches!(t, SetType::Ifname)).collect();
        let items: Vec<String> = elems.iter().map(|e| element(e, &quoted)).collect();
        let _ = writeln!(out, "\t\telements = {{ {} }}", wrap_elements(&items));
    }
    out.push_str("\t}\n");
}

/// Long element lists are wrapped so the script stays readable.
fn wrap_elements(items: &[String]) -> String {
    items.chunks(4).map(|c| c.join(", ")).collect::<Vec<_>>().join(",\n\t\t\t     ")
}

fn chain_type(k: NfChainType) -> &'static str {
    match k {
        NfChainType::Filter => "filter",
        NfChainType::NAT => "nat",
        NfChainType::Route => "route",
    }
}

fn hook_name(h: NfHook) -> &'static str {
    match h {
        NfHook::Ingress => "ingress",
        NfHook::Prerouting => "prerouting",
        NfHook::Forward => "forward",
        NfHook::Input => "input",
        NfHook::Output => "output",
        NfHook::Postrouting => "postrouting",
        NfHook::Egress => "egress",
    }
}

fn prio_name(kind: NfChainType, prio: i32) -> String {
    match (kind, prio) {
        (NfChainType::Filter, 0) => "filter".into(),
        (NfChainType::Filter, -300) => "raw".into(),
        (NfChainType::Filter | NfChainType::Route, -150) => "mangle".into(),
        (NfChainType::NAT, -100) => "dstnat".into(),
        (NfChainType::NAT, 100) => "srcnat".into(),
        _ => prio.to_string(),
    }
}

pub fn rule(r: &schema::Rule<'_>) -> String {
    let mut parts: Vec<String> = r.expr.iter().map(statement).collect();
    if let Some(c) = &r.comment {
        parts.push(format!("comment {}", quote(c)));
    }
    parts.join(" ")
}

fn statement(s: &Statement<'_>) -> String {
    match s {
        Statement::Match(m) => {
            let quoted = matches!(&m.left, Expression::Named(NamedExpression::Meta(meta)) if matches!(meta.key, MetaKey::Iifname | MetaKey::Oifname));
            let right = match (&m.left, &m.right) {
                // nft's word for "no such interface": `fib ... oif missing`.
                (Expression::Named(NamedExpression::Fib(_)), Expression::Boolean(false)) => "missing".into(),
                _ if quoted => quoted_value(&m.right),
                _ => value(&m.right),
            };
            match m.op {
                Operator::NEQ => format!("{} != {right}", value(&m.left)),
                _ => format!("{} {right}", value(&m.left)),
            }
        }
        Statement::Counter(Counter::Anonymous(_)) => "counter".into(),
        Statement::Counter(Counter::Named(n)) => format!("counter name {}", quote(n)),
        Statement::Limit(l) => {
            let mut s = format!("limit rate {}/{}", l.rate, l.per.as_deref().unwrap_or("second"));
            if let Some(b) = l.burst {
                let _ = write!(s, " burst {b} packets");
            }
            s
        }
        Statement::Quota(nftables::stmt::QuotaOrQuotaRef::Quota(q)) => format!("quota until {} {}", q.val, q.val_unit),
        Statement::Meter(mt) => format!("meter {} {{ {} {} }}", mt.name, value(&mt.key), statement(&mt.stmt)),
        Statement::Log(Some(l)) => {
            let mut s = "log".to_string();
            if let Some(p) = &l.prefix {
                let _ = write!(s, " prefix {}", quote(p));
            }
            if let Some(g) = l.group {
                let _ = write!(s, " group {g}");
            }
            s
        }
        Statement::Notrack => "notrack".into(),
        Statement::Flow(f) => format!("flow add {}", f.flowtable),
        Statement::VerdictMap(v) => format!("{} vmap {}", value(&v.key), value(&v.data)),
        Statement::Mangle(mg) => format!("{} set {}", value(&mg.key), value(&mg.value)),
        Statement::Accept(_) => "accept".into(),
        Statement::Drop(_) => "drop".into(),
        Statement::Reject(Some(r)) if r._type == Some(RejectType::TCPReset) => "reject with tcp reset".into(),
        // nft's JSON names of the type and code are its script keywords.
        Statement::Reject(Some(nftables::stmt::Reject { _type: Some(t), expr: Some(code) })) => {
            let word = |v: serde_json::Value| v.as_str().unwrap_or_default().to_string();
            let (t, code) = (serde_json::to_value(t), serde_json::to_value(code));
            format!("reject with {} {}", word(t.unwrap_or_default()), word(code.unwrap_or_default()))
        }
        Statement::Reject(_) => "reject".into(),
        Statement::Masquerade(_) => "masquerade".into(),
        Statement::SNAT(Some(n)) | Statement::DNAT(Some(n)) => {
            let verb = if matches!(s, Statement::SNAT(_)) { "snat" } else { "dnat" };
            let fam = match n.family {
                Some(NATFamily::IP6) => " ip6",
                Some(NATFamily::IP) => " ip",
                None => "",
            };
            let addr = n.addr.as_ref().map(value).unwrap_or_default();
            let addr = if fam == " ip6" && n.port.is_some() { format!("[{addr}]") } else { addr };
            match &n.port {
                Some(p) => format!("{verb}{fam} to {addr}:{}", value(p)),
                None => format!("{verb}{fam} to {addr}"),
            }
        }
        other => unreachable!("emit never produces {other:?}"),
    }
}

fn value(e: &Expression<'_>) -> String {
    match e {
        Expression::String(s) => s.to_string(),
        Expression::Number(n) => n.to_string(),
        Expression::Boolean(b) => b.to_string(),
        Expression::List(items) => items.iter().map(value).collect::<Vec<_>>().join(","),
        Expression::Range(r) => format!("{}-{}", value(&r.range[0]), value(&r.range[1])),
        Expression::Named(n) => match n {
            NamedExpression::Set(items) => {
                let items: Vec<String> = items.iter().map(set_item).collect();
                format!("{{ {} }}", items.join(", "))
            }
            NamedExpression::Prefix(p) => format!("{}/{}", value(&p.addr), p.len),
            NamedExpression::Payload(Payload::PayloadField(f)) => format!("{} {}", f.protocol, f.field),
            NamedExpression::Meta(m) => match m.key {
                MetaKey::Iifname => "iifname".into(),
                MetaKey::Oifname => "oifname".into(),
                MetaKey::L4proto => "meta l4proto".into(),
                MetaKey::Nfproto => "meta nfproto".into(),
                MetaKey::Mark => "meta mark".into(),
                other => unreachable!("emit never uses meta {other:?}"),
            },
            NamedExpression::CT(ct) => format!("ct {}", ct.key),
            NamedExpression::Fib(f) => {
                // nft's own order: the address, the mark, the interface.
                let order = [FibFlag::Saddr, FibFlag::Daddr, FibFlag::Mark, FibFlag::Iif, FibFlag::Oif];
                let flags: Vec<String> =
                    order.iter().filter(|x| f.flags.contains(x)).map(|x| format!("{x:?}").to_lowercase()).collect();
                format!("fib {} {:?}", flags.join(" . "), f.result).to_lowercase()
            }
            NamedExpression::Elem(_) => element(e, &[false]),
            NamedExpression::Concat(items) => items.iter().map(value).collect::<Vec<_>>().join(" . "),
            other => unreachable!("emit never produces {other:?}"),
        },
        other => unreachable!("emit never produces {other:?}"),
    }
}

/// A set element, with its timeout, counter and comment; `quoted` says per
/// part of its key (one, or each of a concatenation) whether it is a string.
fn element(e: &Expression<'_>, quoted: &[bool]) -> String {
    let part = |v: &Expression<'_>, q: bool| if q { quoted_value(v) } else { value(v) };
    let text = |v: &Expression<'_>| match v {
        Expression::Named(NamedExpression::Concat(items)) => {
            items.iter().zip(quoted).map(|(v, &q)| part(v, q)).collect::<Vec<_>>().join(" . ")
        }
        other => part(other, quoted.first().copied().unwrap_or(false)),
    };
    match e {
        Expression::Named(NamedExpression::Elem(el)) => {
            let mut out = text(&el.val);
            if let Some(t) = el.timeout {
                out += &format!(" timeout {}", duration(t));
            }
            if el.counter.is_some() {
                out += " counter";
            }
            if let Some(c) = &el.comment {
                out += &format!(" comment {}", quote(c));
            }
            out
        }
        other => text(other),
    }
}

/// Seconds as nft reads a time: `1h`, `26d16h5s` (each number must fit
/// nft's 32-bit signed parse, so a long timeout is split into units).
fn duration(secs: u32) -> String {
    let mut out = String::new();
    let mut left = secs;
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if left >= size {
            out += &format!("{}{unit}", left / size);
            left %= size;
        }
    }
    if out.is_empty() {
        out.push_str("0s");
    }
    out
}

fn set_item(i: &SetItem<'_>) -> String {
    match i {
        SetItem::Element(e) => value(e),
        other => unreachable!("emit never produces {other:?}"),
    }
}

fn quoted_value(e: &Expression<'_>) -> String {
    match e {
        Expression::String(s) if !s.starts_with('@') => quote(s),
        Expression::Named(NamedExpression::Set(items)) => {
            let items: Vec<String> = items
                .iter()
                .map(|i| match i {
                    SetItem::Element(e) => quoted_value(e),
                    other => set_item(other),
                })
                .collect();
            format!("{{ {} }}", items.join(", "))
        }
        other => value(other),
    }
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}
