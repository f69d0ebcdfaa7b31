//! Every table of every family, read over nf_tables netlink (on
//! [`crate::netlink`]): chains with their hooks, priorities and policies,
//! rules decoded into their expressions, and the elements of one set when a
//! rule looks a key up in it. This is what other firewalls (ufw, firewalld,
//! Docker, iptables-nft, hand-written nft) hold beside phantomc's table; it
//! lists no set element unless asked for one set.

use std::io;

use serde::Serialize;

use crate::netlink::{self, attr, attrs, be_i32, be_u32, be_u64, str_value};

use super::kernel::{
    kind, name_value, NFTA_CHAIN_NAME, NFTA_CHAIN_TABLE, NFTA_DATA_VALUE, NFTA_EXPR_DATA, NFTA_EXPR_NAME,
    NFTA_LIST_ELEM, NFTA_RULE_CHAIN, NFTA_RULE_EXPRESSIONS, NFTA_RULE_HANDLE, NFTA_RULE_TABLE, NFTA_SET_ELEM_FLAGS,
    NFTA_SET_ELEM_KEY, NFTA_SET_ELEM_LIST_ELEMENTS, NFTA_SET_ELEM_LIST_SET, NFTA_SET_ELEM_LIST_TABLE, NFTA_SET_FLAGS,
    NFTA_SET_NAME, NFTA_SET_TABLE, NFT_MSG_GETCHAIN, NFT_MSG_GETRULE, NFT_MSG_GETSET, NFT_MSG_GETSETELEM,
    NFT_MSG_NEWCHAIN, NFT_MSG_NEWRULE, NFT_MSG_NEWSET, NFT_MSG_NEWSETELEM, NFT_SET_ELEM_INTERVAL_END,
};

// include/uapi/linux/netfilter/nf_tables.h, netfilter.h
const NFPROTO_UNSPEC: u8 = 0;
pub use super::kernel::NFPROTO_INET;
pub const NFPROTO_IPV4: u8 = 2;
const NFPROTO_ARP: u8 = 3;
pub const NFPROTO_NETDEV: u8 = 5;
const NFPROTO_BRIDGE: u8 = 7;
pub const NFPROTO_IPV6: u8 = 10;

pub(super) const NFTA_CHAIN_HOOK: u16 = 4;
pub(super) const NFTA_CHAIN_POLICY: u16 = 5;
pub(super) const NFTA_CHAIN_TYPE: u16 = 7;
pub(super) const NFTA_HOOK_HOOKNUM: u16 = 1;
pub(super) const NFTA_HOOK_PRIORITY: u16 = 2;
pub(super) const NFTA_DATA_VERDICT: u16 = 2;
pub(super) const NFTA_VERDICT_CODE: u16 = 1;
pub(super) const NFTA_VERDICT_CHAIN: u16 = 2;
const NFT_SET_INTERVAL: u32 = 0x4;
const NFT_SET_CONCAT: u32 = 0x80;
pub(super) const NF_DROP: i32 = 0;
pub(super) const NF_ACCEPT: i32 = 1;
const NF_QUEUE: i32 = 3;
const NFT_CONTINUE: i32 = -1;
const NFT_BREAK: i32 = -2;
pub(super) const NFT_JUMP: i32 = -3;
pub(super) const NFT_GOTO: i32 = -4;
pub(super) const NFT_RETURN: i32 = -5;

/// nft's name of a netfilter family.
pub fn family_name(family: u8) -> &'static str {
    match family {
        NFPROTO_INET => "inet",
        NFPROTO_IPV4 => "ip",
        NFPROTO_ARP => "arp",
        NFPROTO_NETDEV => "netdev",
        NFPROTO_BRIDGE => "bridge",
        NFPROTO_IPV6 => "ip6",
        _ => "unknown",
    }
}

/// nft's name of hook number `n` in `family`.
fn hook_name(family: u8, n: u32) -> &'static str {
    match (family, n) {
        (NFPROTO_NETDEV, 0) => "ingress",
        (NFPROTO_NETDEV, 1) => "egress",
        (NFPROTO_ARP, 0) => "input",
        (NFPROTO_ARP, 1) => "output",
        (_, 0) => "prerouting",
        (_, 1) => "input",
        (_, 2) => "forward",
        (_, 3) => "output",
        (_, 4) => "postrouting",
        (_, 5) => "ingress",
        _ => "unknown",
    }
}

