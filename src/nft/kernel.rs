//! What the kernel holds for phantomc's table, read over nf_tables netlink
//! (on [`crate::netlink`]) without nft: nft 1.0.6 reads every element of
//! every set before it lists a single rule or chain, which takes about a
//! minute when the table holds an 800k-entry feed set. These dumps read only
//! what is asked for, so their cost does not grow with a feed.

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use super::SetElem;
use crate::ir::optimize::SET_PREFIX;
use crate::netlink::{self, attr, attrs, be_u64, str_value};

// include/uapi/linux/netfilter/nfnetlink.h, nf_tables.h
pub const NFNL_SUBSYS_NFTABLES: u16 = 10;
pub(super) const NFT_MSG_NEWTABLE: u16 = 0;
pub(super) const NFT_MSG_GETTABLE: u16 = 1;
pub(super) const NFT_MSG_DELTABLE: u16 = 2;
pub(super) const NFT_MSG_NEWCHAIN: u16 = 3;
pub(super) const NFT_MSG_GETCHAIN: u16 = 4;
pub(super) const NFT_MSG_NEWRULE: u16 = 6;
pub(super) const NFT_MSG_GETRULE: u16 = 7;
pub(super) const NFT_MSG_NEWSET: u16 = 9;
pub(super) const NFT_MSG_GETSET: u16 = 10;
pub(super) const NFT_MSG_NEWSETELEM: u16 = 12;
pub(super) const NFT_MSG_GETSETELEM: u16 = 13;
pub(super) const NFT_MSG_NEWOBJ: u16 = 18;
pub(super) const NFT_MSG_GETOBJ: u16 = 19;
pub(super) const NFTA_OBJ_TABLE: u16 = 1;
pub(super) const NFTA_OBJ_NAME: u16 = 2;
pub(super) const NFTA_OBJ_TYPE: u16 = 3;
pub(super) const NFTA_OBJ_DATA: u16 = 4;
pub(super) const NFT_OBJECT_COUNTER: u32 = 1;
pub const NFPROTO_INET: u8 = 1;
/// A set whose elements can expire: phantomc's run-time sets.
pub const NFT_SET_TIMEOUT: u32 = 0x10;

pub(super) const NFTA_TABLE_NAME: u16 = 1;
pub(super) const NFTA_CHAIN_TABLE: u16 = 1;
pub(super) const NFTA_CHAIN_HANDLE: u16 = 2;
pub(super) const NFTA_CHAIN_NAME: u16 = 3;
pub(super) const NFTA_CHAIN_USE: u16 = 6;
pub(super) const NFTA_CHAIN_COUNTERS: u16 = 8;
pub(super) const NFTA_CHAIN_ID: u16 = 11;
pub(super) const NFTA_RULE_TABLE: u16 = 1;
pub(super) const NFTA_RULE_CHAIN: u16 = 2;
pub(super) const NFTA_RULE_HANDLE: u16 = 3;
pub(super) const NFTA_RULE_EXPRESSIONS: u16 = 4;
pub(super) const NFTA_RULE_POSITION: u16 = 6;
pub(super) const NFTA_RULE_USERDATA: u16 = 7;
pub(super) const NFTA_RULE_ID: u16 = 9;
pub(super) const NFTA_LIST_ELEM: u16 = 1;
pub(super) const NFTA_EXPR_NAME: u16 = 1;
pub(super) const NFTA_EXPR_DATA: u16 = 2;
const NFTA_COUNTER_BYTES: u16 = 1;
const NFTA_COUNTER_PACKETS: u16 = 2;
pub(super) const NFTA_SET_TABLE: u16 = 1;
pub(super) const NFTA_SET_NAME: u16 = 2;
pub(super) const NFTA_SET_FLAGS: u16 = 3;
pub(super) const NFTA_SET_KEY_LEN: u16 = 5;
pub(super) const NFTA_SET_DESC: u16 = 9;
const NFTA_SET_DESC_SIZE: u16 = 1;
pub(super) const NFTA_SET_ID: u16 = 10;
pub(super) const NFTA_SET_HANDLE: u16 = 16;
/// The number of elements (Linux 6.x; older kernels leave it out).
pub(super) const NFTA_SET_COUNT: u16 = 20;
pub(super) const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
pub(super) const NFTA_SET_ELEM_LIST_SET: u16 = 2;
pub(super) const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
pub(super) const NFTA_SET_ELEM_KEY: u16 = 1;
pub(super) const NFTA_SET_ELEM_FLAGS: u16 = 3;
pub(super) const NFTA_SET_ELEM_TIMEOUT: u16 = 4;
pub(super) const NFTA_SET_ELEM_EXPIRATION: u16 = 5;
pub(super) const NFTA_SET_ELEM_USERDATA: u16 = 6;
pub(super) const NFTA_SET_ELEM_EXPR: u16 = 7;
// 8 is PAD, 9 OBJREF, 10 KEY_END (the end of an interval in a concatenated set).
const NFTA_SET_ELEM_EXPRESSIONS: u16 = 11;
pub(super) const NFTA_DATA_VALUE: u16 = 1;
pub(super) const NFT_SET_ELEM_INTERVAL_END: u32 = 1;
/// libnftnl's user data: TLVs of one-byte type and length; a comment is
/// type 0 for rules and set elements alike.
pub(super) const NFTNL_UDATA_RULE_COMMENT: u8 = 0;
pub(super) const NFTNL_UDATA_SET_ELEM_COMMENT: u8 = 0;

