//! Sets, verdict maps and their elements as nftables netlink messages,
//! written as nft 1.0.6 writes them: the same flags, key and data types,
//! concatenation description, set user data (`NFTA_SET_USERDATA`, which the
//! drift check compares byte for byte) and the same interval elements, so
//! a set loaded here reads back from the kernel identical to nft's.

use nftables::expr::{Expression, NamedExpression, SetItem, Verdict};
use nftables::schema::{self, SetFlag, SetPolicy, SetType, SetTypeValue};
use nftables::stmt::Counter;

use super::super::kernel::{
    message, name_value, NFTA_DATA_VALUE, NFTA_EXPR_DATA, NFTA_EXPR_NAME, NFTA_LIST_ELEM, NFTA_SET_DESC,
    NFTA_SET_ELEM_EXPR, NFTA_SET_ELEM_FLAGS, NFTA_SET_ELEM_KEY, NFTA_SET_ELEM_LIST_ELEMENTS, NFTA_SET_ELEM_LIST_SET,
    NFTA_SET_ELEM_LIST_TABLE, NFTA_SET_ELEM_TIMEOUT, NFTA_SET_ELEM_USERDATA, NFTA_SET_FLAGS, NFTA_SET_ID,
    NFTA_SET_KEY_LEN, NFTA_SET_NAME, NFTA_SET_TABLE, NFTNL_UDATA_SET_ELEM_COMMENT, NFT_MSG_NEWSET, NFT_MSG_NEWSETELEM,
    NFT_SET_ELEM_INTERVAL_END, NFT_SET_TIMEOUT, NLM_F_CREATE,
};
use super::super::tables::{NFT_GOTO, NFT_JUMP, NFT_RETURN, NF_ACCEPT, NF_DROP};
use super::{address, unsupported, Unsupported};
use crate::ir::names::{icmp_table, ICMP, ICMPV6};
use crate::netlink::{push_attr, push_nested};

// include/uapi/linux/netfilter/nf_tables.h
const NFT_SET_ANONYMOUS: u32 = 0x1;
const NFT_SET_CONSTANT: u32 = 0x2;
const NFT_SET_INTERVAL: u32 = 0x4;
const NFT_SET_MAP: u32 = 0x8;
const NFT_SET_EVAL: u32 = 0x20;
const NFT_SET_CONCAT: u32 = 0x80;
const NFTA_SET_KEY_TYPE: u16 = 4;
const NFTA_SET_DATA_TYPE: u16 = 6;
const NFTA_SET_DATA_LEN: u16 = 7;
const NFTA_SET_POLICY: u16 = 8;
const NFTA_SET_TIMEOUT: u16 = 11;
const NFTA_SET_GC_INTERVAL: u16 = 12;
const NFTA_SET_USERDATA: u16 = 13;
const NFTA_SET_EXPR: u16 = 17;
const NFTA_SET_DESC_SIZE: u16 = 1;
const NFTA_SET_DESC_CONCAT: u16 = 2;
const NFTA_SET_FIELD_LEN: u16 = 1;
const NFTA_SET_ELEM_KEY_END: u16 = 10;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_SET_ELEM_LIST_SET_ID: u16 = 4;
const NFT_DATA_VERDICT: u32 = 0xffff_ff00;
// libnftnl's include/libnftnl/udata.h: the set's and the element's user data.
const UDATA_SET_KEYBYTEORDER: u8 = 0;
const UDATA_SET_DATABYTEORDER: u8 = 1;
const UDATA_SET_MERGE_ELEMENTS: u8 = 2;
const UDATA_SET_KEY_TYPEOF: u8 = 3;
const UDATA_SET_DATA_TYPEOF: u8 = 4;
const UDATA_SET_DATA_INTERVAL: u8 = 6;
const UDATA_SET_COMMENT: u8 = 7;
const UDATA_SET_ELEM_FLAGS: u8 = 1;
/// An interval element running to the last key (it has no end element).
const UDATA_SET_ELEM_F_INTERVAL_OPEN: u32 = 1;
// nft's own numbers in that user data (include/expression.h, include/proto.h).
const EXPR_VERDICT: u32 = 1;
const EXPR_PAYLOAD: u32 = 7;
const EXPR_META: u32 = 9;
const EXPR_CONCAT: u32 = 13;
/// The nested element list's length is a u16: elements go in messages of
/// at most this many bytes of elements.
pub(in crate::nft) const ELEMENTS_PER_MESSAGE_BYTES: usize = 60_000;

/// The messages of one batch, and the set ids it has handed out (a set new
/// in a batch is named by an id unique in that batch).
#[derive(Default)]
pub struct Batch {
    table: String,
    pub(super) messages: Vec<Vec<u8>>,
    last_set_id: u32,
}

