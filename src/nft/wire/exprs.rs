//! Rule expressions: matches, statements and verdicts as nftables netlink expressions.

use std::net::IpAddr;

use nftables::expr::{Expression, MetaKey, NamedExpression, Payload};
use nftables::schema;
use nftables::stmt::{Counter, Match, Operator, RejectType, Statement};

use super::super::kernel::{
    message, name_value, NFTA_DATA_VALUE, NFTA_EXPR_DATA, NFTA_EXPR_NAME, NFTA_LIST_ELEM, NFTA_RULE_CHAIN,
    NFTA_RULE_EXPRESSIONS, NFTA_RULE_TABLE, NFTA_RULE_USERDATA, NFTNL_UDATA_RULE_COMMENT, NFT_MSG_NEWRULE,
    NLM_F_APPEND, NLM_F_CREATE,
};
use super::super::tables::{
    NFPROTO_IPV4, NFPROTO_IPV6, NFTA_DATA_VERDICT, NFTA_VERDICT_CHAIN, NFTA_VERDICT_CODE, NFT_GOTO, NFT_JUMP,
    NFT_RETURN, NF_ACCEPT, NF_DROP,
};
use super::{unsupported, Unsupported};
use crate::netlink::{push_attr, push_nested};

const NFT_REG_VERDICT: u32 = 0;
const NFT_REG_1: u32 = 1;

/// One rule's expressions, with the protocol context nft tracks to add a
/// payload's dependency (`meta nfproto`, `meta l4proto`) only once.
#[derive(Default)]
struct RuleExprs {
    out: Vec<u8>,
    nfproto: Option<u8>,
    l4proto: Option<u8>,
}

impl RuleExprs {
    fn expr(&mut self, name: &str, data: impl FnOnce(&mut Vec<u8>)) {
        push_nested(&mut self.out, NFTA_LIST_ELEM, |e| {
            push_attr(e, NFTA_EXPR_NAME, &name_value(name));
            push_nested(e, NFTA_EXPR_DATA, data);
        });
    }

    fn meta(&mut self, key: u32) {
        self.expr("meta", |d| {
            push_attr(d, 1, &NFT_REG_1.to_be_bytes()); // NFTA_META_DREG
            push_attr(d, 2, &key.to_be_bytes()); // NFTA_META_KEY
        });
    }

    fn payload(&mut self, base: u32, offset: u32, len: u32) {
        self.expr("payload", |d| {
            push_attr(d, 1, &NFT_REG_1.to_be_bytes()); // NFTA_PAYLOAD_DREG
            push_attr(d, 2, &base.to_be_bytes()); // NFTA_PAYLOAD_BASE
            push_attr(d, 3, &offset.to_be_bytes()); // NFTA_PAYLOAD_OFFSET
            push_attr(d, 4, &len.to_be_bytes()); // NFTA_PAYLOAD_LEN
        });
    }

    fn cmp(&mut self, op: u32, value: &[u8]) {
        self.expr("cmp", |d| {
            push_attr(d, 1, &NFT_REG_1.to_be_bytes()); // NFTA_CMP_SREG
            push_attr(d, 2, &op.to_be_bytes()); // NFTA_CMP_OP
            push_nested(d, 3, |v| push_attr(v, NFTA_DATA_VALUE, value)); // NFTA_CMP_DATA
        });
    }

    fn bitwise(&mut self, mask: &[u8]) {
        let xor = vec![0u8; mask.len()];
        self.expr("bitwise", |d| {
            push_attr(d, 1, &NFT_REG_1.to_be_bytes()); // NFTA_BITWISE_SREG
            push_attr(d, 2, &NFT_REG_1.to_be_bytes()); // NFTA_BITWISE_DREG
            push_attr(d, 3, &u32::try_from(mask.len()).unwrap_or(0).to_be_bytes()); // NFTA_BITWISE_LEN
            push_nested(d, 4, |v| push_attr(v, NFTA_DATA_VALUE, mask)); // NFTA_BITWISE_MASK
            push_nested(d, 5, |v| push_attr(v, NFTA_DATA_VALUE, &xor)); // NFTA_BITWISE_XOR
        });
    }

    fn range(&mut self, op: u32, from: &[u8], to: &[u8]) {
        self.expr("range", |d| {
            push_attr(d, 1, &NFT_REG_1.to_be_bytes()); // NFTA_RANGE_SREG
            push_attr(d, 2, &op.to_be_bytes()); // NFTA_RANGE_OP
            push_nested(d, 3, |v| push_attr(v, NFTA_DATA_VALUE, from));
            push_nested(d, 4, |v| push_attr(v, NFTA_DATA_VALUE, to));
        });
    }

