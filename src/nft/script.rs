//! Prints an [`NftTable`] as an nft script (`nft -f` syntax).
//!
//! Only the statements [`super::emit`] produces are printed; anything else
//! is a bug in phantomc, reported by a panic in tests rather than printed wrong.
//! Every piece is written straight into the one output string: a 10,000-rule
//! policy prints hundreds of thousands of pieces.

use std::fmt::Write;

use nftables::expr::{BinaryOperation, Expression, FibFlag, MetaKey, NamedExpression, Payload, SetItem, Verdict};
use nftables::schema::{self, SetFlag, SetType, SetTypeValue};
use nftables::stmt::{Counter, NATFamily, Operator, RejectType, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfHook};

use super::emit::NftTable;

/// The whole script: replaces phantomc's table atomically when run with `nft -f`.
pub fn script(t: &NftTable, header: &str) -> String {
    let mut out = String::with_capacity(4096 + 160 * t.rule_count());
    for line in header.lines() {
        let _ = writeln!(out, "# {line}");
    }
    let name = &t.name;
    // `table` creates it if missing so that `delete` cannot fail; nft runs
    // the whole file as one transaction.
    let _ = writeln!(out, "table inet {name}\ndelete table inet {name}\n\ntable inet {name} {{");
    let mut first = true;
    let mut separate = |out: &mut String| {
        if !first {
            out.push('\n');
        }
        first = false;
    };
    for s in &t.sets {
        separate(&mut out);
        set(&mut out, s);
    }
    for m in &t.maps {
        separate(&mut out);
        map(&mut out, m);
    }
    for c in &t.counters {
        separate(&mut out);
        let _ = writeln!(out, "\tcounter {c} {{\n\t}}");
    }
    for f in &t.flowtables {
        separate(&mut out);
        let _ = write!(out, "\tflowtable {} {{\n\t\thook ingress priority filter; devices = {{ ", f.name);
        for (i, d) in f.dev.iter().flat_map(|d| d.iter()).enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            quote(&mut out, d);
        }
        out.push_str(" };\n\t}\n");
    }
    for c in &t.chains {
        separate(&mut out);
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
            out.push_str("\t\t");
            rule(&mut out, r);
            out.push('\n');
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
        elements(out, elems, |out, e| match e {
            Expression::List(pair) => {
                element(out, &pair[0], &quoted);
                out.push_str(" : ");
                verdict(out, &pair[1]);
            }
            other => unreachable!("a verdict map element is a key and a verdict, not {other:?}"),
        });
    }
    out.push_str("\t}\n");
}

fn verdict(out: &mut String, e: &Expression<'_>) {
    match e {
        Expression::Verdict(Verdict::Jump(j)) => {
            out.push_str("jump ");
            out.push_str(&j.target);
        }
        Expression::Verdict(Verdict::Goto(j)) => {
            out.push_str("goto ");
            out.push_str(&j.target);
        }
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
        out.push_str("\t\tcomment ");
        quote(out, c);
        out.push('\n');
    }
    if super::json::counts_elements(s) {
        out.push_str("\t\tcounter\n");
    }
    if let Some(elems) = &s.elem {
        // Interface names are strings to nft: quoted like in a rule.
        let quoted: Vec<bool> = types.iter().map(|t| matches!(t, SetType::Ifname)).collect();
        elements(out, elems, |out, e| element(out, e, &quoted));
    }
    out.push_str("\t}\n");
}

/// `elements = { ... }`, four to a line so long lists stay readable.
fn elements<T>(out: &mut String, items: &[T], mut each: impl FnMut(&mut String, &T)) {
    out.push_str("\t\telements = { ");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(if i % 4 == 0 { ",\n\t\t\t     " } else { ", " });
        }
        each(out, item);
    }
    out.push_str(" }\n");
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

/// One rule: its statements and its comment, separated by spaces.
fn rule(out: &mut String, r: &schema::Rule<'_>) {
    for (i, s) in r.expr.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        statement(out, s);
    }
    if let Some(c) = &r.comment {
        if !r.expr.is_empty() {
            out.push(' ');
        }
        out.push_str("comment ");
        quote(out, c);
    }
}

