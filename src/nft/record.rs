//! The confirm rollback's record of phantomc's table, read and restored over
//! nf_tables netlink without nft: nft 1.0.6 reads every element of a feed
//! set before it lists anything else (about 45 s at 800k entries). The
//! record keeps the table, chains, set definitions, objects and rules as the
//! kernel dumps them, the elements of every set except the feed sets (the
//! policy's own sets and the run-time entries, which are few), and for each
//! feed set only where its entries come from: the feed cache, whose last
//! good copy is what the set was loaded from. Restoring replays all of it
//! in one nf_tables batch, so the previous table comes back atomically.

use std::collections::BTreeMap;
use std::io;
use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::kernel::*;
use super::wire::sets::element_messages;
use crate::netlink::{self, attr, be_u64, str_value};

// include/uapi/linux/netfilter/nf_tables.h
const NFT_MSG_NEWFLOWTABLE: u16 = 22;
const NFT_MSG_GETFLOWTABLE: u16 = 23;
const NFTA_TABLE_USE: u16 = 3;
const NFTA_TABLE_HANDLE: u16 = 4;
const NFTA_TABLE_OWNER: u16 = 7;
const NFTA_OBJ_USE: u16 = 5;
const NFTA_OBJ_HANDLE: u16 = 6;
/// The kernel's name of the set's backend, which a new set may not name.
const NFTA_SET_TYPE: u16 = 19;
const NFTA_FLOWTABLE_TABLE: u16 = 1;
const NFTA_FLOWTABLE_USE: u16 = 4;
const NFTA_FLOWTABLE_HANDLE: u16 = 5;
/// Bytes as they travel in the record: hex.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hex(pub Vec<u8>);

impl Serialize for Hex {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use std::fmt::Write;
        let mut out = String::with_capacity(self.0.len() * 2);
        for b in &self.0 {
            let _ = write!(out, "{b:02x}");
        }
        s.serialize_str(&out)
    }
}

impl<'de> Deserialize<'de> for Hex {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let bad = || serde::de::Error::custom("not hex");
        if text.len() % 2 != 0 {
            return Err(bad());
        }
        (0..text.len())
            .step_by(2)
            .map(|i| text.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()).ok_or_else(bad))
            .collect::<Result<_, _>>()
            .map(Hex)
    }
}

/// Where a feed set's entries may come from, as the caller (which knows
/// the feed cache) would load them: the cache's networks of the set's
/// family, and what may have gone into the set (the cache's networks with
/// or without what the lockout guard cuts out). The candidate whose element
/// count is the kernel's is recorded.
#[derive(Clone, Debug)]
pub struct FeedSource {
    pub feed: String,
    pub cache_dir: PathBuf,
    pub cached: Vec<IpNet>,
    pub candidates: Vec<Vec<IpNet>>,
}

/// A feed set recorded by reference to the feed cache.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedRecord {
    pub set: String,
    pub feed: String,
    pub cache_dir: PathBuf,
    pub v6: bool,
    /// The kernel's element count when recorded (equal to the cache's).
    pub elements: u32,
    /// Cached networks that were not in the set, and networks in the set
    /// that the cache does not hold (pieces of a network the guard cut).
    pub minus: Vec<IpNet>,
    pub plus: Vec<IpNet>,
}

/// phantomc's table as the kernel held it, without its feed entries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableRecord {
    pub table: String,
    pub attrs: Hex,
    pub chains: Vec<Hex>,
    pub sets: Vec<Hex>,
    pub objects: Vec<Hex>,
    pub flowtables: Vec<Hex>,
    pub rules: Vec<Hex>,
    /// Elements of every set but the recorded feed sets, by set, with
    /// their remaining time as read.
    pub elements: BTreeMap<String, Vec<Hex>>,
    pub feeds: Vec<FeedRecord>,
    /// Unix ms of the read: a restore counts run-time entries' time down from it.
    pub read_at_ms: u64,
}

impl TableRecord {
    /// What it holds, for a line of output.
    pub fn summary(&self) -> String {
        let entries: usize = self.elements.values().map(Vec::len).sum();
        let mut out = format!("{} rules, {} sets, {entries} set elements", self.rules.len(), self.sets.len());
        if !self.feeds.is_empty() {
            let feeds: Vec<String> = self.feeds.iter().map(|f| format!("{} ({})", f.set, f.elements)).collect();
            out.push_str(&format!("; feed sets by the feed cache: {}", feeds.join(", ")));
        }
        out
    }
}