    fn lookup(&mut self, set: &str, inverted: bool) {
        self.expr("lookup", |d| {
            push_attr(d, 1, &name_value(set)); // NFTA_LOOKUP_SET
            push_attr(d, 2, &NFT_REG_1.to_be_bytes()); // NFTA_LOOKUP_SREG
            if inverted {
                push_attr(d, 5, &1u32.to_be_bytes()); // NFTA_LOOKUP_FLAGS: NFT_LOOKUP_F_INV
            }
        });
    }

    fn verdict(&mut self, code: i32, chain: Option<&str>) {
        self.expr("immediate", |d| {
            push_attr(d, 1, &NFT_REG_VERDICT.to_be_bytes()); // NFTA_IMMEDIATE_DREG
            push_nested(d, 2, |data| {
                push_nested(data, NFTA_DATA_VERDICT, |v| {
                    push_attr(v, NFTA_VERDICT_CODE, &code.to_be_bytes());
                    if let Some(c) = chain {
                        push_attr(v, NFTA_VERDICT_CHAIN, &name_value(c));
                    }
                });
            });
        });
    }

    /// `meta nfproto` equal to `proto` unless the rule already checked it.
    fn need_nfproto(&mut self, proto: u8) -> Result<(), Unsupported> {
        let known = self.nfproto.replace(proto);
        self.need(known, META_NFPROTO, proto, "two network protocols in one rule")
    }

    fn need_l4proto(&mut self, proto: u8) -> Result<(), Unsupported> {
        let known = self.l4proto.replace(proto);
        self.need(known, META_L4PROTO, proto, "two transport protocols in one rule")
    }

    /// A protocol dependency: matched once, as nft adds it.
    fn need(&mut self, known: Option<u8>, key: u32, proto: u8, conflict: &str) -> Result<(), Unsupported> {
        match known {
            Some(p) if p == proto => Ok(()),
            Some(_) => unsupported(conflict),
            None => {
                self.meta(key);
                self.cmp(OP_EQ, &[proto]);
                Ok(())
            }
        }
    }
}

const META_IIFNAME: u32 = 6;
const META_OIFNAME: u32 = 7;
const META_NFPROTO: u32 = 15;
const META_L4PROTO: u32 = 16;
const OP_EQ: u32 = 0;
const OP_NEQ: u32 = 1;
const PAYLOAD_NETWORK: u32 = 1;
const PAYLOAD_TRANSPORT: u32 = 2;

pub(super) fn rule_message(table: &str, r: &schema::Rule<'_>) -> Result<Vec<u8>, Unsupported> {
    let mut e = RuleExprs::default();
    for s in r.expr.iter() {
        statement(&mut e, s)?;
    }
    let mut a = Vec::new();
    push_attr(&mut a, NFTA_RULE_TABLE, &name_value(table));
    push_attr(&mut a, NFTA_RULE_CHAIN, &name_value(&r.chain));
    push_nested(&mut a, NFTA_RULE_EXPRESSIONS, |x| x.extend_from_slice(&e.out));
    if let Some(c) = &r.comment {
        // libnftnl's rule userdata: one TLV, the NUL-terminated comment.
        let text = name_value(c);
        let Ok(len) = u8::try_from(text.len()) else { return unsupported("comment longer than 254 bytes") };
        let mut ud = vec![NFTNL_UDATA_RULE_COMMENT, len];
        ud.extend_from_slice(&text);
        push_attr(&mut a, NFTA_RULE_USERDATA, &ud);
    }
    Ok(message(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, &a))
}