impl Batch {
    pub(super) fn new(table: &str, prologue: impl IntoIterator<Item = Vec<u8>>) -> Batch {
        Batch { table: table.to_string(), messages: prologue.into_iter().collect(), last_set_id: 0 }
    }

    pub(super) fn table(&self) -> &str {
        &self.table
    }

    pub(super) fn push(&mut self, m: Vec<u8>) {
        self.messages.push(m);
    }

    /// An empty batch for one rule's anonymous sets, numbering on from this one's ids.
    pub(super) fn for_rule(&self) -> Batch {
        Batch { table: self.table.clone(), messages: Vec::new(), last_set_id: self.last_set_id }
    }

    /// Appends the messages of `rule`'s batch (from [`Batch::for_rule`]).
    pub(super) fn absorb(&mut self, rule: Batch) {
        self.messages.extend(rule.messages);
        self.last_set_id = rule.last_set_id;
    }

    fn next_set_id(&mut self) -> u32 {
        self.last_set_id += 1;
        self.last_set_id
    }
}

/// A set a rule looks up: by name (`__set%d` for an anonymous set, which
/// the kernel numbers) and by its id in the batch (`NFTA_LOOKUP_SET_ID`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetRef {
    pub name: String,
    pub id: u32,
}

/// A key field's nft datatype.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyType {
    Ipv4Addr,
    Ipv6Addr,
    InetService,
    Ifname,
    /// `icmp type` (protocol 1) or `icmpv6 type` (58).
    IcmpType(u8),
}

impl KeyType {
    pub fn of(t: &SetType) -> Result<KeyType, Unsupported> {
        Ok(match t {
            SetType::Ipv4Addr => KeyType::Ipv4Addr,
            SetType::Ipv6Addr => KeyType::Ipv6Addr,
            SetType::InetService => KeyType::InetService,
            SetType::Ifname => KeyType::Ifname,
            other => return unsupported(format!("set type {other:?}")),
        })
    }

    /// nft's datatype number (include/datatype.h).
    fn number(self) -> u32 {
        match self {
            KeyType::Ipv4Addr => 7,
            KeyType::Ipv6Addr => 8,
            KeyType::InetService => 13,
            KeyType::Ifname => 41,
            KeyType::IcmpType(p) if p == ICMPV6 => 29,
            KeyType::IcmpType(_) => 14,
        }
    }

    fn len(self) -> usize {
        match self {
            KeyType::Ipv4Addr => 4,
            KeyType::Ipv6Addr => 16,
            KeyType::InetService => 2,
            KeyType::Ifname => 16,
            KeyType::IcmpType(_) => 1,
        }
    }

    /// nft's byte order of the type: big endian (2) or host (1).
    fn byteorder(self) -> u32 {
        match self {
            KeyType::Ifname => 1,
            _ => 2,
        }
    }
}

/// One key field of an anonymous set: its type and the rule expression it
/// is matched against, which nft records in the set's user data (`typeof`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    pub ty: KeyType,
    origin: Origin,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Origin {
    /// nft's protocol description id and header field index.
    Payload { desc: u32, field: u32 },
    /// A `meta` key.
    Meta(u32),
}

impl Field {
    /// `PROTOCOL FIELD` (`ip saddr`, `tcp dport`, ...).
    pub fn payload(protocol: &str, field: &str) -> Result<Field, Unsupported> {
        let (ty, desc, index) = match (protocol, field) {
            ("ip", "saddr") => (KeyType::Ipv4Addr, 12, 11),
            ("ip", "daddr") => (KeyType::Ipv4Addr, 12, 12),
            ("ip6", "saddr") => (KeyType::Ipv6Addr, 13, 8),
            ("ip6", "daddr") => (KeyType::Ipv6Addr, 13, 9),
            ("tcp", "sport") => (KeyType::InetService, 8, 1),
            ("tcp", "dport") => (KeyType::InetService, 8, 2),
            ("udp", "sport") => (KeyType::InetService, 6, 1),
            ("udp", "dport") => (KeyType::InetService, 6, 2),
            ("icmp", "type") => (KeyType::IcmpType(ICMP), 4, 1),
            ("icmpv6", "type") => (KeyType::IcmpType(ICMPV6), 14, 1),
            _ => return unsupported(format!("set of {protocol} {field}")),
        };
        Ok(Field { ty, origin: Origin::Payload { desc, field: index } })
    }

    /// `iifname` (or `oifname` when `input` is false).
    pub fn ifname(input: bool) -> Field {
        Field { ty: KeyType::Ifname, origin: Origin::Meta(if input { 6 } else { 7 }) }
    }