/// A chain's place on a hook; regular chains have none.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BaseHook {
    pub hook: &'static str,
    pub priority: i32,
    /// `filter`, `nat` or `route`.
    #[serde(rename = "type")]
    pub chain_type: String,
    /// The chain policy: accept unless it says drop.
    pub policy_drops: bool,
}

/// A verdict of an `immediate` expression.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "verdict", content = "chain")]
pub enum Verdict {
    Accept,
    Drop,
    Queue,
    Continue,
    Break,
    Return,
    Jump(String),
    Goto(String),
    Other(i32),
}

/// One expression of a rule, decoded as far as the evaluator needs;
/// `Other` keeps the name of any other.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expr {
    /// Header bytes into a register: base 0 link, 1 network, 2 transport.
    Payload {
        base: u32,
        offset: u32,
        len: u32,
        dreg: u32,
    },
    /// Writes packet metadata into `dreg` (or, without one, sets it: a statement).
    Meta {
        key: u32,
        dreg: Option<u32>,
    },
    Ct {
        key: u32,
        dreg: Option<u32>,
    },
    Cmp {
        sreg: u32,
        op: u32,
        data: Vec<u8>,
    },
    Range {
        sreg: u32,
        op: u32,
        from: Vec<u8>,
        to: Vec<u8>,
    },
    Bitwise {
        sreg: u32,
        dreg: u32,
        len: u32,
        mask: Vec<u8>,
        xor: Vec<u8>,
        shift: bool,
    },
    Lookup {
        sreg: u32,
        set: String,
        map: bool,
        inverted: bool,
    },
    Immediate {
        dreg: u32,
        data: Vec<u8>,
    },
    Verdict(Verdict),
    /// Drops and answers (ICMP or TCP reset).
    Reject,
    /// An x_tables match or target kept by iptables-nft (`-m addrtype`, `-j REJECT`).
    Xt {
        target: bool,
        name: String,
        /// Its revision and x_tables info blob (NFTA_MATCH_REV, NFTA_MATCH_INFO).
        rev: u32,
        info: Vec<u8>,
    },
    Other(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub handle: u64,
    pub exprs: Vec<Expr>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    pub family: u8,
    pub table: String,
    pub name: String,
    pub base: Option<BaseHook>,
    pub rules: Vec<Rule>,
}

impl Chain {
    pub fn is_in(&self, family: u8, table: &str) -> bool {
        self.family == family && self.table == table
    }
}

/// Every chain of every table in the calling thread's network namespace,
/// each with its rules in order.
pub fn chains() -> io::Result<Vec<Chain>> {
    read_chains(None)
}

/// Like [`chains`], but the rules of table `family` `table` are left
/// undecoded (its chains have none): the other tables next to phantomc's,
/// read without the cost of phantomc's own rules (a third of `apply` at
/// 10,000 rules).
pub fn chains_beside(family: u8, table: &str) -> io::Result<Vec<Chain>> {
    read_chains(Some((family, table)))
}

fn read_chains(skip_rules_of: Option<(u8, &str)>) -> io::Result<Vec<Chain>> {
    let skipped_table = skip_rules_of.map(|(f, t)| (f, name_value(t)));
    let mut chains = Vec::new();
    let request = netlink::dump_request(kind(NFT_MSG_GETCHAIN), NFPROTO_UNSPEC, &[]);
    netlink::dump(&request, &mut |m| {
        if m.kind == kind(NFT_MSG_NEWCHAIN) {
            chains.push(chain_from(m.family, m.body)?);
        }
        Ok(())
    })?;
    let request = netlink::dump_request(kind(NFT_MSG_GETRULE), NFPROTO_UNSPEC, &[]);
    netlink::dump(&request, &mut |m| {
        let (family, body) = (m.family, m.body);
        if m.kind != kind(NFT_MSG_NEWRULE) {
            return Ok(());
        }
        let table_attr = attr(body, NFTA_RULE_TABLE)?;
        if let (Some((f, skipped)), Some(t)) = (&skipped_table, table_attr) {
            if family == *f && t == &skipped[..] {
                return Ok(());
            }
        }
        let table = table_attr.map(str_value).unwrap_or_default();
        let chain = attr(body, NFTA_RULE_CHAIN)?.map(str_value).unwrap_or_default();
        let rule = rule_from(body)?;
        if let Some(c) = chains.iter_mut().find(|c| c.is_in(family, &table) && c.name == chain) {
            c.rules.push(rule);
        }
        Ok(())
    })?;
    Ok(chains)
}