/// Reads table `inet NAME` for a later [`restore`]; `None` when it does not
/// exist. A feed set in `feeds` whose kernel count matches its source is
/// recorded by reference; any other set's elements are read.
pub fn read(table: &str, feeds: &BTreeMap<String, FeedSource>, now_ms: u64) -> io::Result<Option<TableRecord>> {
    let name = name_value(table);
    let mut table_attrs = None;
    dump(NFT_MSG_GETTABLE, NFT_MSG_NEWTABLE, &[], &mut |body| {
        if attr(body, NFTA_TABLE_NAME)? == Some(&name[..]) {
            table_attrs = Some(without(body, &[NFTA_TABLE_USE, NFTA_TABLE_HANDLE, NFTA_TABLE_OWNER])?);
        }
        Ok(())
    })?;
    let Some(table_attrs) = table_attrs else { return Ok(None) };
    let objects_of = |get, new, table_attr, drop: &[u16]| -> io::Result<Vec<Hex>> {
        let mut out = Vec::new();
        dump(get, new, &[(table_attr, &name[..])], &mut |body| {
            if attr(body, table_attr)? == Some(&name[..]) {
                out.push(Hex(without(body, drop)?));
            }
            Ok(())
        })?;
        Ok(out)
    };
    let chains = objects_of(
        NFT_MSG_GETCHAIN,
        NFT_MSG_NEWCHAIN,
        NFTA_CHAIN_TABLE,
        &[NFTA_CHAIN_HANDLE, NFTA_CHAIN_USE, NFTA_CHAIN_COUNTERS, NFTA_CHAIN_ID],
    )?;
    let sets = objects_of(
        NFT_MSG_GETSET,
        NFT_MSG_NEWSET,
        NFTA_SET_TABLE,
        &[NFTA_SET_HANDLE, NFTA_SET_COUNT, NFTA_SET_ID, NFTA_SET_TYPE],
    )?;
    let objects = objects_of(NFT_MSG_GETOBJ, NFT_MSG_NEWOBJ, NFTA_OBJ_TABLE, &[NFTA_OBJ_USE, NFTA_OBJ_HANDLE])?;
    let flowtables = objects_of(
        NFT_MSG_GETFLOWTABLE,
        NFT_MSG_NEWFLOWTABLE,
        NFTA_FLOWTABLE_TABLE,
        &[NFTA_FLOWTABLE_USE, NFTA_FLOWTABLE_HANDLE],
    )?;
    let rules = objects_of(
        NFT_MSG_GETRULE,
        NFT_MSG_NEWRULE,
        NFTA_RULE_TABLE,
        &[NFTA_RULE_HANDLE, NFTA_RULE_POSITION, NFTA_RULE_ID],
    )?;
    let counts = set_counts(table)?;
    let mut record = TableRecord {
        table: table.to_string(),
        attrs: Hex(table_attrs),
        chains,
        sets: Vec::new(),
        objects,
        flowtables,
        rules,
        elements: BTreeMap::new(),
        feeds: Vec::new(),
        read_at_ms: now_ms,
    };
    for def in sets {
        let set = attr(&def.0, NFTA_SET_NAME)?.map(str_value).unwrap_or_default();
        let live = counts.get(&set).copied();
        let feed = feeds
            .get(&set)
            .and_then(|f| f.candidates.iter().find(|c| Some(interval_count(c)) == live).map(|loaded| (f, loaded)));
        match feed {
            Some((f, loaded)) => {
                let v6 = attr(&def.0, NFTA_SET_KEY_LEN)?.and_then(netlink::be_u32) == Some(16);
                let (minus, plus) = difference(&f.cached, loaded);
                let elements = live.unwrap_or(0);
                let (feed, cache_dir) = (f.feed.clone(), f.cache_dir.clone());
                record.feeds.push(FeedRecord { set: set.clone(), feed, cache_dir, v6, elements, minus, plus });
            }
            None => {
                let mut elements = Vec::new();
                each_element(table, &set, &mut |e| {
                    elements.push(Hex(e.to_vec()));
                    Ok(())
                })?;
                record.elements.insert(set.clone(), elements);
            }
        }
        record.sets.push(def);
    }
    Ok(Some(record))
}