pub(super) fn kind(msg: u16) -> u16 {
    NFNL_SUBSYS_NFTABLES << 8 | msg
}

pub(super) const NLM_F_CREATE: u16 = 0x400;
pub(super) const NLM_F_APPEND: u16 = 0x800;

/// One nf_tables message of a batch, for family inet.
pub(super) fn message(msg: u16, flags: u16, attrs: &[u8]) -> Vec<u8> {
    netlink::request_with(kind(msg), flags, NFPROTO_INET, attrs)
}

/// The start of a batch that replaces `table`: creating it first makes the
/// delete succeed whether or not it exists.
pub(super) fn delete_table_messages(table: &str) -> [Vec<u8>; 2] {
    let named = table_named(table);
    [message(NFT_MSG_NEWTABLE, NLM_F_CREATE, &named), message(NFT_MSG_DELTABLE, 0, &named)]
}

/// A table message's attributes: its name only.
pub(super) fn table_named(table: &str) -> Vec<u8> {
    let mut named = Vec::new();
    netlink::push_attr(&mut named, NFTA_TABLE_NAME, &name_value(table));
    named
}

pub(super) fn name_value(name: &str) -> Vec<u8> {
    let mut v = name.as_bytes().to_vec();
    v.push(0);
    v
}

/// Dumps `get` for family inet, filtered by the kernel to `filter`, and
/// hands each `new` reply to `each`. A missing table or set is no objects.
pub(super) fn dump(
    get: u16,
    new: u16,
    filter: &[(u16, &[u8])],
    each: &mut dyn FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<()> {
    let request = netlink::dump_request(kind(get), NFPROTO_INET, filter);
    let result = netlink::dump(&request, &mut |m| if m.kind == kind(new) { each(m.body) } else { Ok(()) });
    match result {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        other => other,
    }
}

/// Does table `inet NAME` exist in the calling thread's network namespace?
pub fn table_exists(table: &str) -> io::Result<bool> {
    let mut found = false;
    dump(NFT_MSG_GETTABLE, NFT_MSG_NEWTABLE, &[], &mut |body| {
        found |= attr(body, NFTA_TABLE_NAME)?.map(str_value).as_deref() == Some(table);
        Ok(())
    })?;
    Ok(found)
}

/// The number of rules in table `inet NAME` (0 when it does not exist).
pub fn count(table: &str) -> io::Result<usize> {
    let name = name_value(table);
    let mut rules = 0;
    dump(NFT_MSG_GETRULE, NFT_MSG_NEWRULE, &[(NFTA_RULE_TABLE, &name)], &mut |body| {
        // Older kernels ignore the filter: count only this table's rules.
        if attr(body, NFTA_RULE_TABLE)? == Some(&name[..]) {
            rules += 1;
        }
        Ok(())
    })?;
    Ok(rules)
}

/// The number of elements of every set of table `inet NAME`, as the kernel
/// counts them (empty on kernels that do not report it).
pub fn set_counts(table: &str) -> io::Result<BTreeMap<String, u32>> {
    let name = name_value(table);
    let mut counts = BTreeMap::new();
    dump(NFT_MSG_GETSET, NFT_MSG_NEWSET, &[(NFTA_SET_TABLE, &name)], &mut |body| {
        if attr(body, NFTA_SET_TABLE)? != Some(&name[..]) {
            return Ok(());
        }
        if let (Some(set), Some(n)) =
            (attr(body, NFTA_SET_NAME)?, attr(body, NFTA_SET_COUNT)?.and_then(netlink::be_u32))
        {
            counts.insert(str_value(set), n);
        }
        Ok(())
    })?;
    Ok(counts)
}

/// The flags (`NFT_SET_*`) of set `set` of table `inet NAME`, `None` when
/// there is no such set.
pub fn set_flags(table: &str, set: &str) -> io::Result<Option<u32>> {
    let name = name_value(table);
    let mut flags = None;
    dump(NFT_MSG_GETSET, NFT_MSG_NEWSET, &[(NFTA_SET_TABLE, &name)], &mut |body| {
        if attr(body, NFTA_SET_TABLE)? == Some(&name[..])
            && attr(body, NFTA_SET_NAME)?.map(str_value).as_deref() == Some(set)
        {
            flags = Some(attr(body, NFTA_SET_FLAGS)?.and_then(netlink::be_u32).unwrap_or(0));
        }
        Ok(())
    })?;
    Ok(flags)
}

/// One rule as the kernel holds it. Two rules are equal when they are the
/// same rule: handle and counter values change on their own.
#[derive(Clone, Debug)]
pub struct KernelRule {
    pub chain: String,
    pub comment: Option<String>,
    /// Its attributes without handle, position and counter values.
    pub body: Vec<u8>,
    /// Expression names, for a readable line.
    pub exprs: Vec<String>,
    pub handle: Option<u64>,
    /// `(packets, bytes)` of its counter, if it has one.
    pub counter: Option<(u64, u64)>,
}

impl PartialEq for KernelRule {
    fn eq(&self, other: &Self) -> bool {
        (&self.chain, &self.comment, &self.body) == (&other.chain, &other.comment, &other.body)
    }
}

impl Eq for KernelRule {}

/// A set definition and, unless skipped, its elements (sorted, without
/// their remaining time).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelSet {
    pub def: Vec<u8>,
    pub elements: Option<Vec<Vec<u8>>>,
}