fn chain_from(family: u8, body: &[u8]) -> io::Result<Chain> {
    let text = |k| -> io::Result<String> { Ok(attr(body, k)?.map(str_value).unwrap_or_default()) };
    let base = match attr(body, NFTA_CHAIN_HOOK)? {
        Some(hook) => Some(BaseHook {
            hook: hook_name(family, attr(hook, NFTA_HOOK_HOOKNUM)?.and_then(be_u32).unwrap_or(u32::MAX)),
            priority: attr(hook, NFTA_HOOK_PRIORITY)?.and_then(be_i32).unwrap_or(0),
            chain_type: text(NFTA_CHAIN_TYPE)?,
            policy_drops: attr(body, NFTA_CHAIN_POLICY)?.and_then(be_i32) == Some(NF_DROP),
        }),
        None => None,
    };
    Ok(Chain { family, table: text(NFTA_CHAIN_TABLE)?, name: text(NFTA_CHAIN_NAME)?, base, rules: Vec::new() })
}

fn rule_from(body: &[u8]) -> io::Result<Rule> {
    let handle = attr(body, NFTA_RULE_HANDLE)?.and_then(be_u64).unwrap_or(0);
    let mut exprs = Vec::new();
    if let Some(list) = attr(body, NFTA_RULE_EXPRESSIONS)? {
        for e in attrs(list) {
            let (k, v) = e?;
            if k == NFTA_LIST_ELEM {
                exprs.push(expr_from(v)?);
            }
        }
    }
    Ok(Rule { handle, exprs })
}

/// The value inside a nested `NFTA_DATA_VALUE`.
fn data_value(v: Option<&[u8]>) -> io::Result<Vec<u8>> {
    Ok(match v {
        Some(v) => attr(v, NFTA_DATA_VALUE)?.unwrap_or_default().to_vec(),
        None => Vec::new(),
    })
}

fn expr_from(e: &[u8]) -> io::Result<Expr> {
    let name = attr(e, NFTA_EXPR_NAME)?.map(str_value).unwrap_or_default();
    let data = attr(e, NFTA_EXPR_DATA)?.unwrap_or_default();
    let u32_of = |k| -> io::Result<Option<u32>> { Ok(attr(data, k)?.and_then(be_u32)) };
    let num = |k| -> io::Result<u32> { Ok(u32_of(k)?.unwrap_or(0)) };
    Ok(match name.as_str() {
        "payload" if u32_of(1)?.is_some() => {
            Expr::Payload { dreg: num(1)?, base: num(2)?, offset: num(3)?, len: num(4)? }
        }
        "meta" => Expr::Meta { dreg: u32_of(1)?, key: num(2)? },
        "ct" => Expr::Ct { dreg: u32_of(1)?, key: num(2)? },
        "cmp" => Expr::Cmp { sreg: num(1)?, op: num(2)?, data: data_value(attr(data, 3)?)? },
        "range" => Expr::Range {
            sreg: num(1)?,
            op: num(2)?,
            from: data_value(attr(data, 3)?)?,
            to: data_value(attr(data, 4)?)?,
        },
        "bitwise" => Expr::Bitwise {
            sreg: num(1)?,
            dreg: num(2)?,
            len: num(3)?,
            mask: data_value(attr(data, 4)?)?,
            xor: data_value(attr(data, 5)?)?,
            shift: num(6)? != 0,
        },
        "lookup" => Expr::Lookup {
            set: attr(data, 1)?.map(str_value).unwrap_or_default(),
            sreg: num(2)?,
            map: u32_of(3)?.is_some(),
            inverted: num(5)? & 1 != 0,
        },
        "immediate" => {
            let dreg = num(1)?;
            let value = attr(data, 2)?.unwrap_or_default();
            match attr(value, NFTA_DATA_VERDICT)? {
                Some(v) if dreg == 0 => Expr::Verdict(verdict_from(v)?),
                _ => Expr::Immediate { dreg, data: attr(value, NFTA_DATA_VALUE)?.unwrap_or_default().to_vec() },
            }
        }
        "reject" => Expr::Reject,
        "match" | "target" => Expr::Xt {
            target: name == "target",
            name: attr(data, 1)?.map(str_value).unwrap_or_default(),
            rev: num(2)?,
            info: attr(data, 3)?.unwrap_or_default().to_vec(),
        },
        _ => Expr::Other(name),
    })
}