    fn udata(self, out: &mut Vec<u8>) {
        match self.origin {
            Origin::Payload { desc, field } => {
                put_u32(out, 0, EXPR_PAYLOAD);
                put_nest(out, 1, |d| {
                    put_u32(d, 0, desc);
                    put_u32(d, 1, field);
                });
            }
            Origin::Meta(key) => {
                put_u32(out, 0, EXPR_META);
                put_nest(out, 1, |d| put_u32(d, 0, key));
            }
        }
    }
}

/// A named set of `table` and its elements, with set id `id`.
pub(super) fn set_messages(b: &mut Batch, s: &schema::Set<'_>) -> Result<(), Unsupported> {
    let spec = SetSpec {
        comment: s.comment.as_deref(),
        timeout: s.timeout,
        gc_interval: s.gc_interval,
        size: s.size,
        policy: s.policy,
        counter: super::super::counts_elements(s),
        ..SetSpec::new(&s.name, key_types(&s.set_type)?, flag_bits(s.flags.as_ref()))
    };
    let elements: Vec<&Expression<'_>> = s.elem.iter().flat_map(|e| e.iter()).collect();
    add_set(b, &spec, &elements).map(|_| ())
}

/// A named verdict map.
pub(super) fn map_messages(b: &mut Batch, m: &schema::Map<'_>) -> Result<(), Unsupported> {
    // emit writes a verdict map's value type as `mark` (see `json::VerdictMap`).
    if m.map != SetTypeValue::Single(SetType::Mark) {
        return unsupported("map of values");
    }
    let spec = SetSpec {
        verdicts: true,
        comment: m.comment.as_deref(),
        timeout: m.timeout,
        gc_interval: m.gc_interval,
        size: m.size,
        policy: m.policy,
        ..SetSpec::new(&m.name, key_types(&m.set_type)?, flag_bits(m.flags.as_ref()) | NFT_SET_MAP)
    };
    let elements: Vec<&Expression<'_>> = m.elem.iter().flat_map(|e| e.iter()).collect();
    add_set(b, &spec, &elements).map(|_| ())
}