/// Chains, sets and rules of one table, comparable between two kernels
/// (the live one and a scratch namespace holding the compiled policy).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub chains: BTreeMap<String, Vec<u8>>,
    pub sets: BTreeMap<String, KernelSet>,
    pub rules: Vec<KernelRule>,
}

/// Reads table `inet NAME`, with the elements of every set except those
/// `skip_elements` names (feed and run-time sets, whose contents are not
/// the policy's); `None` when the table does not exist.
pub fn snapshot(table: &str, skip_elements: &dyn Fn(&str) -> bool) -> io::Result<Option<Snapshot>> {
    if !table_exists(table)? {
        return Ok(None);
    }
    let name = name_value(table);
    let mut snap = Snapshot::default();
    dump(NFT_MSG_GETCHAIN, NFT_MSG_NEWCHAIN, &[(NFTA_CHAIN_TABLE, &name)], &mut |body| {
        if attr(body, NFTA_CHAIN_TABLE)? != Some(&name[..]) {
            return Ok(());
        }
        let chain = attr(body, NFTA_CHAIN_NAME)?.map(str_value).unwrap_or_default();
        snap.chains
            .insert(chain, without(body, &[NFTA_CHAIN_HANDLE, NFTA_CHAIN_USE, NFTA_CHAIN_COUNTERS, NFTA_CHAIN_ID])?);
        Ok(())
    })?;
    let mut set_names = Vec::new();
    dump(NFT_MSG_GETSET, NFT_MSG_NEWSET, &[(NFTA_SET_TABLE, &name)], &mut |body| {
        if attr(body, NFTA_SET_TABLE)? != Some(&name[..]) {
            return Ok(());
        }
        let set = attr(body, NFTA_SET_NAME)?.map(str_value).unwrap_or_default();
        set_names.push(set.clone());
        snap.sets.insert(set, KernelSet { def: set_definition(body)?, elements: None });
        Ok(())
    })?;
    for set in set_names.iter().filter(|s| !skip_elements(s)) {
        let mut elements = Vec::new();
        each_element(table, set, &mut |e| {
            elements.push(without(e, &[NFTA_SET_ELEM_EXPIRATION, NFTA_SET_ELEM_EXPR, NFTA_SET_ELEM_EXPRESSIONS])?);
            Ok(())
        })?;
        elements.sort();
        snap.sets.get_mut(set).expect("listed above").elements = Some(elements);
    }
    snap.rules = rules(table)?.unwrap_or_default();
    Ok(Some(snap))
}