fn statement(out: &mut String, s: &Statement<'_>) {
    match s {
        Statement::Match(m) => {
            let quoted = matches!(&m.left, Expression::Named(NamedExpression::Meta(meta)) if matches!(meta.key, MetaKey::Iifname | MetaKey::Oifname));
            value(out, &m.left);
            if m.op == Operator::NEQ {
                out.push_str(" != ");
            } else {
                out.push(' ');
            }
            match (&m.left, &m.right) {
                // nft's word for "no such interface": `fib ... oif missing`.
                (Expression::Named(NamedExpression::Fib(_)), Expression::Boolean(false)) => out.push_str("missing"),
                _ if quoted => quoted_value(out, &m.right),
                _ => value(out, &m.right),
            }
        }
        Statement::Counter(Counter::Anonymous(_)) => out.push_str("counter"),
        Statement::Counter(Counter::Named(n)) => {
            out.push_str("counter name ");
            quote(out, n);
        }
        Statement::Limit(l) => {
            let _ = write!(out, "limit rate {}/{}", l.rate, l.per.as_deref().unwrap_or("second"));
            if let Some(b) = l.burst {
                let _ = write!(out, " burst {b} packets");
            }
        }
        Statement::Quota(nftables::stmt::QuotaOrQuotaRef::Quota(q)) => {
            let _ = write!(out, "quota until {} {}", q.val, q.val_unit);
        }
        Statement::Meter(mt) => {
            let _ = write!(out, "meter {} {{ ", mt.name);
            value(out, &mt.key);
            out.push(' ');
            statement(out, &mt.stmt);
            out.push_str(" }");
        }
        Statement::Log(Some(l)) => {
            out.push_str("log");
            if let Some(p) = &l.prefix {
                out.push_str(" prefix ");
                quote(out, p);
            }
            if let Some(g) = l.group {
                let _ = write!(out, " group {g}");
            }
        }
        Statement::Notrack => out.push_str("notrack"),
        Statement::Flow(f) => {
            out.push_str("flow add ");
            out.push_str(&f.flowtable);
        }
        Statement::VerdictMap(v) => {
            value(out, &v.key);
            out.push_str(" vmap ");
            value(out, &v.data);
        }
        Statement::Mangle(mg) => {
            value(out, &mg.key);
            out.push_str(" set ");
            value(out, &mg.value);
        }
        Statement::Accept(_) => out.push_str("accept"),
        Statement::Drop(_) => out.push_str("drop"),
        Statement::Reject(Some(r)) if r._type == Some(RejectType::TCPReset) => out.push_str("reject with tcp reset"),
        // nft's JSON names of the type and code are its script keywords.
        Statement::Reject(Some(nftables::stmt::Reject { _type: Some(t), expr: Some(code) })) => {
            let word = |v: serde_json::Value| v.as_str().unwrap_or_default().to_string();
            let (t, code) = (serde_json::to_value(t), serde_json::to_value(code));
            let _ = write!(out, "reject with {} {}", word(t.unwrap_or_default()), word(code.unwrap_or_default()));
        }
        Statement::Reject(_) => out.push_str("reject"),
        Statement::Masquerade(_) => out.push_str("masquerade"),
        Statement::SNAT(Some(n)) | Statement::DNAT(Some(n)) => {
            out.push_str(if matches!(s, Statement::SNAT(_)) { "snat" } else { "dnat" });
            let fam = match n.family {
                Some(NATFamily::IP6) => " ip6",
                Some(NATFamily::IP) => " ip",
                None => "",
            };
            out.push_str(fam);
            out.push_str(" to ");
            let bracket = fam == " ip6" && n.port.is_some();
            if bracket {
                out.push('[');
            }
            if let Some(addr) = &n.addr {
                value(out, addr);
            }
            if bracket {
                out.push(']');
            }
            if let Some(p) = &n.port {
                out.push(':');
                value(out, p);
            }
        }
        other => unreachable!("emit never produces {other:?}"),
    }
}

/// `items` written by `each`, with `sep` between them.
fn joined<T>(out: &mut String, items: &[T], sep: &str, mut each: impl FnMut(&mut String, &T)) {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(sep);
        }
        each(out, item);
    }
}