/// An anonymous constant set (a verdict map when `items` are mappings to
/// verdicts) of a rule's literal `{ ... }`, keyed by `fields` (several for
/// a concatenation), added to the batch before the rule that looks it up.
pub fn anonymous_set(b: &mut Batch, fields: &[Field], items: &[SetItem<'_>]) -> Result<SetRef, Unsupported> {
    let verdicts = items.iter().any(|i| matches!(i, SetItem::Mapping(..)));
    let mut elements = Vec::with_capacity(items.len());
    for item in items {
        elements.push(match item {
            SetItem::Element(e) if !verdicts => e.clone(),
            SetItem::Mapping(k, v @ Expression::Verdict(_)) if verdicts => Expression::List(vec![k.clone(), v.clone()]),
            _ => return unsupported("anonymous set item"),
        });
    }
    let name = if verdicts { "__map%d" } else { "__set%d" };
    let flags = NFT_SET_ANONYMOUS | NFT_SET_CONSTANT | if verdicts { NFT_SET_MAP } else { 0 };
    let spec =
        SetSpec { verdicts, typeof_: Some(fields), ..SetSpec::new(name, fields.iter().map(|f| f.ty).collect(), flags) };
    let refs: Vec<&Expression<'_>> = elements.iter().collect();
    add_set(b, &spec, &refs)
}

/// The set of `meter NAME { KEY ... }`: nft declares it anonymous and
/// dynamic, unsized, under the meter's name; the rule adds to it.
pub fn meter_set(b: &mut Batch, name: &str, key: Field) -> Result<SetRef, Unsupported> {
    add_set(b, &SetSpec::new(name, vec![key.ty], NFT_SET_ANONYMOUS | NFT_SET_EVAL), &[])
}

impl<'a> SetSpec<'a> {
    /// A set of `keys` with `flags`, nothing else declared.
    fn new(name: &'a str, keys: Vec<KeyType>, flags: u32) -> SetSpec<'a> {
        SetSpec {
            name,
            keys,
            flags,
            verdicts: false,
            timeout: None,
            gc_interval: None,
            size: None,
            policy: None,
            counter: false,
            typeof_: None,
            comment: None,
        }
    }
}

struct SetSpec<'a> {
    name: &'a str,
    keys: Vec<KeyType>,
    /// NFT_SET_* flags as declared; ANONYMOUS, INTERVAL (an anonymous set
    /// with a range) and CONCAT are added as nft adds them.
    flags: u32,
    verdicts: bool,
    timeout: Option<u32>,
    gc_interval: Option<u32>,
    size: Option<u32>,
    policy: Option<SetPolicy>,
    /// Its elements carry counters: nft declares the set's `counter`.
    counter: bool,
    /// The rule's key expressions, for an anonymous set.
    typeof_: Option<&'a [Field]>,
    comment: Option<&'a str>,
}

fn key_types(t: &SetTypeValue<'_>) -> Result<Vec<KeyType>, Unsupported> {
    match t {
        SetTypeValue::Single(t) => Ok(vec![KeyType::of(t)?]),
        SetTypeValue::Concatenated(ts) => ts.iter().map(KeyType::of).collect(),
    }
}

fn flag_bits(flags: Option<&std::collections::HashSet<SetFlag>>) -> u32 {
    flags.into_iter().flatten().fold(0, |acc, f| {
        acc | match f {
            SetFlag::Constant => NFT_SET_CONSTANT,
            SetFlag::Interval => NFT_SET_INTERVAL,
            SetFlag::Timeout => NFT_SET_TIMEOUT,
            SetFlag::Dynamic => NFT_SET_EVAL,
        }
    })
}

/// One element as the kernel takes it.
struct Element {
    start: Vec<u8>,
    /// The last key it covers (inclusive), when it is a range.
    last: Vec<u8>,
    timeout_ms: Option<u64>,
    comment: Option<String>,
    counter: bool,
    verdict: Option<(i32, Option<String>)>,
}

fn add_set(b: &mut Batch, spec: &SetSpec<'_>, elements: &[&Expression<'_>]) -> Result<SetRef, Unsupported> {
    if spec.comment.is_some_and(|c| c.len() > 253) {
        return unsupported("set comment longer than 253 bytes");
    }
    let concat = spec.keys.len() > 1;
    let mut parsed = Vec::with_capacity(elements.len());
    for e in elements {
        parsed.push(element(&spec.keys, spec.verdicts, e)?);
    }
    let anonymous = spec.flags & NFT_SET_ANONYMOUS != 0;
    let mut flags = spec.flags;
    if anonymous && parsed.iter().any(|e| e.start != e.last) {
        flags |= NFT_SET_INTERVAL;
    }
    let interval = flags & NFT_SET_INTERVAL != 0;
    if concat && interval {
        flags |= NFT_SET_CONCAT;
    }
    if !interval && parsed.iter().any(|e| e.start != e.last) {
        return unsupported("a range in a set without intervals");
    }
    // nft merges an anonymous set's adjacent and overlapping ranges (its
    // user data says so: MERGE_ELEMENTS).
    let merge = anonymous && interval;
    let kernel_elements =
        if interval && !concat { interval_elements(parsed, merge) } else { plain_elements(parsed, concat && interval) };

    let id = b.next_set_id();
    let mut a = Vec::new();
    push_attr(&mut a, NFTA_SET_TABLE, &name_value(b.table()));
    push_attr(&mut a, NFTA_SET_NAME, &name_value(spec.name));
    push_attr(&mut a, NFTA_SET_FLAGS, &flags.to_be_bytes());
    let key_type = spec.keys.iter().fold(0u32, |acc, k| (acc << 6) | k.number());
    push_attr(&mut a, NFTA_SET_KEY_TYPE, &key_type.to_be_bytes());
    let key_len: usize =
        if concat { spec.keys.iter().map(|k| k.len().next_multiple_of(4)).sum() } else { spec.keys[0].len() };
    push_attr(&mut a, NFTA_SET_KEY_LEN, &u32::try_from(key_len).unwrap_or(0).to_be_bytes());
    if spec.verdicts {
        push_attr(&mut a, NFTA_SET_DATA_TYPE, &NFT_DATA_VERDICT.to_be_bytes());
        push_attr(&mut a, NFTA_SET_DATA_LEN, &0u32.to_be_bytes());
    }
    push_attr(&mut a, NFTA_SET_ID, &id.to_be_bytes());
    if let Some(p) = spec.policy {
        push_attr(&mut a, NFTA_SET_POLICY, &u32::from(p == SetPolicy::Memory).to_be_bytes());
    }
    // nft sizes an anonymous set to what it holds.
    // (A meter's set grows: it has no size.)
    let constant = anonymous && flags & NFT_SET_EVAL == 0;
    let size = spec.size.or_else(|| constant.then(|| u32::try_from(kernel_elements.len()).unwrap_or(u32::MAX)));
    if size.is_some() || (concat && interval) {
        push_nested(&mut a, NFTA_SET_DESC, |d| {
            if let Some(size) = size {
                push_attr(d, NFTA_SET_DESC_SIZE, &size.to_be_bytes());
            }
            if concat && interval {
                push_nested(d, NFTA_SET_DESC_CONCAT, |c| {
                    for k in &spec.keys {
                        push_nested(c, NFTA_LIST_ELEM, |f| {
                            push_attr(f, NFTA_SET_FIELD_LEN, &u32::try_from(k.len()).unwrap_or(0).to_be_bytes())
                        });
                    }
                });
            }
        });
    }
    if let Some(t) = spec.timeout {
        push_attr(&mut a, NFTA_SET_TIMEOUT, &(u64::from(t) * 1000).to_be_bytes());
    }
    if let Some(g) = spec.gc_interval {
        push_attr(&mut a, NFTA_SET_GC_INTERVAL, &(g * 1000).to_be_bytes());
    }
    push_attr(&mut a, NFTA_SET_USERDATA, &set_udata(spec, concat, merge));
    if spec.counter {
        push_nested(&mut a, NFTA_SET_EXPR, counter_expr);
    }
    b.push(message(NFT_MSG_NEWSET, NLM_F_CREATE, &a));
    let set_id = anonymous.then_some(id);
    b.messages.extend(element_messages(b.table(), spec.name, set_id, &kernel_elements));
    Ok(SetRef { name: spec.name.to_string(), id })
}