/// The rules of table `inet NAME` in chain order, `None` when it does not exist.
pub fn rules(table: &str) -> io::Result<Option<Vec<KernelRule>>> {
    if !table_exists(table)? {
        return Ok(None);
    }
    let name = name_value(table);
    let mut rules = Vec::new();
    dump(NFT_MSG_GETRULE, NFT_MSG_NEWRULE, &[(NFTA_RULE_TABLE, &name)], &mut |body| {
        if attr(body, NFTA_RULE_TABLE)? == Some(&name[..]) {
            rules.push(rule_from(body)?);
        }
        Ok(())
    })?;
    Ok(Some(rules))
}

fn rule_from(body: &[u8]) -> io::Result<KernelRule> {
    let mut rule = KernelRule {
        chain: String::new(),
        comment: None,
        body: Vec::new(),
        exprs: Vec::new(),
        handle: None,
        counter: None,
    };
    for a in attrs(body) {
        let (k, v) = a?;
        match k {
            NFTA_RULE_HANDLE => {
                rule.handle = be_u64(v);
                continue;
            }
            NFTA_RULE_POSITION | NFTA_RULE_ID => continue,
            NFTA_RULE_CHAIN => rule.chain = str_value(v),
            NFTA_RULE_USERDATA => rule.comment = comment(v, NFTNL_UDATA_RULE_COMMENT),
            NFTA_RULE_EXPRESSIONS => {
                let mut exprs = Vec::new();
                for e in attrs(v) {
                    let (ek, ev) = e?;
                    if ek != NFTA_LIST_ELEM {
                        continue;
                    }
                    let name = attr(ev, NFTA_EXPR_NAME)?.map(str_value).unwrap_or_default();
                    // A counter's data is its running count: the same rule either way.
                    let ev = if name == "counter" {
                        let data = attr(ev, NFTA_EXPR_DATA)?.unwrap_or_default();
                        let n = |k| attr(data, k).ok().flatten().and_then(be_u64).unwrap_or(0);
                        let (packets, bytes) = rule.counter.unwrap_or((0, 0));
                        rule.counter = Some((packets + n(NFTA_COUNTER_PACKETS), bytes + n(NFTA_COUNTER_BYTES)));
                        without(ev, &[NFTA_EXPR_DATA])?
                    } else {
                        ev.to_vec()
                    };
                    netlink::push_attr(&mut exprs, NFTA_LIST_ELEM, &ev);
                    rule.exprs.push(name);
                }
                netlink::push_attr(&mut rule.body, k, &exprs);
                continue;
            }
            _ => {}
        }
        netlink::push_attr(&mut rule.body, k, v);
    }
    Ok(rule)
}

/// The comment (of udata type `comment_type`) in libnftnl's user data.
fn comment(udata: &[u8], comment_type: u8) -> Option<String> {
    let mut rest = udata;
    while let [kind, len, tail @ ..] = rest {
        let value = tail.get(..usize::from(*len))?;
        if *kind == comment_type {
            return Some(str_value(value));
        }
        rest = &tail[usize::from(*len)..];
    }
    None
}