fn verdict_from(v: &[u8]) -> io::Result<Verdict> {
    let code = attr(v, NFTA_VERDICT_CODE)?.and_then(be_i32).unwrap_or(NFT_CONTINUE);
    let chain = attr(v, NFTA_VERDICT_CHAIN)?.map(str_value).unwrap_or_default();
    Ok(match code {
        NF_ACCEPT => Verdict::Accept,
        NF_DROP => Verdict::Drop,
        NF_QUEUE => Verdict::Queue,
        NFT_CONTINUE => Verdict::Continue,
        NFT_BREAK => Verdict::Break,
        NFT_RETURN => Verdict::Return,
        NFT_JUMP => Verdict::Jump(chain),
        NFT_GOTO => Verdict::Goto(chain),
        other => Verdict::Other(other),
    })
}

/// The keys of one set, for a lookup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SetKeys {
    /// Exact keys.
    Exact(Vec<Vec<u8>>),
    /// Inclusive `(first, last)` ranges of keys, compared as big-endian bytes.
    Intervals(Vec<(Vec<u8>, Vec<u8>)>),
    /// Concatenated intervals: not evaluated.
    Concatenated,
}

impl SetKeys {
    pub fn contains(&self, key: &[u8]) -> Option<bool> {
        match self {
            SetKeys::Exact(keys) => Some(keys.iter().any(|k| k.as_slice() == key)),
            SetKeys::Intervals(ranges) => {
                Some(ranges.iter().any(|(lo, hi)| lo.as_slice() <= key && key <= hi.as_slice()))
            }
            SetKeys::Concatenated => None,
        }
    }
}

/// The keys of set `set` of table `family table`; `None` when there is no such set.
pub fn set_keys(family: u8, table: &str, set: &str) -> io::Result<Option<SetKeys>> {
    let (t, s) = (name_value(table), name_value(set));
    let mut flags = None;
    let request = netlink::dump_request(kind(NFT_MSG_GETSET), family, &[(NFTA_SET_TABLE, &t)]);
    netlink::dump(&request, &mut |m| {
        let body = m.body;
        if m.kind == kind(NFT_MSG_NEWSET)
            && m.family == family
            && attr(body, NFTA_SET_TABLE)? == Some(&t[..])
            && attr(body, NFTA_SET_NAME)? == Some(&s[..])
        {
            flags = Some(attr(body, NFTA_SET_FLAGS)?.and_then(be_u32).unwrap_or(0));
        }
        Ok(())
    })?;
    let Some(flags) = flags else { return Ok(None) };
    if flags & NFT_SET_CONCAT != 0 && flags & NFT_SET_INTERVAL != 0 {
        return Ok(Some(SetKeys::Concatenated));
    }
    let mut bounds: Vec<(Vec<u8>, bool)> = Vec::new();
    let filter = [(NFTA_SET_ELEM_LIST_TABLE, &t[..]), (NFTA_SET_ELEM_LIST_SET, &s[..])];
    let request = netlink::dump_request(kind(NFT_MSG_GETSETELEM), family, &filter);
    netlink::dump(&request, &mut |m| {
        if m.kind != kind(NFT_MSG_NEWSETELEM) {
            return Ok(());
        }
        let Some(list) = attr(m.body, NFTA_SET_ELEM_LIST_ELEMENTS)? else { return Ok(()) };
        for e in attrs(list) {
            let e = e?.1;
            let key = data_value(attr(e, NFTA_SET_ELEM_KEY)?)?;
            let end = attr(e, NFTA_SET_ELEM_FLAGS)?.and_then(be_u32).unwrap_or(0) & NFT_SET_ELEM_INTERVAL_END != 0;
            bounds.push((key, end));
        }
        Ok(())
    })?;
    if flags & NFT_SET_INTERVAL == 0 {
        return Ok(Some(SetKeys::Exact(bounds.into_iter().map(|(k, _)| k).collect())));
    }
    Ok(Some(SetKeys::Intervals(pair_bounds(bounds))))
}