/// `NFTA_SET_USERDATA` as nft 1.0.6 writes it.
fn set_udata(spec: &SetSpec<'_>, concat: bool, merge: bool) -> Vec<u8> {
    let mut u = Vec::new();
    put_u32(&mut u, UDATA_SET_KEYBYTEORDER, if concat { 0 } else { spec.keys[0].byteorder() });
    if spec.verdicts {
        put_u32(&mut u, UDATA_SET_DATABYTEORDER, 0);
    }
    if merge {
        put_u32(&mut u, UDATA_SET_MERGE_ELEMENTS, 1);
    }
    match spec.typeof_ {
        Some([one]) => put_nest(&mut u, UDATA_SET_KEY_TYPEOF, |t| one.udata(t)),
        Some(fields) => put_nest(&mut u, UDATA_SET_KEY_TYPEOF, |t| {
            put_u32(t, 0, EXPR_CONCAT);
            put_nest(t, 1, |d| {
                for (i, f) in (0u8..).zip(fields.iter()) {
                    put_nest(d, i, |sub| f.udata(sub));
                }
            });
        }),
        // A declared concatenation: the typeof of a concatenation of no expressions.
        None if concat => put_nest(&mut u, UDATA_SET_KEY_TYPEOF, |t| {
            put_u32(t, 0, EXPR_CONCAT);
            put_nest(t, 1, |_| {});
        }),
        None => {}
    }
    if spec.verdicts {
        if spec.typeof_.is_some() {
            put_nest(&mut u, UDATA_SET_DATA_TYPEOF, |t| {
                put_u32(t, 0, EXPR_VERDICT);
                put_nest(t, 1, |_| {});
            });
        }
        put_u32(&mut u, UDATA_SET_DATA_INTERVAL, 0);
    }
    if let Some(c) = spec.comment {
        let text = name_value(c);
        u.extend_from_slice(&[UDATA_SET_COMMENT, u8::try_from(text.len()).unwrap_or(u8::MAX)]);
        u.extend_from_slice(&text);
    }
    u
}

/// libnftnl's user data TLV: type, length, value (a u32 in host order).
fn put_u32(out: &mut Vec<u8>, kind: u8, v: u32) {
    out.extend_from_slice(&[kind, 4]);
    out.extend_from_slice(&v.to_ne_bytes());
}

fn put_nest(out: &mut Vec<u8>, kind: u8, inner: impl FnOnce(&mut Vec<u8>)) {
    let at = out.len();
    out.extend_from_slice(&[kind, 0]);
    inner(out);
    out[at + 1] = u8::try_from(out.len() - at - 2).unwrap_or(u8::MAX);
}

fn counter_expr(e: &mut Vec<u8>) {
    push_attr(e, NFTA_EXPR_NAME, &name_value("counter"));
    push_nested(e, NFTA_EXPR_DATA, |_| {});
}

/// Parses one element: its key (a value, prefix or range per field), its
/// timeout, comment and counter, and a map element's verdict.
fn element(keys: &[KeyType], verdicts: bool, e: &Expression<'_>) -> Result<Element, Unsupported> {
    let (key, verdict) = match (verdicts, e) {
        (true, Expression::List(pair)) => match pair.as_slice() {
            [k, Expression::Verdict(v)] => (k, Some(verdict(v)?)),
            _ => return unsupported("map element"),
        },
        (true, _) => return unsupported("map element"),
        (false, e) => (e, None),
    };
    let (key, timeout_ms, comment, counter) = match key {
        Expression::Named(NamedExpression::Elem(el)) => {
            if el.expires.is_some() {
                return unsupported("element expiry");
            }
            if el.counter.as_ref().is_some_and(|c| !matches!(c, Counter::Anonymous(None))) {
                return unsupported("element counter");
            }
            (el.val.as_ref(), el.timeout.map(|t| u64::from(t) * 1000), el.comment.as_deref(), el.counter.is_some())
        }
        other => (other, None, None, false),
    };
    let (start, last) = match (keys, key) {
        ([one], k) => field_bounds(*one, k)?,
        (many, Expression::Named(NamedExpression::Concat(parts))) if parts.len() == many.len() => {
            let (mut start, mut last) = (Vec::new(), Vec::new());
            for (t, part) in many.iter().zip(parts) {
                let (s, l) = field_bounds(*t, part)?;
                let padded = t.len().next_multiple_of(4);
                start.extend_from_slice(&s);
                start.resize(start.len() + padded - s.len(), 0);
                last.extend_from_slice(&l);
                last.resize(last.len() + padded - l.len(), 0);
            }
            (start, last)
        }
        _ => return unsupported("element of a concatenated set"),
    };
    if comment.is_some_and(|c| c.len() > 253) {
        return unsupported("element comment longer than 253 bytes");
    }
    Ok(Element { start, last, timeout_ms, comment: comment.map(str::to_string), counter, verdict })
}