/// A set's attributes without handle, id and element count, and without
/// the size nft derives from the elements it was created with (a feed or run-time set
/// created full is the same set as one created empty).
fn set_definition(body: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(body.len());
    for a in attrs(body) {
        let (k, v) = a?;
        match k {
            NFTA_SET_HANDLE | NFTA_SET_ID | NFTA_SET_COUNT => {}
            NFTA_SET_DESC => {
                let desc = without(v, &[NFTA_SET_DESC_SIZE])?;
                if !desc.is_empty() {
                    netlink::push_attr(&mut out, k | netlink_packet_core::NLA_F_NESTED, &desc);
                }
            }
            _ => netlink::push_attr(&mut out, k, v),
        }
    }
    Ok(out)
}

/// The attributes of `body` except those of the kinds in `drop`.
pub(super) fn without(body: &[u8], drop: &[u16]) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(body.len());
    for a in attrs(body) {
        let (k, v) = a?;
        if !drop.contains(&k) {
            netlink::push_attr(&mut out, k, v);
        }
    }
    Ok(out)
}

/// Hands every element (its attributes) of set `set` to `each`.
pub(super) fn each_element(table: &str, set: &str, each: &mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
    let (t, s) = (name_value(table), name_value(set));
    let filter = [(NFTA_SET_ELEM_LIST_TABLE, &t[..]), (NFTA_SET_ELEM_LIST_SET, &s[..])];
    dump(NFT_MSG_GETSETELEM, NFT_MSG_NEWSETELEM, &filter, &mut |body| {
        let Some(list) = attr(body, NFTA_SET_ELEM_LIST_ELEMENTS)? else { return Ok(()) };
        for e in attrs(list) {
            each(e?.1)?;
        }
        Ok(())
    })
}

/// The counter of one element of a merged rule's set, by its policy line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElementCounter {
    /// The element's comment: the id (`file:line`) of the line it came from.
    pub id: String,
    pub packets: u64,
    pub bytes: u64,
}

/// A named counter object (`counter "name"` in the policy) as it counts now.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct NamedCounter {
    pub name: String,
    pub packets: u64,
    pub bytes: u64,
}

/// The named counters of table `inet NAME`, sorted by name (empty when the
/// table does not exist). One dump of the table's counter objects; no set
/// is listed.
pub fn named_counters(table: &str) -> io::Result<Vec<NamedCounter>> {
    let name = name_value(table);
    let kind = NFT_OBJECT_COUNTER.to_be_bytes();
    let mut out = Vec::new();
    dump(NFT_MSG_GETOBJ, NFT_MSG_NEWOBJ, &[(NFTA_OBJ_TABLE, &name), (NFTA_OBJ_TYPE, &kind)], &mut |body| {
        let is_counter = attr(body, NFTA_OBJ_TYPE)?.is_some_and(|t| t == kind);
        if attr(body, NFTA_OBJ_TABLE)? != Some(&name[..]) || !is_counter {
            return Ok(());
        }
        let counter = attr(body, NFTA_OBJ_NAME)?.map(str_value).unwrap_or_default();
        let data = attr(body, NFTA_OBJ_DATA)?.unwrap_or_default();
        let n = |k| attr(data, k).ok().flatten().and_then(be_u64).unwrap_or(0);
        out.push(NamedCounter { name: counter, packets: n(NFTA_COUNTER_PACKETS), bytes: n(NFTA_COUNTER_BYTES) });
        Ok(())
    })?;
    out.sort();
    Ok(out)
}

/// The element counters of every merged rule's set in table `inet NAME`
/// (sets named [`SET_PREFIX`]...; empty when the table does not exist).
pub fn merged_counters(table: &str) -> io::Result<Vec<ElementCounter>> {
    let mut out = Vec::new();
    for set in set_counts(table)?.keys().filter(|s| s.starts_with(SET_PREFIX)) {
        out.extend(element_counters(table, set)?);
    }
    Ok(out)
}