/// Puts the recorded table back in one transaction, replacing whatever
/// table of that name is there (or, with no record, removes it).
/// `feed_nets` reads a recorded feed's cached networks of its family.
pub fn restore(
    table: &str,
    record: Option<&TableRecord>,
    now_ms: u64,
    feed_nets: &dyn Fn(&FeedRecord) -> Result<Vec<IpNet>, String>,
) -> io::Result<()> {
    let mut batch = Vec::from(delete_table_messages(table));
    if let Some(r) = record {
        batch.push(message(NFT_MSG_NEWTABLE, NLM_F_CREATE, &r.attrs.0));
        batch.extend(r.chains.iter().map(|o| message(NFT_MSG_NEWCHAIN, NLM_F_CREATE, &o.0)));
        // A new set must carry an id, unique in its batch.
        for (id, set) in (1u32..).zip(&r.sets) {
            let mut def = set.0.clone();
            netlink::push_attr(&mut def, NFTA_SET_ID, &id.to_be_bytes());
            batch.push(message(NFT_MSG_NEWSET, NLM_F_CREATE, &def));
        }
        for (m, list) in [(NFT_MSG_NEWOBJ, &r.objects), (NFT_MSG_NEWFLOWTABLE, &r.flowtables)] {
            batch.extend(list.iter().map(|o| message(m, NLM_F_CREATE, &o.0)));
        }
        let elapsed = now_ms.saturating_sub(r.read_at_ms);
        for (set, elements) in &r.elements {
            let mut kept = Vec::with_capacity(elements.len());
            for e in elements {
                if let Some(e) = counted_down(&e.0, elapsed)? {
                    kept.push(e);
                }
            }
            batch.extend(element_messages(table, set, None, &kept));
        }
        for f in &r.feeds {
            let cached = feed_nets(f).map_err(|e| io::Error::other(format!("feed {}: {e}", f.feed)))?;
            let nets = apply_difference(cached, &f.minus, &f.plus);
            let elements = match crate::ir::feed_layout::of_kernel_set(&f.set) {
                Some((_, k)) if !k.is_interval() => hash_elements(&nets),
                _ => interval_elements(&nets),
            };
            batch.extend(element_messages(table, &f.set, None, &elements));
        }
        batch.extend(r.rules.iter().map(|o| message(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, &o.0)));
    }
    netlink::batch(NFNL_SUBSYS_NFTABLES, &batch)
}

/// An element with `elapsed` ms less to live; `None` once it has expired.
/// The kernel dumps an interval's end with the set's timeout attributes,
/// which it refuses on an end: those go.
fn counted_down(element: &[u8], elapsed: u64) -> io::Result<Option<Vec<u8>>> {
    let flags = attr(element, NFTA_SET_ELEM_FLAGS)?.and_then(netlink::be_u32).unwrap_or(0);
    if flags & NFT_SET_ELEM_INTERVAL_END != 0 {
        return without(element, &[NFTA_SET_ELEM_TIMEOUT, NFTA_SET_ELEM_EXPIRATION]).map(Some);
    }
    let Some(left) = attr(element, NFTA_SET_ELEM_EXPIRATION)?.and_then(be_u64) else {
        return Ok(Some(element.to_vec()));
    };
    if left <= elapsed {
        return Ok(None);
    }
    let mut out = without(element, &[NFTA_SET_ELEM_EXPIRATION])?;
    netlink::push_attr(&mut out, NFTA_SET_ELEM_EXPIRATION, &(left - elapsed).to_be_bytes());
    Ok(Some(out))
}

/// The address ranges of `nets` (disjoint networks, as a feed's are), in
/// order: nft loads each network as its own interval, adjacent or not.
fn ranges(nets: &[IpNet]) -> Vec<(bool, u128, u128)> {
    let mut spans: Vec<(bool, u128, u128)> =
        nets.iter().map(|n| (n.addr().is_ipv6(), to_u128(n.network()), to_u128(n.broadcast()))).collect();
    spans.sort_unstable();
    spans
}