/// Pairs interval start and end elements (an end holds the first key after
/// its interval) into inclusive ranges.
fn pair_bounds(mut bounds: Vec<(Vec<u8>, bool)>) -> Vec<(Vec<u8>, Vec<u8>)> {
    // An end sorts before a start at the same key (where one interval ends
    // and the next begins).
    bounds.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    let mut out = Vec::new();
    let mut i = 0;
    while i < bounds.len() {
        let (start, is_end) = &bounds[i];
        i += 1;
        if *is_end {
            continue;
        }
        let last = match bounds.get(i) {
            Some((end, true)) => {
                i += 1;
                decrement(end)
            }
            _ => vec![0xff; start.len()],
        };
        out.push((start.clone(), last));
    }
    out
}

/// `key - 1` as a big-endian number.
fn decrement(key: &[u8]) -> Vec<u8> {
    let mut out = key.to_vec();
    for b in out.iter_mut().rev() {
        let (v, borrow) = b.overflowing_sub(1);
        *b = v;
        if !borrow {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(kind: u16, inner: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut out = Vec::new();
        netlink::push_nested(&mut out, kind, inner);
        out
    }

    fn expr(name: &str, data: &[u8]) -> Vec<u8> {
        let mut e = Vec::new();
        netlink::push_attr(&mut e, NFTA_EXPR_NAME, &name_value(name));
        netlink::push_attr(&mut e, NFTA_EXPR_DATA, data);
        e
    }

    #[test]
    fn rules_decode_into_expressions_and_verdicts() {
        let mut cmp = Vec::new();
        netlink::push_attr(&mut cmp, 1, &1u32.to_be_bytes());
        netlink::push_attr(&mut cmp, 2, &0u32.to_be_bytes());
        cmp.extend(nested(3, |v| netlink::push_attr(v, NFTA_DATA_VALUE, &80u16.to_be_bytes())));
        let mut jump = Vec::new();
        netlink::push_attr(&mut jump, 1, &0u32.to_be_bytes());
        jump.extend(nested(2, |v| {
            netlink::push_nested(v, NFTA_DATA_VERDICT, |x| {
                netlink::push_attr(x, NFTA_VERDICT_CODE, &NFT_JUMP.to_be_bytes());
                netlink::push_attr(x, NFTA_VERDICT_CHAIN, b"ufw-user-input\0");
            })
        }));
        let mut xt = Vec::new();
        netlink::push_attr(&mut xt, 1, b"addrtype\0");
        let mut list = Vec::new();
        for e in [expr("cmp", &cmp), expr("match", &xt), expr("counter", &[]), expr("immediate", &jump)] {
            netlink::push_attr(&mut list, NFTA_LIST_ELEM, &e);
        }
        let mut body = Vec::new();
        netlink::push_attr(&mut body, NFTA_RULE_HANDLE, &7u64.to_be_bytes());
        netlink::push_attr(&mut body, NFTA_RULE_EXPRESSIONS, &list);
        let rule = rule_from(&body).unwrap();
        assert_eq!(rule.handle, 7);
        assert_eq!(
            rule.exprs,
            vec![
                Expr::Cmp { sreg: 1, op: 0, data: vec![0, 80] },
                Expr::Xt { target: false, name: "addrtype".into(), rev: 0, info: vec![] },
                Expr::Other("counter".into()),
                Expr::Verdict(Verdict::Jump("ufw-user-input".into())),
            ]
        );
    }

    #[test]
    fn interval_bounds_become_inclusive_ranges() {
        let b = |k: &[u8], end| (k.to_vec(), end);
        let ranges = pair_bounds(vec![b(&[0, 23], true), b(&[0, 22], false), b(&[1, 0], false)]);
        assert_eq!(ranges, vec![(vec![0, 22], vec![0, 22]), (vec![1, 0], vec![0xff, 0xff])]);
        let keys = SetKeys::Intervals(ranges);
        assert_eq!(keys.contains(&[0, 22]), Some(true));
        assert_eq!(keys.contains(&[0, 23]), Some(false));
        assert_eq!(keys.contains(&[2, 0]), Some(true));
        assert_eq!(decrement(&[1, 0]), vec![0, 0xff]);
    }
}