/// The counters of the elements of set `set` that have one and a comment
/// (the interval end elements carry neither).
pub fn element_counters(table: &str, set: &str) -> io::Result<Vec<ElementCounter>> {
    let mut out = Vec::new();
    each_element(table, set, &mut |e| {
        let Some(comment) = attr(e, NFTA_SET_ELEM_USERDATA)?.and_then(|u| comment(u, NFTNL_UDATA_SET_ELEM_COMMENT))
        else {
            return Ok(());
        };
        let mut exprs: Vec<&[u8]> = attr(e, NFTA_SET_ELEM_EXPR)?.into_iter().collect();
        if let Some(list) = attr(e, NFTA_SET_ELEM_EXPRESSIONS)? {
            for item in attrs(list) {
                let (k, v) = item?;
                if k == NFTA_LIST_ELEM {
                    exprs.push(v);
                }
            }
        }
        for ex in exprs {
            if attr(ex, NFTA_EXPR_NAME)?.map(str_value).as_deref() == Some("counter") {
                let data = attr(ex, NFTA_EXPR_DATA)?.unwrap_or_default();
                let n = |k| attr(data, k).ok().flatten().and_then(be_u64).unwrap_or(0);
                out.push(ElementCounter {
                    id: comment.clone(),
                    packets: n(NFTA_COUNTER_PACKETS),
                    bytes: n(NFTA_COUNTER_BYTES),
                });
            }
        }
        Ok(())
    })?;
    Ok(out)
}

/// The entries of an address interval set, as the networks they cover,
/// each with the seconds it has left (rounded up) if it expires.
pub fn set_elements(table: &str, set: &str) -> io::Result<Vec<SetElem>> {
    Ok(timed_elements(table, set)?.into_iter().map(|(e, _)| e).collect())
}

/// The networks of a feed's hash set of prefix length `len` (its elements
/// are the networks' first addresses).
pub fn hash_set_nets(table: &str, set: &str, len: u8) -> io::Result<Vec<IpNet>> {
    let mut out = Vec::new();
    each_element(table, set, &mut |e| {
        let key = attr(e, NFTA_SET_ELEM_KEY)?.map(|k| attr(k, NFTA_DATA_VALUE)).transpose()?.flatten();
        let addr = match key.and_then(to_u128) {
            Some(v) if key.map(<[u8]>::len) == Some(4) => IpAddr::V4(Ipv4Addr::from(v as u32)),
            Some(v) => IpAddr::V6(Ipv6Addr::from(v)),
            None => return Ok(()),
        };
        out.extend(IpNet::new(addr, len).ok());
        Ok(())
    })?;
    Ok(out)
}

/// Like [`set_elements`], with the timeout (seconds) each entry was added with.
pub fn timed_elements(table: &str, set: &str) -> io::Result<Vec<(SetElem, Option<u64>)>> {
    // The kernel keeps an interval as a start element and an end element
    // (flagged, holding the first address after it).
    let mut bounds: Vec<Bound> = Vec::new();
    each_element(table, set, &mut |e| {
        let key = attr(e, NFTA_SET_ELEM_KEY)?.map(|k| attr(k, NFTA_DATA_VALUE)).transpose()?.flatten();
        let Some(key) = key else { return Ok(()) };
        let flags = attr(e, NFTA_SET_ELEM_FLAGS)?.and_then(netlink::be_u32).unwrap_or(0);
        let left = attr(e, NFTA_SET_ELEM_EXPIRATION)?
            .and_then(be_u64)
            .map(|ms| u32::try_from(ms.div_ceil(1000).max(1)).unwrap_or(u32::MAX));
        let timeout = attr(e, NFTA_SET_ELEM_TIMEOUT)?.and_then(be_u64).map(|ms| ms / 1000);
        let comment = attr(e, NFTA_SET_ELEM_USERDATA)?.and_then(|u| comment(u, NFTNL_UDATA_SET_ELEM_COMMENT));
        let end = flags & NFT_SET_ELEM_INTERVAL_END != 0;
        bounds.push(Bound { key: key.to_vec(), end, left, timeout, comment });
        Ok(())
    })?;
    Ok(intervals_to_nets(bounds))
}

/// One element of an interval set: a start or an end.
#[derive(Clone, Debug)]
struct Bound {
    key: Vec<u8>,
    end: bool,
    /// Seconds left, rounded up.
    left: Option<u32>,
    /// Seconds it was added with.
    timeout: Option<u64>,
    /// Its comment (a block entry's reason).
    comment: Option<String>,
}