fn verdict(v: &Verdict<'_>) -> Result<(i32, Option<String>), Unsupported> {
    Ok(match v {
        Verdict::Accept => (NF_ACCEPT, None),
        Verdict::Drop => (NF_DROP, None),
        Verdict::Return => (NFT_RETURN, None),
        Verdict::Jump(t) => (NFT_JUMP, Some(t.target.to_string())),
        Verdict::Goto(t) => (NFT_GOTO, Some(t.target.to_string())),
        _ => return unsupported("map verdict"),
    })
}

/// The first and last key of one field's value: an address, a prefix, a
/// port, a range of either, or an interface name.
fn field_bounds(t: KeyType, e: &Expression<'_>) -> Result<(Vec<u8>, Vec<u8>), Unsupported> {
    if let Expression::Range(r) = e {
        let (a, _) = field_bounds(t, &r.range[0])?;
        let (_, b) = field_bounds(t, &r.range[1])?;
        return Ok((a, b));
    }
    match (t, e) {
        (KeyType::Ipv4Addr | KeyType::Ipv6Addr, Expression::String(s)) => {
            let a = address(s, t == KeyType::Ipv6Addr)?;
            Ok((a.clone(), a))
        }
        (KeyType::Ipv4Addr | KeyType::Ipv6Addr, Expression::Named(NamedExpression::Prefix(p))) => {
            let Expression::String(s) = p.addr.as_ref() else { return unsupported("prefix") };
            let a = address(s, t == KeyType::Ipv6Addr)?;
            let bits = usize::try_from(p.len).unwrap_or(usize::MAX);
            if bits > a.len() * 8 {
                return unsupported("prefix length");
            }
            let (mut first, mut last) = (a.clone(), a);
            for i in 0..first.len() {
                let keep = bits.saturating_sub(i * 8).min(8);
                let mask = if keep == 0 { 0 } else { 0xffu8 << (8 - keep) };
                first[i] &= mask;
                last[i] = first[i] | !mask;
            }
            Ok((first, last))
        }
        (KeyType::InetService, Expression::Number(n)) => {
            let port = u16::try_from(*n).map_err(|_| Unsupported("port".into()))?;
            Ok((port.to_be_bytes().to_vec(), port.to_be_bytes().to_vec()))
        }
        (KeyType::IcmpType(p), Expression::String(name)) => {
            match icmp_table(p).iter().find(|(n, _)| *n == name.as_ref()) {
                Some((_, t)) => Ok((vec![*t], vec![*t])),
                None => unsupported(format!("icmp type {name}")),
            }
        }
        (KeyType::IcmpType(_), Expression::Number(n)) => {
            let t = u8::try_from(*n).map_err(|_| Unsupported("icmp type".into()))?;
            Ok((vec![t], vec![t]))
        }
        (KeyType::Ifname, Expression::String(name)) => {
            if name.contains('\\') || name.len() >= 16 {
                return unsupported("interface name in a set");
            }
            // `eth*`: every name starting with `eth`, as the range nft loads.
            let (stem, wildcard) = match name.strip_suffix('*') {
                Some(stem) if !stem.contains('*') => (stem, true),
                _ if name.contains('*') => return unsupported("interface wildcard in a set"),
                _ => (name.as_ref(), false),
            };
            let (mut first, mut last) = (stem.as_bytes().to_vec(), stem.as_bytes().to_vec());
            first.resize(16, 0);
            last.resize(16, if wildcard { 0xff } else { 0 });
            Ok((first, last))
        }
        _ => unsupported(format!("{t:?} element")),
    }
}

/// The elements of a set without intervals, or of a concatenation with
/// intervals (each element carries its last key as `KEY_END`).
fn plain_elements(elements: Vec<Element>, key_end: bool) -> Vec<Vec<u8>> {
    elements.into_iter().map(|e| element_attrs(&e, key_end, false)).collect()
}