fn to_u128(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

fn max_address(v6: bool) -> u128 {
    if v6 {
        u128::MAX
    } else {
        u128::from(u32::MAX)
    }
}

/// The elements nft 1.0.6 loads into a new interval set for `nets`: an end
/// element at address 0 first (unless the first range starts there), then
/// per network a start and a flagged end after it (unless it runs to the
/// last address).
fn interval_elements(nets: &[IpNet]) -> Vec<Vec<u8>> {
    let key = |v: u128, v6: bool| if v6 { v.to_be_bytes().to_vec() } else { (v as u32).to_be_bytes().to_vec() };
    let element = |bytes: Vec<u8>, end: bool| {
        let mut e = Vec::new();
        netlink::push_nested(&mut e, NFTA_SET_ELEM_KEY, |k| netlink::push_attr(k, NFTA_DATA_VALUE, &bytes));
        if end {
            netlink::push_attr(&mut e, NFTA_SET_ELEM_FLAGS, &NFT_SET_ELEM_INTERVAL_END.to_be_bytes());
        }
        e
    };
    let spans = ranges(nets);
    let mut out = Vec::with_capacity(spans.len() * 2 + 1);
    if let Some(&(v6, _, _)) = spans.first().filter(|s| s.1 != 0) {
        out.push(element(key(0, v6), true));
    }
    for (v6, first, last) in spans {
        out.push(element(key(first, v6), false));
        if last != max_address(v6) {
            out.push(element(key(last + 1, v6), true));
        }
    }
    out
}

/// The elements of a feed's hash set holding `nets`: each network's first
/// address (see [`crate::ir::feed_layout`]).
fn hash_elements(nets: &[IpNet]) -> Vec<Vec<u8>> {
    let key = |a: IpAddr| match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    let element = |bytes: Vec<u8>| {
        let mut e = Vec::new();
        netlink::push_nested(&mut e, NFTA_SET_ELEM_KEY, |k| netlink::push_attr(k, NFTA_DATA_VALUE, &bytes));
        e
    };
    nets.iter().map(|n| element(key(n.network()))).collect()
}

/// The kernel's element count (`NFTA_SET_COUNT`) of an interval set
/// holding `nets`: it counts start elements only.
pub fn interval_count(nets: &[IpNet]) -> u32 {
    u32::try_from(nets.len()).unwrap_or(u32::MAX)
}

/// What `cached` lacks of `loaded` and what it has more, both sorted.
fn difference(cached: &[IpNet], loaded: &[IpNet]) -> (Vec<IpNet>, Vec<IpNet>) {
    use std::collections::BTreeSet;
    let (c, l): (BTreeSet<_>, BTreeSet<_>) = (cached.iter().collect(), loaded.iter().collect());
    (c.difference(&l).map(|n| **n).collect(), l.difference(&c).map(|n| **n).collect())
}

fn apply_difference(cached: Vec<IpNet>, minus: &[IpNet], plus: &[IpNet]) -> Vec<IpNet> {
    let mut nets: Vec<IpNet> = cached.into_iter().filter(|n| minus.binary_search(n).is_err()).collect();
    nets.extend_from_slice(plus);
    nets
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn networks_become_intervals_as_nft_loads_them() {
        let n = nets(&["10.0.1.0/24", "10.0.0.0/24", "192.0.2.0/24", "255.255.255.0/24"]);
        let r = ranges(&n);
        assert_eq!((r[0].1, r[0].2), (0x0a00_0000, 0x0a00_00ff), "in address order, adjacent ones apart");
        // The end at 0, three networks with an end each, one that runs to 255.255.255.255 without.
        assert_eq!(interval_elements(&n).len(), 1 + 3 * 2 + 1);
        assert_eq!(interval_count(&n), 4, "the kernel counts starts");
        assert_eq!(interval_elements(&nets(&["0.0.0.0/8"])).len(), 2, "no end at 0 before a range starting there");
        assert!(interval_elements(&[]).is_empty());
    }

    #[test]
    fn a_feed_is_rebuilt_from_the_cache_and_the_recorded_difference() {
        let cached = nets(&["10.0.0.0/8", "192.0.2.0/24"]);
        let loaded = nets(&["10.0.0.0/9", "10.128.0.0/10", "10.192.0.0/11", "192.0.2.0/24"]);
        let (minus, plus) = difference(&cached, &loaded);
        assert_eq!(minus, nets(&["10.0.0.0/8"]));
        let mut back = apply_difference(cached, &minus, &plus);
        back.sort();
        assert_eq!(back, loaded);
    }

    #[test]
    fn records_travel_as_hex_and_element_lists_stay_under_the_limit() {
        let h = Hex(vec![0, 1, 0xab, 0xff]);
        let text = serde_json::to_string(&h).unwrap();
        assert_eq!(text, "\"0001abff\"");
        assert_eq!(serde_json::from_str::<Hex>(&text).unwrap(), h);
        assert!(serde_json::from_str::<Hex>("\"0g\"").is_err());
        let elements = vec![vec![0u8; 1000]; 200];
        let parts = crate::nft::wire::sets::chunks(&elements);
        assert_eq!(parts.iter().map(|c| c.len()).sum::<usize>(), 200);
        assert!(
            parts.iter().all(|c| c.len() * 1004 <= crate::nft::wire::sets::ELEMENTS_PER_MESSAGE_BYTES),
            "{}",
            parts.len()
        );
    }
}