/// Pairs sorted start and end bounds into networks.
fn intervals_to_nets(mut bounds: Vec<Bound>) -> Vec<(SetElem, Option<u64>)> {
    // An end sorts before a start at the same address (where one interval
    // ends and the next begins).
    bounds.sort_by(|a, b| a.key.cmp(&b.key).then(b.end.cmp(&a.end)));
    let mut out = Vec::new();
    let mut i = 0;
    while i < bounds.len() {
        let start = &bounds[i];
        i += 1;
        if start.end {
            continue;
        }
        let Some(first) = to_u128(&start.key) else { continue };
        let bits = u32::try_from(start.key.len() * 8).unwrap_or(128);
        let max = if bits == 128 { u128::MAX } else { (1u128 << bits) - 1 };
        // Without an end bound the interval runs to the last address.
        let last = match bounds.get(i) {
            Some(end) if end.end => {
                i += 1;
                to_u128(&end.key).map_or(max, |e| e.wrapping_sub(1))
            }
            _ => max,
        };
        for net in range_to_nets(first, last, bits) {
            out.push((SetElem { net, timeout: start.left, comment: start.comment.clone() }, start.timeout));
        }
    }
    out
}

fn to_u128(bytes: &[u8]) -> Option<u128> {
    match bytes.len() {
        4 => Some(u128::from(u32::from_be_bytes(bytes.try_into().ok()?))),
        16 => Some(u128::from_be_bytes(bytes.try_into().ok()?)),
        _ => None,
    }
}

/// The fewest prefixes covering `first..=last` in a `bits`-bit space.
fn range_to_nets(mut first: u128, last: u128, bits: u32) -> Vec<IpNet> {
    let mask = |size: u32| if size >= 128 { u128::MAX } else { (1u128 << size) - 1 };
    let mut out = Vec::new();
    while first <= last {
        // The biggest block aligned at `first` that ends within `last`.
        let mut size = if first == 0 { bits } else { first.trailing_zeros().min(bits) };
        while size > 0 && first + mask(size) > last {
            size -= 1;
        }
        let addr = if bits == 32 {
            IpAddr::V4(Ipv4Addr::from(u32::try_from(first).unwrap_or(0)))
        } else {
            IpAddr::V6(Ipv6Addr::from(first))
        };
        let len = u8::try_from(bits - size).unwrap_or(0);
        out.push(IpNet::new(addr, len).expect("prefix length within the family"));
        let end = first + mask(size);
        if end >= last {
            break;
        }
        first = end + 1;
    }
    out
}