/// A single-field interval set's elements as nft 1.0.6 loads them: an end
/// element at key 0 first (unless the first range starts there), then per
/// range its start and a flagged end after it, unless it runs to the last
/// key (then the start is marked open in its user data). With `merge`,
/// ranges that touch or overlap become one.
fn interval_elements(mut elements: Vec<Element>, merge: bool) -> Vec<Vec<u8>> {
    elements.sort_by(|a, b| a.start.cmp(&b.start));
    if merge {
        let mut merged: Vec<Element> = Vec::with_capacity(elements.len());
        for e in elements {
            match merged.last_mut() {
                Some(prev) if successor(&prev.last).is_none_or(|next| e.start <= next) => {
                    if e.last > prev.last {
                        prev.last = e.last;
                    }
                }
                _ => merged.push(e),
            }
        }
        elements = merged;
    }
    let mut out = Vec::with_capacity(elements.len() * 2 + 1);
    if let Some(first) = elements.first().filter(|e| e.start.iter().any(|&b| b != 0)) {
        out.push(end_element(vec![0; first.start.len()]));
    }
    for e in &elements {
        match successor(&e.last) {
            Some(next) => {
                out.push(element_attrs(e, false, false));
                out.push(end_element(next));
            }
            None => out.push(element_attrs(e, false, true)),
        }
    }
    out
}

/// The key after `key`, `None` after the last one.
fn successor(key: &[u8]) -> Option<Vec<u8>> {
    let mut next = key.to_vec();
    for b in next.iter_mut().rev() {
        let (v, carry) = b.overflowing_add(1);
        *b = v;
        if !carry {
            return Some(next);
        }
    }
    None
}

fn end_element(key: Vec<u8>) -> Vec<u8> {
    let mut e = Vec::new();
    push_attr(&mut e, NFTA_SET_ELEM_FLAGS, &NFT_SET_ELEM_INTERVAL_END.to_be_bytes());
    push_nested(&mut e, NFTA_SET_ELEM_KEY, |k| push_attr(k, NFTA_DATA_VALUE, &key));
    e
}

fn element_attrs(e: &Element, key_end: bool, open: bool) -> Vec<u8> {
    let mut out = Vec::new();
    push_nested(&mut out, NFTA_SET_ELEM_KEY, |k| push_attr(k, NFTA_DATA_VALUE, &e.start));
    if key_end {
        push_nested(&mut out, NFTA_SET_ELEM_KEY_END, |k| push_attr(k, NFTA_DATA_VALUE, &e.last));
    }
    if let Some(t) = e.timeout_ms {
        push_attr(&mut out, NFTA_SET_ELEM_TIMEOUT, &t.to_be_bytes());
    }
    if let Some((code, chain)) = &e.verdict {
        push_nested(&mut out, NFTA_SET_ELEM_DATA, |d| super::verdict_data(d, *code, chain.as_deref()));
    }
    let mut udata = Vec::new();
    if let Some(c) = &e.comment {
        let text = name_value(c);
        udata.extend_from_slice(&[NFTNL_UDATA_SET_ELEM_COMMENT, u8::try_from(text.len()).unwrap_or(u8::MAX)]);
        udata.extend_from_slice(&text);
    }
    if open {
        put_u32(&mut udata, UDATA_SET_ELEM_FLAGS, UDATA_SET_ELEM_F_INTERVAL_OPEN);
    }
    if !udata.is_empty() {
        push_attr(&mut out, NFTA_SET_ELEM_USERDATA, &udata);
    }
    if e.counter {
        push_nested(&mut out, NFTA_SET_ELEM_EXPR, counter_expr);
    }
    out
}

/// NEWSETELEM messages adding `elements` to `set` (named by `id` too when
/// it is anonymous), each under the nested list's size limit.
pub(in crate::nft) fn element_messages(table: &str, set: &str, id: Option<u32>, elements: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let (t, s) = (name_value(table), name_value(set));
    let mut out = Vec::new();
    for chunk in chunks(elements) {
        let mut body = Vec::new();
        push_attr(&mut body, NFTA_SET_ELEM_LIST_TABLE, &t);
        push_attr(&mut body, NFTA_SET_ELEM_LIST_SET, &s);
        if let Some(id) = id {
            push_attr(&mut body, NFTA_SET_ELEM_LIST_SET_ID, &id.to_be_bytes());
        }
        push_nested(&mut body, NFTA_SET_ELEM_LIST_ELEMENTS, |list| {
            for e in chunk {
                push_nested(list, NFTA_LIST_ELEM, |v| v.extend_from_slice(e));
            }
        });
        out.push(message(NFT_MSG_NEWSETELEM, NLM_F_CREATE, &body));
    }
    out
}

