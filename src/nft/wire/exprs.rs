//! Rule expressions: matches, statements and verdicts as nftables netlink
//! expressions, in the order and with the registers and dependencies nft
//! gives them (`nft --debug=netlink`), so the kernel holds the same bytes.

use nftables::expr::{self, Expression, FibFlag, FibResult, MetaKey, NamedExpression, Payload};
use nftables::schema;
use nftables::stmt::{self, Counter, LogLevel, Match, Operator, RejectType, Statement};

use super::super::kernel::{
    message, name_value, NFTA_DATA_VALUE, NFTA_EXPR_DATA, NFTA_EXPR_NAME, NFTA_LIST_ELEM, NFTA_OBJ_DATA, NFTA_OBJ_NAME,
    NFTA_OBJ_TABLE, NFTA_OBJ_TYPE, NFTA_RULE_CHAIN, NFTA_RULE_EXPRESSIONS, NFTA_RULE_TABLE, NFTA_RULE_USERDATA,
    NFTNL_UDATA_RULE_COMMENT, NFT_MSG_NEWOBJ, NFT_MSG_NEWRULE, NFT_OBJECT_COUNTER, NLM_F_APPEND, NLM_F_CREATE,
};
use super::super::tables::{NFPROTO_IPV4, NFPROTO_IPV6, NFT_GOTO, NFT_JUMP, NFT_RETURN, NF_ACCEPT, NF_DROP};
use super::sets::{self, Batch, SetRef};
use super::{address, unsupported, Unsupported};
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
    /// The anonymous sets of the rule's literals, created before it.
    sets: Batch,
}

/// A packet or metadata field a match loads into a register.
#[derive(Clone, Copy)]
struct Field {
    dep: Option<Dep>,
    load: Load,
    /// Bytes the load writes.
    len: u32,
    kind: Kind,
}

/// The protocol a field's header needs, as nft adds it before the load.
#[derive(Clone, Copy)]
enum Dep {
    Nfproto(u8),
    L4proto(u8),
}

#[derive(Clone, Copy)]
enum Load {
    Meta(u32),
    Payload { base: u32, offset: u32 },
    Ct(u32),
    Fib { result: u32, flags: u32 },
}

/// How a value of the field is written.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Addr {
        v6: bool,
    },
    Port,
    Ifname,
    Nfproto,
    L4proto,
    /// A 32-bit value in host byte order (marks).
    HostU32,
    IcmpType(u8),
    CtState,
    FibAddrType,
    FibPresent,
}

impl RuleExprs {
    fn expr(&mut self, name: &str, data: impl FnOnce(&mut Vec<u8>)) {
        push_nested(&mut self.out, NFTA_LIST_ELEM, |e| {
            push_attr(e, NFTA_EXPR_NAME, &name_value(name));
            push_nested(e, NFTA_EXPR_DATA, data);
        });
    }

    fn meta(&mut self, key: u32, dreg: u32) {
        self.expr("meta", |d| {
            push_attr(d, 1, &dreg.to_be_bytes()); // NFTA_META_DREG
            push_attr(d, 2, &key.to_be_bytes()); // NFTA_META_KEY
        });
    }

    /// Loads `f` into `dreg` (its dependency is added by the caller).
    fn load(&mut self, f: &Field, dreg: u32) {
        let len = f.len;
        match f.load {
            Load::Meta(key) => self.meta(key, dreg),
            Load::Payload { base, offset } => self.payload(base, offset, len, dreg),
            Load::Ct(key) => self.expr("ct", |d| {
                push_attr(d, 1, &dreg.to_be_bytes()); // NFTA_CT_DREG
                push_attr(d, 2, &key.to_be_bytes()); // NFTA_CT_KEY
            }),
            Load::Fib { result, flags } => self.expr("fib", |d| {
                push_attr(d, 1, &dreg.to_be_bytes()); // NFTA_FIB_DREG
                push_attr(d, 2, &result.to_be_bytes()); // NFTA_FIB_RESULT
                push_attr(d, 3, &flags.to_be_bytes()); // NFTA_FIB_FLAGS
            }),
        }
    }