fn value(out: &mut String, e: &Expression<'_>) {
    match e {
        Expression::String(s) => out.push_str(s),
        Expression::Number(n) => {
            let _ = write!(out, "{n}");
        }
        Expression::Boolean(b) => {
            let _ = write!(out, "{b}");
        }
        Expression::List(items) => joined(out, items, ",", value),
        Expression::Range(r) => {
            value(out, &r.range[0]);
            out.push('-');
            value(out, &r.range[1]);
        }
        Expression::Named(n) => match n {
            NamedExpression::Set(items) => {
                out.push_str("{ ");
                joined(out, items, ", ", set_item);
                out.push_str(" }");
            }
            NamedExpression::Prefix(p) => {
                value(out, &p.addr);
                let _ = write!(out, "/{}", p.len);
            }
            NamedExpression::Payload(Payload::PayloadField(f)) => {
                let _ = write!(out, "{} {}", f.protocol, f.field);
            }
            NamedExpression::Meta(m) => out.push_str(match m.key {
                MetaKey::Iifname => "iifname",
                MetaKey::Oifname => "oifname",
                MetaKey::L4proto => "meta l4proto",
                MetaKey::Nfproto => "meta nfproto",
                MetaKey::Mark => "meta mark",
                other => unreachable!("emit never uses meta {other:?}"),
            }),
            NamedExpression::CT(ct) => {
                out.push_str("ct ");
                out.push_str(&ct.key);
            }
            NamedExpression::Fib(f) => {
                // nft's own order: the address, the mark, the interface.
                let order = [FibFlag::Saddr, FibFlag::Daddr, FibFlag::Mark, FibFlag::Iif, FibFlag::Oif];
                let flags: Vec<String> =
                    order.iter().filter(|x| f.flags.contains(x)).map(|x| format!("{x:?}").to_lowercase()).collect();
                out.push_str(&format!("fib {} {:?}", flags.join(" . "), f.result).to_lowercase());
            }
            NamedExpression::Elem(_) => element(out, e, &[false]),
            NamedExpression::Concat(items) => joined(out, items, " . ", value),
            other => unreachable!("emit never produces {other:?}"),
        },
        // A feed's hash set lookup of a masked address.
        Expression::BinaryOperation(op) => match &**op {
            BinaryOperation::AND(left, right) => {
                value(out, left);
                out.push_str(" & ");
                value(out, right);
            }
            other => unreachable!("emit never produces {other:?}"),
        },
        other => unreachable!("emit never produces {other:?}"),
    }
}

/// A set element, with its timeout, counter and comment; `quoted` says per
/// part of its key (one, or each of a concatenation) whether it is a string.
fn element(out: &mut String, e: &Expression<'_>, quoted: &[bool]) {
    let part = |out: &mut String, v: &Expression<'_>, q: bool| if q { quoted_value(out, v) } else { value(out, v) };
    let text = |out: &mut String, v: &Expression<'_>| match v {
        Expression::Named(NamedExpression::Concat(items)) => {
            for (i, (v, &q)) in items.iter().zip(quoted).enumerate() {
                if i > 0 {
                    out.push_str(" . ");
                }
                part(out, v, q);
            }
        }
        other => part(out, other, quoted.first().copied().unwrap_or(false)),
    };
    match e {
        Expression::Named(NamedExpression::Elem(el)) => {
            text(out, &el.val);
            if let Some(t) = el.timeout {
                out.push_str(" timeout ");
                duration(out, t);
            }
            if el.counter.is_some() {
                out.push_str(" counter");
            }
            if let Some(c) = &el.comment {
                out.push_str(" comment ");
                quote(out, c);
            }
        }
        other => text(out, other),
    }
}

/// Seconds as nft reads a time: `1h`, `26d16h5s` (each number must fit
/// nft's 32-bit signed parse, so a long timeout is split into units).
fn duration(out: &mut String, secs: u32) {
    let mut left = secs;
    let mut any = false;
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if left >= size {
            let _ = write!(out, "{}{unit}", left / size);
            left %= size;
            any = true;
        }
    }
    if !any {
        out.push_str("0s");
    }
}

fn set_item(out: &mut String, i: &SetItem<'_>) {
    match i {
        SetItem::Element(e) => value(out, e),
        other => unreachable!("emit never produces {other:?}"),
    }
}

fn quoted_value(out: &mut String, e: &Expression<'_>) {
    match e {
        Expression::String(s) if !s.starts_with('@') => quote(out, s),
        Expression::Named(NamedExpression::Set(items)) => {
            out.push_str("{ ");
            joined(out, items, ", ", |out, i| match i {
                SetItem::Element(e) => quoted_value(out, e),
                other => set_item(out, other),
            });
            out.push_str(" }");
        }
        other => value(out, other),
    }
}

/// `s` in double quotes, its backslashes and quotes escaped.
fn quote(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        if matches!(c, '\\' | '"') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}