fn statement(e: &mut RuleExprs, s: &Statement<'_>) -> Result<(), Unsupported> {
    match s {
        Statement::Accept(None) => e.verdict(NF_ACCEPT, None),
        Statement::Drop(None) => e.verdict(NF_DROP, None),
        Statement::Return(None) => e.verdict(NFT_RETURN, None),
        Statement::Jump(t) => e.verdict(NFT_JUMP, Some(&t.target)),
        Statement::Goto(t) => e.verdict(NFT_GOTO, Some(&t.target)),
        Statement::Counter(Counter::Anonymous(None)) => e.expr("counter", |_| {}),
        Statement::Match(m) => match_statement(e, m)?,
        Statement::Limit(l) => {
            if l.inv == Some(true) || l.rate_unit.as_deref().is_some_and(|u| u != "packets") {
                return unsupported("limit in bytes or inverted");
            }
            if l.burst_unit.as_deref().is_some_and(|u| u != "packets") {
                return unsupported("limit burst in bytes");
            }
            let unit: u64 = match l.per.as_deref() {
                Some("second") | None => 1,
                Some("minute") => 60,
                Some("hour") => 3600,
                Some("day") => 86400,
                Some(other) => return unsupported(format!("limit per {other}")),
            };
            let (rate, burst) = (u64::from(l.rate), l.burst.unwrap_or(5));
            e.expr("limit", |d| {
                push_attr(d, 1, &rate.to_be_bytes()); // NFTA_LIMIT_RATE
                push_attr(d, 2, &unit.to_be_bytes()); // NFTA_LIMIT_UNIT
                push_attr(d, 3, &burst.to_be_bytes()); // NFTA_LIMIT_BURST
                push_attr(d, 4, &0u32.to_be_bytes()); // NFTA_LIMIT_TYPE: packets
                push_attr(d, 5, &0u32.to_be_bytes()); // NFTA_LIMIT_FLAGS
            });
        }
        Statement::Log(Some(l)) => {
            if l.group.is_some() || l.snaplen.is_some() || l.queue_threshold.is_some() || l.level.is_some() {
                return unsupported("log options other than a prefix");
            }
            if l.flags.as_ref().is_some_and(|f| !f.is_empty()) {
                return unsupported("log flags");
            }
            let prefix = l.prefix.as_deref().map(name_value);
            e.expr("log", |d| {
                if let Some(p) = &prefix {
                    push_attr(d, 2, p); // NFTA_LOG_PREFIX
                }
            });
        }
        Statement::Reject(Some(r)) if matches!(r._type, Some(RejectType::TCPReset)) && r.expr.is_none() => {
            if e.l4proto != Some(6) {
                return unsupported("tcp reset without a tcp match");
            }
            e.expr("reject", |d| {
                push_attr(d, 1, &1u32.to_be_bytes()); // NFTA_REJECT_TYPE: NFT_REJECT_TCP_RST
                push_attr(d, 2, &[0]); // NFTA_REJECT_ICMP_CODE
            });
        }
        other => return unsupported(format!("statement {}", statement_name(other))),
    }
    Ok(())
}

fn statement_name(s: &Statement<'_>) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_object().and_then(|o| o.keys().next().cloned()).or_else(|| v.as_str().map(str::to_string)))
        .unwrap_or_else(|| "?".to_string())
}

fn match_statement(e: &mut RuleExprs, m: &Match<'_>) -> Result<(), Unsupported> {
    let negated = match m.op {
        Operator::EQ | Operator::IN => false,
        Operator::NEQ => true,
        _ => return unsupported("match operator"),
    };
    match &m.left {
        Expression::Named(NamedExpression::Meta(meta)) => match (&meta.key, &m.right) {
            (MetaKey::Iifname | MetaKey::Oifname, Expression::String(name)) => {
                if name.contains('*') || name.contains('\\') || name.len() >= 16 {
                    return unsupported("interface wildcard");
                }
                let mut v = name.as_bytes().to_vec();
                v.resize(16, 0);
                e.meta(if meta.key == MetaKey::Iifname { META_IIFNAME } else { META_OIFNAME });
                e.cmp(if negated { OP_NEQ } else { OP_EQ }, &v);
            }
            (MetaKey::Nfproto, Expression::String(p)) if !negated => {
                let proto = match p.as_ref() {
                    "ipv4" => NFPROTO_IPV4,
                    "ipv6" => NFPROTO_IPV6,
                    _ => return unsupported("meta nfproto value"),
                };
                e.need_nfproto(proto)?;
            }
            (MetaKey::L4proto, Expression::String(p)) if !negated => e.need_l4proto(l4proto(p)?)?,
            _ => return unsupported("meta match"),
        },
        Expression::Named(NamedExpression::CT(ct)) if ct.key == "state" && ct.family.is_none() && !negated => {
            let names: Vec<&str> = match &m.right {
                Expression::String(s) => vec![s.as_ref()],
                Expression::List(l) => l
                    .iter()
                    .map(|x| if let Expression::String(s) = x { Ok(s.as_ref()) } else { unsupported("ct state") })
                    .collect::<Result<_, _>>()?,
                _ => return unsupported("ct state value"),
            };
            let mut mask = 0u32;
            for n in names {
                mask |= match n {
                    "invalid" => 1,
                    "established" => 2,
                    "related" => 4,
                    "new" => 8,
                    "untracked" => 64,
                    _ => return unsupported("ct state value"),
                };
            }
            e.expr("ct", |d| {
                push_attr(d, 1, &NFT_REG_1.to_be_bytes()); // NFTA_CT_DREG
                push_attr(d, 2, &0u32.to_be_bytes()); // NFTA_CT_KEY: NFT_CT_STATE
            });
            e.bitwise(&mask.to_ne_bytes());
            e.cmp(OP_NEQ, &0u32.to_ne_bytes());
        }
        Expression::Named(NamedExpression::Payload(Payload::PayloadField(f))) => {
            payload_match(e, &f.protocol, &f.field, &m.right, negated)?
        }
        _ => return unsupported("match"),
    }
    Ok(())
}