/// One line per object, for a readable difference between two snapshots.
pub fn describe(snap: &Snapshot) -> String {
    use std::fmt::Write;
    let digest = |b: &[u8]| {
        use sha2::{Digest, Sha256};
        Sha256::digest(b).iter().take(4).map(|x| format!("{x:02x}")).collect::<String>()
    };
    let mut out = String::new();
    for (name, def) in &snap.chains {
        let _ = writeln!(out, "chain {name} [{}]", digest(def));
    }
    for (name, set) in &snap.sets {
        let key_len = attr(&set.def, NFTA_SET_KEY_LEN).ok().flatten().and_then(netlink::be_u32).unwrap_or(0);
        let _ = write!(out, "set {name} [{}] key {key_len} bytes", digest(&set.def));
        match &set.elements {
            Some(e) => {
                let _ = writeln!(out, ", {} elements [{}]", e.len(), digest(&e.concat()));
            }
            None => out.push('\n'),
        }
    }
    for r in &snap.rules {
        let _ = writeln!(
            out,
            "rule {} \"{}\": {} [{}]",
            r.chain,
            r.comment.as_deref().unwrap_or(""),
            r.exprs.join(" "),
            digest(&r.body)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::tests::message;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn intervals_become_the_networks_they_cover() {
        let v4 = |s: &str| s.parse::<Ipv4Addr>().unwrap().octets().to_vec();
        let b = |a: &str, end: bool, left: Option<u32>| Bound {
            key: v4(a),
            end,
            left,
            timeout: left.map(|_| 60),
            comment: left.map(|_| "scanner".to_string()),
        };
        let bounds = vec![
            b("192.0.2.8", true, None), // the kernel dumps in no useful order
            b("10.0.1.0", true, None),
            b("10.0.0.0", false, Some(30)),
            b("192.0.2.7", false, None),
            b("198.51.100.0", false, None),
            b("198.51.100.3", true, None),  // not one prefix: .0/31 and .2/32
            b("198.51.100.3", false, None), // starts where the last one ends
            b("198.51.100.4", true, None),
            b("255.255.255.0", false, None), // runs to the end: no end bound
        ];
        let nets: Vec<(IpNet, Option<u32>, Option<u64>)> =
            intervals_to_nets(bounds).into_iter().map(|(e, t)| (e.net, e.timeout, t)).collect();
        assert_eq!(intervals_to_nets(vec![b("10.0.0.0", false, Some(30))])[0].0.comment.as_deref(), Some("scanner"));
        assert_eq!(
            nets,
            vec![
                (net("10.0.0.0/24"), Some(30), Some(60)),
                (net("192.0.2.7/32"), None, None),
                (net("198.51.100.0/31"), None, None),
                (net("198.51.100.2/32"), None, None),
                (net("198.51.100.3/32"), None, None),
                (net("255.255.255.0/24"), None, None),
            ]
        );
        assert_eq!(range_to_nets(0, u128::from(u32::MAX), 32), vec![net("0.0.0.0/0")]);
        assert_eq!(range_to_nets(0, u128::MAX, 128), vec![net("::/0")]);
        let v6 = "2001:db8::".parse::<Ipv6Addr>().unwrap();
        let first = u128::from(v6);
        assert_eq!(range_to_nets(first, first + (1 << 80) - 1, 128), vec![net("2001:db8::/48")]);
    }

    #[test]
    fn rules_drop_handles_and_counter_values_and_keep_comments() {
        let mut udata = vec![NFTNL_UDATA_RULE_COMMENT, 9];
        udata.extend_from_slice(b"p.pf:3:1\0");
        let counter = |packets: u64| {
            let mut data = Vec::new();
            netlink::push_attr(&mut data, 2, &packets.to_be_bytes());
            let mut e = Vec::new();
            netlink::push_attr(&mut e, NFTA_EXPR_NAME, b"counter\0");
            netlink::push_attr(&mut e, NFTA_EXPR_DATA, &data);
            let mut list = Vec::new();
            netlink::push_attr(&mut list, NFTA_LIST_ELEM, &e);
            list
        };
        let body = |handle: u64, packets: u64| {
            let mut b = Vec::new();
            netlink::push_attr(&mut b, NFTA_RULE_TABLE, b"phantomc\0");
            netlink::push_attr(&mut b, NFTA_RULE_CHAIN, b"input\0");
            netlink::push_attr(&mut b, NFTA_RULE_HANDLE, &handle.to_be_bytes());
            netlink::push_attr(&mut b, NFTA_RULE_EXPRESSIONS, &counter(packets));
            netlink::push_attr(&mut b, NFTA_RULE_USERDATA, &udata);
            b
        };
        let a = rule_from(&body(4, 0)).unwrap();
        let counted = rule_from(&body(9, 12345)).unwrap();
        assert_eq!(a, counted, "handle and counter values are not the rule");
        assert_eq!((counted.handle, counted.counter), (Some(9), Some((12345, 0))));
        assert_eq!(a.chain, "input");
        assert_eq!(a.comment.as_deref(), Some("p.pf:3:1"));
        assert_eq!(a.exprs, vec!["counter"]);
        // The same bytes arrive inside a netlink message of a dump.
        let mut msg_body = vec![NFPROTO_INET, 0, 0, 0];
        msg_body.extend(body(1, 1));
        let dgram = message(kind(NFT_MSG_NEWRULE), &msg_body);
        let mut seen = Vec::new();
        netlink::walk_datagram(&dgram, &mut |m| {
            seen.push(rule_from(m.body)?);
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, vec![a]);
    }
}