    fn payload(&mut self, base: u32, offset: u32, len: u32, dreg: u32) {
        self.expr("payload", |d| {
            push_attr(d, 1, &dreg.to_be_bytes()); // NFTA_PAYLOAD_DREG
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

    /// A set lookup of register 1; a verdict map's writes the verdict
    /// register. An anonymous set is named by its id in the batch too.
    fn lookup(&mut self, set: &str, id: Option<u32>, inverted: bool, verdict_map: bool) {
        self.expr("lookup", |d| {
            push_attr(d, 1, &name_value(set)); // NFTA_LOOKUP_SET
            push_attr(d, 2, &NFT_REG_1.to_be_bytes()); // NFTA_LOOKUP_SREG
            if verdict_map {
                push_attr(d, 3, &NFT_REG_VERDICT.to_be_bytes()); // NFTA_LOOKUP_DREG
            }
            if let Some(id) = id {
                push_attr(d, 4, &id.to_be_bytes()); // NFTA_LOOKUP_SET_ID
            }
            if inverted {
                push_attr(d, 5, &1u32.to_be_bytes()); // NFTA_LOOKUP_FLAGS: NFT_LOOKUP_F_INV
            }
        });
    }

    /// `value` into register `dreg`.
    fn immediate(&mut self, dreg: u32, value: &[u8]) {
        self.expr("immediate", |d| {
            push_attr(d, 1, &dreg.to_be_bytes()); // NFTA_IMMEDIATE_DREG
            push_nested(d, 2, |data| push_attr(data, NFTA_DATA_VALUE, value));
        });
    }

    fn verdict(&mut self, code: i32, chain: Option<&str>) {
        self.expr("immediate", |d| {
            push_attr(d, 1, &NFT_REG_VERDICT.to_be_bytes()); // NFTA_IMMEDIATE_DREG
            push_nested(d, 2, |data| super::verdict_data(data, code, chain));
        });
    }

    /// A field's protocol dependency, matched once per rule, as nft adds it.
    fn need(&mut self, dep: Option<Dep>) -> Result<(), Unsupported> {
        let (known, key, proto) = match dep {
            None => return Ok(()),
            Some(Dep::Nfproto(p)) => (self.nfproto.replace(p), META_NFPROTO, p),
            Some(Dep::L4proto(p)) => (self.l4proto.replace(p), META_L4PROTO, p),
        };
        match known {
            Some(p) if p == proto => Ok(()),
            Some(_) => unsupported("two protocols of one layer in one rule"),
            None => {
                self.meta(key, NFT_REG_1);
                self.cmp(OP_EQ, &[proto]);
                Ok(())
            }
        }
    }
}

const META_MARK: u32 = 3;
const META_IIFNAME: u32 = 6;
const META_OIFNAME: u32 = 7;
const META_NFPROTO: u32 = 15;
const META_L4PROTO: u32 = 16;
const CT_STATE: u32 = 0;
const CT_MARK: u32 = 3;
const OP_EQ: u32 = 0;
const OP_NEQ: u32 = 1;
const OP_LTE: u32 = 3;
const OP_GTE: u32 = 5;
const PAYLOAD_NETWORK: u32 = 1;
const PAYLOAD_TRANSPORT: u32 = 2;
const NFT_REG32_00: u32 = 8;

/// nft's register for a value `slot` 32-bit words into a concatenation: the
/// 128-bit register when it starts one, the 32-bit register otherwise.
fn concat_register(slot: u32) -> u32 {
    if slot.is_multiple_of(4) {
        NFT_REG_1 + slot / 4
    } else {
        NFT_REG32_00 + slot
    }
}

/// Adds the rule's anonymous sets and then the rule to `b`.
pub(super) fn rule_messages(b: &mut Batch, r: &schema::Rule<'_>) -> Result<(), Unsupported> {
    let mut e = RuleExprs { sets: b.for_rule(), ..RuleExprs::default() };
    for s in r.expr.iter() {
        statement(&mut e, s)?;
    }
    let rule = rule_message(b.table(), r, &e.out)?;
    b.absorb(e.sets);
    b.push(rule);
    Ok(())
}

fn rule_message(table: &str, r: &schema::Rule<'_>, exprs: &[u8]) -> Result<Vec<u8>, Unsupported> {
    let mut a = Vec::new();
    push_attr(&mut a, NFTA_RULE_TABLE, &name_value(table));
    push_attr(&mut a, NFTA_RULE_CHAIN, &name_value(&r.chain));
    push_nested(&mut a, NFTA_RULE_EXPRESSIONS, |x| x.extend_from_slice(exprs));
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

/// `counter NAME { }`, as nft creates a named counter.
pub(super) fn counter_message(table: &str, name: &str) -> Vec<u8> {
    let mut a = Vec::new();
    push_attr(&mut a, NFTA_OBJ_TABLE, &name_value(table));
    push_attr(&mut a, NFTA_OBJ_NAME, &name_value(name));
    push_attr(&mut a, NFTA_OBJ_TYPE, &NFT_OBJECT_COUNTER.to_be_bytes());
    push_nested(&mut a, NFTA_OBJ_DATA, |d| {
        push_attr(d, 1, &0u64.to_be_bytes()); // NFTA_COUNTER_BYTES
        push_attr(d, 2, &0u64.to_be_bytes()); // NFTA_COUNTER_PACKETS
    });
    message(NFT_MSG_NEWOBJ, NLM_F_CREATE, &a)
}

fn statement(e: &mut RuleExprs, s: &Statement<'_>) -> Result<(), Unsupported> {
    match s {
        Statement::Accept(None) => e.verdict(NF_ACCEPT, None),
        Statement::Drop(None) => e.verdict(NF_DROP, None),
        Statement::Return(None) => e.verdict(NFT_RETURN, None),
        Statement::Jump(t) => e.verdict(NFT_JUMP, Some(&t.target)),
        Statement::Goto(t) => e.verdict(NFT_GOTO, Some(&t.target)),
        Statement::Counter(Counter::Anonymous(None)) => e.expr("counter", |_| {}),
        Statement::Counter(Counter::Named(name)) => e.expr("objref", |d| {
            push_attr(d, 1, &NFT_OBJECT_COUNTER.to_be_bytes()); // NFTA_OBJREF_IMM_TYPE
            push_attr(d, 2, &name_value(name)); // NFTA_OBJREF_IMM_NAME
        }),
        Statement::Match(m) => match_statement(e, m)?,
        Statement::VerdictMap(v) => {
            let Expression::String(map) = &v.data else { return unsupported("anonymous verdict map") };
            let Some(map) = map.strip_prefix('@') else { return unsupported("verdict map") };
            load_key(e, &v.key)?;
            e.lookup(map, None, false, true);
        }
        Statement::Limit(l) => limit(e, l)?,
        Statement::Meter(m) => meter(e, m)?,
        Statement::Quota(stmt::QuotaOrQuotaRef::Quota(q)) => {
            if q.used.is_some() {
                return unsupported("quota with a used amount");
            }
            let shift = match q.val_unit.as_ref() {
                "bytes" => 0,
                "kbytes" => 10,
                "mbytes" => 20,
                _ => return unsupported("quota unit"),
            };
            let bytes = u64::from(q.val) << shift;
            let flags = u32::from(q.inv == Some(true)); // NFT_QUOTA_F_INV
            e.expr("quota", |d| {
                push_attr(d, 1, &bytes.to_be_bytes()); // NFTA_QUOTA_BYTES
                push_attr(d, 2, &flags.to_be_bytes()); // NFTA_QUOTA_FLAGS
                push_attr(d, 3, &0u64.to_be_bytes()); // NFTA_QUOTA_CONSUMED
            });
        }
        Statement::Log(Some(l)) => log(e, l)?,
        Statement::Reject(r) => reject(e, r.as_ref())?,
        Statement::Notrack => e.expr("notrack", |_| {}),
        Statement::Mangle(m) => mangle(e, m)?,
        Statement::Masquerade(None) => e.expr("masq", |_| {}),
        Statement::DNAT(Some(n)) => nat(e, 1, n)?,
        Statement::SNAT(Some(n)) => nat(e, 0, n)?,
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

fn limit(e: &mut RuleExprs, l: &stmt::Limit<'_>) -> Result<(), Unsupported> {
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
    Ok(())
}

fn log(e: &mut RuleExprs, l: &stmt::Log<'_>) -> Result<(), Unsupported> {
    if l.snaplen.is_some() || l.queue_threshold.is_some() || l.flags.as_ref().is_some_and(|f| !f.is_empty()) {
        return unsupported("log snaplen, queue threshold or flags");
    }
    let level = l.level.map(|level| match level {
        LogLevel::Emerg => 0u32,
        LogLevel::Alert => 1,
        LogLevel::Crit => 2,
        LogLevel::Err => 3,
        LogLevel::Warn => 4,
        LogLevel::Notice => 5,
        LogLevel::Info => 6,
        LogLevel::Debug => 7,
        LogLevel::Audit => 8,
    });
    let group = match l.group.map(u16::try_from) {
        None => None,
        Some(Ok(g)) => Some(g),
        Some(Err(_)) => return unsupported("log group"),
    };
    let prefix = l.prefix.as_deref().map(name_value);
    e.expr("log", |d| {
        if let Some(g) = group {
            push_attr(d, 1, &g.to_be_bytes()); // NFTA_LOG_GROUP
        }
        if let Some(p) = &prefix {
            push_attr(d, 2, p); // NFTA_LOG_PREFIX
        }
        if let Some(level) = level {
            push_attr(d, 5, &level.to_be_bytes()); // NFTA_LOG_LEVEL
        }
    });
    Ok(())
}

/// `reject`: nft's type and code numbers; a plain `reject` sends nft's
/// default for the rule's network protocol (icmpx when it has none).
fn reject(e: &mut RuleExprs, r: Option<&stmt::Reject>) -> Result<(), Unsupported> {
    const ICMP_UNREACH: u32 = 0;
    const TCP_RST: u32 = 1;
    const ICMPX_UNREACH: u32 = 2;
    let code_name = r
        .and_then(|r| r.expr.as_ref())
        .map(|c| serde_json::to_value(c).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default());
    let (kind, table, default): (u32, &[(&str, u8)], u8) = match (r.and_then(|r| r._type), e.nfproto) {
        (Some(RejectType::TCPReset), _) => {
            if e.l4proto != Some(6) || code_name.is_some() {
                return unsupported("tcp reset without a tcp match");
            }
            (TCP_RST, &[], 0)
        }
        (Some(RejectType::ICMP), Some(NFPROTO_IPV4)) => (ICMP_UNREACH, ICMP_CODES, 3),
        (Some(RejectType::ICMPv6), Some(NFPROTO_IPV6)) => (ICMP_UNREACH, ICMPV6_CODES, 4),
        (Some(RejectType::ICMPX), _) => (ICMPX_UNREACH, ICMPX_CODES, 1),
        (None, _) if e.l4proto == Some(6) => return unsupported("plain reject of tcp"),
        (None, Some(NFPROTO_IPV4)) => (ICMP_UNREACH, ICMP_CODES, 3),
        (None, Some(NFPROTO_IPV6)) => (ICMP_UNREACH, ICMPV6_CODES, 4),
        (None, _) => (ICMPX_UNREACH, ICMPX_CODES, 1),
        _ => return unsupported("reject without its network protocol match"),
    };
    let code = match code_name.as_deref() {
        None => default,
        Some(name) => match table.iter().find(|(n, _)| *n == name) {
            Some((_, c)) => *c,
            None => return unsupported(format!("reject code {name}")),
        },
    };
    e.expr("reject", |d| {
        push_attr(d, 1, &kind.to_be_bytes()); // NFTA_REJECT_TYPE
        push_attr(d, 2, &[code]); // NFTA_REJECT_ICMP_CODE
    });
    Ok(())
}

const ICMP_CODES: &[(&str, u8)] = &[
    ("net-unreachable", 0),
    ("host-unreachable", 1),
    ("prot-unreachable", 2),
    ("port-unreachable", 3),
    ("net-prohibited", 9),
    ("host-prohibited", 10),
    ("admin-prohibited", 13),
];
const ICMPV6_CODES: &[(&str, u8)] =
    &[("no-route", 0), ("admin-prohibited", 1), ("addr-unreachable", 3), ("port-unreachable", 4)];
const ICMPX_CODES: &[(&str, u8)] =
    &[("no-route", 0), ("port-unreachable", 1), ("host-unreachable", 2), ("admin-prohibited", 3)];

/// `meta mark set ...` / `ct mark set ...`: the value into register 1, then the set.
fn mangle(e: &mut RuleExprs, m: &stmt::Mangle<'_>) -> Result<(), Unsupported> {
    match &m.value {
        Expression::Number(n) => e.immediate(NFT_REG_1, &n.to_ne_bytes()),
        other => {
            let f = field(other)?;
            if f.kind != Kind::HostU32 || f.dep.is_some() {
                return unsupported("mark set from this value");
            }
            e.load(&f, NFT_REG_1);
        }
    }
    match &m.key {
        Expression::Named(NamedExpression::Meta(meta)) if meta.key == MetaKey::Mark => e.expr("meta", |d| {
            push_attr(d, 2, &META_MARK.to_be_bytes()); // NFTA_META_KEY
            push_attr(d, 3, &NFT_REG_1.to_be_bytes()); // NFTA_META_SREG
        }),
        Expression::Named(NamedExpression::CT(ct)) if ct.key == "mark" && ct.family.is_none() && ct.dir.is_none() => {
            e.expr("ct", |d| {
                push_attr(d, 2, &CT_MARK.to_be_bytes()); // NFTA_CT_KEY
                push_attr(d, 4, &NFT_REG_1.to_be_bytes()); // NFTA_CT_SREG
            })
        }
        _ => return unsupported("mangle"),
    }
    Ok(())
}

/// `dnat`/`snat ip|ip6 to ADDR[:PORT]`: the address in register 1, the port in register 2.
fn nat(e: &mut RuleExprs, kind: u32, n: &stmt::NAT<'_>) -> Result<(), Unsupported> {
    if n.flags.as_ref().is_some_and(|f| !f.is_empty()) {
        return unsupported("nat flags");
    }
    let (Some(Expression::String(addr)), Some(family)) = (&n.addr, n.family) else {
        return unsupported("nat without an address and family");
    };
    let v6 = family == stmt::NATFamily::IP6;
    let addr = address(addr, v6)?;
    let port = match &n.port {
        None => None,
        Some(Expression::Number(p)) => Some(u16::try_from(*p).map_err(|_| Unsupported("nat port".into()))?),
        Some(_) => return unsupported("nat port"),
    };
    e.immediate(NFT_REG_1, &addr);
    if let Some(p) = port {
        e.immediate(NFT_REG_1 + 1, &p.to_be_bytes());
    }
    let fam = u32::from(if v6 { NFPROTO_IPV6 } else { NFPROTO_IPV4 });
    e.expr("nat", |d| {
        push_attr(d, 1, &kind.to_be_bytes()); // NFTA_NAT_TYPE
        push_attr(d, 2, &fam.to_be_bytes()); // NFTA_NAT_FAMILY
        push_attr(d, 3, &NFT_REG_1.to_be_bytes()); // NFTA_NAT_REG_ADDR_MIN
        if port.is_some() {
            push_attr(d, 5, &(NFT_REG_1 + 1).to_be_bytes()); // NFTA_NAT_REG_PROTO_MIN
            push_attr(d, 7, &2u32.to_be_bytes()); // NFTA_NAT_FLAGS: NF_NAT_RANGE_PROTO_SPECIFIED
        }
    });
    Ok(())
}

/// What `left` names: a field phantomc matches.
fn field(left: &Expression<'_>) -> Result<Field, Unsupported> {
    let f = |dep, load, len, kind| Ok(Field { dep, load, len, kind });
    match left {
        Expression::Named(NamedExpression::Meta(meta)) => match meta.key {
            MetaKey::Iifname => f(None, Load::Meta(META_IIFNAME), 16, Kind::Ifname),
            MetaKey::Oifname => f(None, Load::Meta(META_OIFNAME), 16, Kind::Ifname),
            MetaKey::Nfproto => f(None, Load::Meta(META_NFPROTO), 1, Kind::Nfproto),
            MetaKey::L4proto => f(None, Load::Meta(META_L4PROTO), 1, Kind::L4proto),
            MetaKey::Mark => f(None, Load::Meta(META_MARK), 4, Kind::HostU32),
            _ => unsupported("meta key"),
        },
        Expression::Named(NamedExpression::CT(ct)) if ct.family.is_none() && ct.dir.is_none() => {
            match ct.key.as_ref() {
                "state" => f(None, Load::Ct(CT_STATE), 4, Kind::CtState),
                "mark" => f(None, Load::Ct(CT_MARK), 4, Kind::HostU32),
                _ => unsupported("ct key"),
            }
        }
        Expression::Named(NamedExpression::Payload(Payload::PayloadField(p))) => {
            match (p.protocol.as_ref(), p.field.as_ref()) {
                ("ip", field @ ("saddr" | "daddr")) => {
                    let offset = if field == "saddr" { 12 } else { 16 };
                    let load = Load::Payload { base: PAYLOAD_NETWORK, offset };
                    f(Some(Dep::Nfproto(NFPROTO_IPV4)), load, 4, Kind::Addr { v6: false })
                }
                ("ip6", field @ ("saddr" | "daddr")) => {
                    let offset = if field == "saddr" { 8 } else { 24 };
                    let load = Load::Payload { base: PAYLOAD_NETWORK, offset };
                    f(Some(Dep::Nfproto(NFPROTO_IPV6)), load, 16, Kind::Addr { v6: true })
                }
                (proto @ ("tcp" | "udp"), field @ ("sport" | "dport")) => {
                    let offset = if field == "sport" { 0 } else { 2 };
                    let load = Load::Payload { base: PAYLOAD_TRANSPORT, offset };
                    f(Some(Dep::L4proto(l4proto(proto)?)), load, 2, Kind::Port)
                }
                (proto @ ("icmp" | "icmpv6"), "type") => {
                    let p = l4proto(proto)?;
                    let load = Load::Payload { base: PAYLOAD_TRANSPORT, offset: 0 };
                    f(Some(Dep::L4proto(p)), load, 1, Kind::IcmpType(p))
                }
                _ => unsupported(format!("payload {} {}", p.protocol, p.field)),
            }
        }
        Expression::Named(NamedExpression::Fib(fib)) => {
            let mut flags = 0u32;
            for flag in &fib.flags {
                flags |= match flag {
                    FibFlag::Saddr => 1,
                    FibFlag::Daddr => 2,
                    FibFlag::Mark => 4,
                    FibFlag::Iif => 8,
                    FibFlag::Oif => 16,
                };
            }
            match fib.result {
                // `fib ... type`: the address type, a host-order u32.
                FibResult::Type => f(None, Load::Fib { result: 3, flags }, 4, Kind::FibAddrType),
                // `fib ... oif missing|exists`: nft asks for presence only (NFTA_FIB_F_PRESENT).
                FibResult::Oif => f(None, Load::Fib { result: 1, flags: flags | 32 }, 4, Kind::FibPresent),
                _ => unsupported("fib result"),
            }
        }
        _ => unsupported("match field"),
    }
}

fn l4proto(p: &str) -> Result<u8, Unsupported> {
    crate::ir::names::proto_number(p).ok_or_else(|| Unsupported(format!("protocol {p}")))
}

/// One value of `kind`, as the kernel compares it.
fn value(kind: Kind, v: &Expression<'_>) -> Result<Vec<u8>, Unsupported> {
    Ok(match (kind, v) {
        (Kind::Addr { v6 }, Expression::String(s)) => address(s, v6)?,
        (Kind::Port, Expression::Number(n)) => {
            u16::try_from(*n).map_err(|_| Unsupported("port".into()))?.to_be_bytes().to_vec()
        }
        (Kind::Ifname, Expression::String(s)) => {
            if s.contains('\\') || s.len() >= 16 {
                return unsupported("interface name");
            }
            match s.strip_suffix('*') {
                // `eth*`: nft compares the prefix only.
                Some(prefix) if !prefix.contains('*') => prefix.as_bytes().to_vec(),
                Some(_) => return unsupported("interface wildcard"),
                None => {
                    let mut v = s.as_bytes().to_vec();
                    v.resize(16, 0);
                    v
                }
            }
        }
        (Kind::Nfproto, Expression::String(s)) => match s.as_ref() {
            "ipv4" => vec![NFPROTO_IPV4],
            "ipv6" => vec![NFPROTO_IPV6],
            _ => return unsupported("meta nfproto value"),
        },
        (Kind::L4proto, Expression::String(s)) => vec![l4proto(s)?],
        (Kind::L4proto | Kind::IcmpType(_), Expression::Number(n)) => {
            vec![u8::try_from(*n).map_err(|_| Unsupported("protocol number".into()))?]
        }
        (Kind::HostU32, Expression::Number(n)) => n.to_ne_bytes().to_vec(),
        (Kind::IcmpType(p), Expression::String(s)) => {
            match crate::ir::names::icmp_table(p).iter().find(|(n, _)| *n == s.as_ref()) {
                Some((_, t)) => vec![*t],
                None => return unsupported(format!("icmp type {s}")),
            }
        }
        (Kind::FibAddrType, Expression::String(s)) if s == "local" => 2u32.to_ne_bytes().to_vec(), // RTN_LOCAL
        (Kind::FibPresent, Expression::Boolean(b)) => u32::from(*b).to_ne_bytes().to_vec(),
        _ => return unsupported("match value"),
    })
}

/// Loads a lookup key into register 1 on: one field, a masked field
/// (`ip saddr & MASK`), or a concatenation (dependencies first, then each
/// field in its register, as nft orders them).
fn load_key(e: &mut RuleExprs, key: &Expression<'_>) -> Result<(), Unsupported> {
    match key {
        Expression::Named(NamedExpression::Concat(parts)) => {
            let fields = parts.iter().map(field).collect::<Result<Vec<_>, _>>()?;
            for f in &fields {
                e.need(f.dep)?;
            }
            let mut slot = 0;
            for f in &fields {
                e.load(f, concat_register(slot));
                slot += f.len.div_ceil(4);
            }
        }
        Expression::BinaryOperation(op) => {
            let expr::BinaryOperation::AND(left, Expression::String(mask)) = op.as_ref() else {
                return unsupported("binary operation");
            };
            let f = field(left)?;
            let mask = value(f.kind, &Expression::String(mask.clone()))?;
            e.need(f.dep)?;
            e.load(&f, NFT_REG_1);
            e.bitwise(&mask);
        }
        single => {
            let f = field(single)?;
            e.need(f.dep)?;
            e.load(&f, NFT_REG_1);
        }
    }
    Ok(())
}

fn match_statement(e: &mut RuleExprs, m: &Match<'_>) -> Result<(), Unsupported> {
    let negated = match m.op {
        Operator::EQ | Operator::IN => false,
        Operator::NEQ => true,
        _ => return unsupported("match operator"),
    };
    let op = if negated { OP_NEQ } else { OP_EQ };
    if let Expression::String(s) = &m.right {
        if let Some(set) = s.strip_prefix('@') {
            load_key(e, &m.left)?;
            e.lookup(set, None, negated, false);
            return Ok(());
        }
    }
    let f = field(&m.left)?;
    match (f.kind, &m.right) {
        // The protocol itself: the dependency a later field would add.
        (Kind::Nfproto, Expression::String(_)) if !negated => {
            let [p] = value(f.kind, &m.right)?[..] else { return unsupported("meta nfproto") };
            e.need(Some(Dep::Nfproto(p)))
        }
        (Kind::L4proto, Expression::String(_) | Expression::Number(_)) if !negated => {
            let [p] = value(f.kind, &m.right)?[..] else { return unsupported("meta l4proto") };
            e.need(Some(Dep::L4proto(p)))
        }
        (Kind::CtState, _) if !negated => {
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
            e.load(&f, NFT_REG_1);
            e.bitwise(&mask.to_ne_bytes());
            e.cmp(OP_NEQ, &0u32.to_ne_bytes());
            Ok(())
        }
        (Kind::Addr { v6 }, Expression::Named(NamedExpression::Prefix(p))) => {
            let Expression::String(s) = p.addr.as_ref() else { return unsupported("prefix") };
            let addr = address(s, v6)?;
            let bits = p.len as usize;
            if bits == 0 || bits > addr.len() * 8 {
                return unsupported("prefix length");
            }
            let mut mask = vec![0u8; addr.len()];
            for (i, b) in mask.iter_mut().enumerate() {
                let left = bits.saturating_sub(i * 8).min(8);
                *b = if left == 0 { 0 } else { 0xffu8 << (8 - left) };
            }
            let masked: Vec<u8> = addr.iter().zip(&mask).map(|(a, m)| a & m).collect();
            e.need(f.dep)?;
            if bits.is_multiple_of(8) {
                // nft loads only the whole bytes of a byte-aligned prefix.
                let n = bits / 8;
                e.load(&Field { len: n as u32, ..f }, NFT_REG_1);
                e.cmp(op, &masked[..n]);
            } else {
                e.load(&f, NFT_REG_1);
                e.bitwise(&mask);
                e.cmp(op, &masked);
            }
            Ok(())
        }
        (_, Expression::Range(r)) => {
            let (from, to) = (value(f.kind, &r.range[0])?, value(f.kind, &r.range[1])?);
            e.need(f.dep)?;
            e.load(&f, NFT_REG_1);
            if negated {
                e.range(OP_NEQ, &from, &to);
            } else {
                e.cmp(OP_GTE, &from);
                e.cmp(OP_LTE, &to);
            }
            Ok(())
        }
        (Kind::CtState | Kind::Nfproto | Kind::L4proto, _) if negated => unsupported("negated protocol or state"),
        (_, Expression::Named(NamedExpression::Set(items))) => {
            let set = anonymous_set(e, &m.left, items)?;
            load_key(e, &m.left)?;
            e.lookup(&set.name, Some(set.id), negated, false);
            Ok(())
        }
        (kind, right) => {
            let v = value(kind, right)?;
            e.need(f.dep)?;
            e.load(&f, NFT_REG_1);
            e.cmp(op, &v);
            Ok(())
        }
    }
}

/// The anonymous set of a rule's literal `{ ... }` matched against `left`.
fn anonymous_set(e: &mut RuleExprs, left: &Expression<'_>, items: &[expr::SetItem<'_>]) -> Result<SetRef, Unsupported> {
    let fields = match left {
        Expression::Named(NamedExpression::Concat(parts)) => {
            parts.iter().map(set_key).collect::<Result<Vec<_>, _>>()?
        }
        one => vec![set_key(one)?],
    };
    sets::anonymous_set(&mut e.sets, &fields, items)
}

/// One field of a set's key, as the set's user data describes it.
fn set_key(x: &Expression<'_>) -> Result<sets::Field, Unsupported> {
    match x {
        Expression::Named(NamedExpression::Payload(Payload::PayloadField(f))) => {
            sets::Field::payload(&f.protocol, &f.field)
        }
        Expression::Named(NamedExpression::Meta(m)) if m.key == MetaKey::Iifname => Ok(sets::Field::ifname(true)),
        Expression::Named(NamedExpression::Meta(m)) if m.key == MetaKey::Oifname => Ok(sets::Field::ifname(false)),
        _ => unsupported("set key"),
    }
}

/// `meter NAME { KEY limit ... }`: the key is added to the meter's set,
/// which runs the limit per key (nft's dynset).
fn meter(e: &mut RuleExprs, m: &stmt::Meter<'_>) -> Result<(), Unsupported> {
    let Statement::Limit(l) = m.stmt.as_ref() else { return unsupported("meter statement") };
    let set = sets::meter_set(&mut e.sets, &m.name, set_key(&m.key)?)?;
    load_key(e, &m.key)?;
    let mut per_key = RuleExprs::default();
    limit(&mut per_key, l)?;
    // The limit expression itself, without its list-element header.
    let per_key = per_key.out.get(4..).unwrap_or_default().to_vec();
    e.expr("dynset", |d| {
        push_attr(d, 1, &name_value(&set.name)); // NFTA_DYNSET_SET_NAME
        push_attr(d, 2, &set.id.to_be_bytes()); // NFTA_DYNSET_SET_ID
        push_attr(d, 3, &0u32.to_be_bytes()); // NFTA_DYNSET_OP: NFT_DYNSET_OP_ADD
        push_attr(d, 4, &NFT_REG_1.to_be_bytes()); // NFTA_DYNSET_SREG_KEY
        push_nested(d, 7, |x| x.extend_from_slice(&per_key)); // NFTA_DYNSET_EXPR
    });
    Ok(())
}