fn l4proto(p: &str) -> Result<u8, Unsupported> {
    Ok(match p {
        "tcp" => 6,
        "udp" => 17,
        _ => return unsupported("meta l4proto value"),
    })
}

fn payload_match(
    e: &mut RuleExprs,
    protocol: &str,
    field: &str,
    right: &Expression<'_>,
    negated: bool,
) -> Result<(), Unsupported> {
    let op = if negated { OP_NEQ } else { OP_EQ };
    match (protocol, field) {
        ("ip" | "ip6", "saddr" | "daddr") => {
            let v6 = protocol == "ip6";
            let len: u32 = if v6 { 16 } else { 4 };
            let offset = match (v6, field) {
                (false, "saddr") => 12,
                (false, _) => 16,
                (true, "saddr") => 8,
                (true, _) => 24,
            };
            e.need_nfproto(if v6 { NFPROTO_IPV6 } else { NFPROTO_IPV4 })?;
            match right {
                Expression::String(s) if s.starts_with('@') => {
                    e.payload(PAYLOAD_NETWORK, offset, len);
                    e.lookup(&s[1..], negated);
                }
                Expression::String(s) => {
                    let addr = address(s, v6)?;
                    e.payload(PAYLOAD_NETWORK, offset, len);
                    e.cmp(op, &addr);
                }
                Expression::Named(NamedExpression::Prefix(p)) => {
                    let Expression::String(s) = p.addr.as_ref() else { return unsupported("prefix") };
                    let addr = address(s, v6)?;
                    let bits = p.len as usize;
                    if bits > addr.len() * 8 {
                        return unsupported("prefix length");
                    }
                    let mut mask = vec![0u8; addr.len()];
                    for (i, b) in mask.iter_mut().enumerate() {
                        let left = bits.saturating_sub(i * 8).min(8);
                        *b = if left == 0 { 0 } else { 0xffu8 << (8 - left) };
                    }
                    let masked: Vec<u8> = addr.iter().zip(&mask).map(|(a, m)| a & m).collect();
                    if bits.is_multiple_of(8) && bits > 0 {
                        // nft loads only the whole bytes of a byte-aligned prefix.
                        let n = bits / 8;
                        e.payload(PAYLOAD_NETWORK, offset, n as u32);
                        e.cmp(op, &masked[..n]);
                    } else if bits > 0 {
                        e.payload(PAYLOAD_NETWORK, offset, len);
                        e.bitwise(&mask);
                        e.cmp(op, &masked);
                    } else {
                        return unsupported("zero-length prefix");
                    }
                }
                _ => return unsupported("address match"),
            }
        }
        ("tcp" | "udp", "sport" | "dport") => {
            e.need_l4proto(l4proto(protocol)?)?;
            let offset = if field == "sport" { 0 } else { 2 };
            match right {
                Expression::Number(n) => {
                    let port = u16::try_from(*n).map_err(|_| Unsupported("port".into()))?;
                    e.payload(PAYLOAD_TRANSPORT, offset, 2);
                    e.cmp(op, &port.to_be_bytes());
                }
                Expression::Range(r) => {
                    let (Expression::Number(a), Expression::Number(b)) = (&r.range[0], &r.range[1]) else {
                        return unsupported("port range");
                    };
                    let (Ok(a), Ok(b)) = (u16::try_from(*a), u16::try_from(*b)) else {
                        return unsupported("port range");
                    };
                    e.payload(PAYLOAD_TRANSPORT, offset, 2);
                    if negated {
                        e.range(OP_NEQ, &a.to_be_bytes(), &b.to_be_bytes());
                    } else {
                        e.cmp(5, &a.to_be_bytes()); // NFT_CMP_GTE
                        e.cmp(3, &b.to_be_bytes()); // NFT_CMP_LTE
                    }
                }
                Expression::String(s) if s.starts_with('@') => {
                    e.payload(PAYLOAD_TRANSPORT, offset, 2);
                    e.lookup(&s[1..], negated);
                }
                _ => return unsupported("port match"),
            }
        }
        _ => return unsupported(format!("payload {protocol} {field}")),
    }
    Ok(())
}

fn address(s: &str, v6: bool) -> Result<Vec<u8>, Unsupported> {
    match s.parse::<IpAddr>() {
        Ok(IpAddr::V4(a)) if !v6 => Ok(a.octets().to_vec()),
        Ok(IpAddr::V6(a)) if v6 => Ok(a.octets().to_vec()),
        _ => unsupported("address value"),
    }
}