/// Runs of elements whose encoded size stays under the message limit.
pub(in crate::nft) fn chunks(elements: &[Vec<u8>]) -> Vec<&[Vec<u8>]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, e) in elements.iter().enumerate() {
        let size = 4 + e.len().next_multiple_of(4);
        if bytes + size > ELEMENTS_PER_MESSAGE_BYTES && i > start {
            out.push(&elements[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < elements.len() {
        out.push(&elements[start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec<'a>(keys: Vec<KeyType>, verdicts: bool, typeof_: Option<&'a [Field]>) -> SetSpec<'a> {
        SetSpec { verdicts, typeof_, ..SetSpec::new("s", keys, 0) }
    }

    /// The user data bytes are those `nft --debug=mnl` showed nft 1.0.6 send.
    #[test]
    fn set_user_data_is_what_nft_writes() {
        let v4 = spec(vec![KeyType::Ipv4Addr], false, None);
        assert_eq!(set_udata(&v4, false, false), [0, 4, 2, 0, 0, 0]);
        let concat = spec(vec![KeyType::Ipv4Addr, KeyType::InetService], false, None);
        assert_eq!(set_udata(&concat, true, false), [0, 4, 0, 0, 0, 0, 3, 8, 0, 4, 13, 0, 0, 0, 1, 0]);
        let vmap = spec(vec![KeyType::Ipv4Addr], true, None);
        assert_eq!(set_udata(&vmap, false, false), [0, 4, 2, 0, 0, 0, 1, 4, 0, 0, 0, 0, 6, 4, 0, 0, 0, 0]);
        let ports = [Field::payload("udp", "dport").unwrap()];
        let anon = spec(vec![KeyType::InetService], false, Some(&ports));
        assert_eq!(
            set_udata(&anon, false, true),
            [0, 4, 2, 0, 0, 0, 2, 4, 1, 0, 0, 0, 3, 20, 0, 4, 7, 0, 0, 0, 1, 12, 0, 4, 6, 0, 0, 0, 1, 4, 2, 0, 0, 0]
        );
        let pair = [Field::payload("ip", "saddr").unwrap(), Field::payload("tcp", "dport").unwrap()];
        let anon_concat = spec(vec![KeyType::Ipv4Addr, KeyType::InetService], false, Some(&pair));
        let mut want = vec![0, 4, 0, 0, 0, 0, 3, 52, 0, 4, 13, 0, 0, 0, 1, 44];
        want.extend([0, 20, 0, 4, 7, 0, 0, 0, 1, 12, 0, 4, 12, 0, 0, 0, 1, 4, 11, 0, 0, 0]);
        want.extend([1, 20, 0, 4, 7, 0, 0, 0, 1, 12, 0, 4, 8, 0, 0, 0, 1, 4, 2, 0, 0, 0]);
        assert_eq!(set_udata(&anon_concat, true, false), want);
        let iface = [Field::ifname(true)];
        let ifaces = spec(vec![KeyType::Ifname], false, Some(&iface));
        assert_eq!(
            set_udata(&ifaces, false, false),
            [0, 4, 1, 0, 0, 0, 3, 14, 0, 4, 9, 0, 0, 0, 1, 6, 0, 4, 6, 0, 0, 0]
        );
    }

    fn keys(e: &[Vec<u8>]) -> Vec<(Vec<u8>, bool)> {
        e.iter()
            .map(|e| {
                let key = crate::netlink::attr(e, NFTA_SET_ELEM_KEY).unwrap().unwrap();
                let value = crate::netlink::attr(key, NFTA_DATA_VALUE).unwrap().unwrap().to_vec();
                let end = crate::netlink::attr(e, NFTA_SET_ELEM_FLAGS).unwrap().is_some();
                (value, end)
            })
            .collect()
    }

    fn range(a: [u8; 2], b: [u8; 2]) -> Element {
        Element { start: a.to_vec(), last: b.to_vec(), timeout_ms: None, comment: None, counter: false, verdict: None }
    }

    #[test]
    fn intervals_have_nfts_end_elements_and_merge_only_when_anonymous() {
        // 1-5, 6-6 (adjacent), 65535 (to the last key).
        let ranges = || vec![range([0, 6], [0, 6]), range([0, 1], [0, 5]), range([255, 255], [255, 255])];
        let loose = keys(&interval_elements(ranges(), false));
        let start = |k: [u8; 2]| (k.to_vec(), false);
        let end = |k: [u8; 2]| (k.to_vec(), true);
        assert_eq!(loose, [end([0, 0]), start([0, 1]), end([0, 6]), start([0, 6]), end([0, 7]), start([255, 255])]);
        let merged = keys(&interval_elements(ranges(), true));
        assert_eq!(merged, [end([0, 0]), start([0, 1]), end([0, 7]), start([255, 255])]);
        assert_eq!(successor(&[0, 255]), Some(vec![1, 0]));
        assert_eq!(successor(&[255, 255]), None);
    }
}
