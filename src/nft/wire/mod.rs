//! phantomc's table as nftables netlink messages, loaded without nft.
//!
//! `apply` spends most of `nft -f`'s time in nft's own parser and evaluator;
//! the table is already a typed object here, so it is encoded directly into
//! the NFNL_SUBSYS_NFTABLES messages of one batch (the same add-table,
//! delete-table, create-everything transaction as the script). Only the
//! constructs listed in `docs/guide/compile-apply-status.md` are encoded: anything else
//! returns [`Unsupported`] and the caller loads the nft script instead.
//! Attribute numbers are the kernel's `include/uapi/linux/netfilter/nf_tables.h`.

mod exprs;
pub(super) mod sets;

use std::net::IpAddr;

use nftables::schema;
use nftables::types::{NfChainPolicy, NfChainType, NfHook};

use super::kernel::{
    delete_table_messages, message, name_value, table_named, NFTA_CHAIN_NAME, NFTA_CHAIN_TABLE, NFT_MSG_NEWCHAIN,
    NFT_MSG_NEWTABLE, NLM_F_CREATE,
};
use super::tables::{
    NFTA_CHAIN_HOOK, NFTA_CHAIN_POLICY, NFTA_CHAIN_TYPE, NFTA_DATA_VERDICT, NFTA_HOOK_HOOKNUM, NFTA_HOOK_PRIORITY,
    NFTA_VERDICT_CHAIN, NFTA_VERDICT_CODE, NF_ACCEPT, NF_DROP,
};
use super::NftTable;
use crate::netlink::{push_attr, push_nested};
use exprs::{counter_message, rule_messages};
pub use sets::{anonymous_set, Field, KeyType, SetRef};
use sets::{map_messages, set_messages, Batch};

/// A construct the encoder does not cover; the nft script loads the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported(pub String);

fn unsupported<T>(what: impl Into<String>) -> Result<T, Unsupported> {
    Err(Unsupported(what.into()))
}

pub use super::kernel::NFNL_SUBSYS_NFTABLES;

/// The replacement transaction of `table`, as [`NftTable::replace_batch`]
/// builds it for nft: the messages for [`crate::netlink::batch`].
pub fn replace_messages(table: &NftTable) -> Result<Vec<Vec<u8>>, Unsupported> {
    if !table.flowtables.is_empty() {
        return unsupported("flowtables");
    }
    let name = table.name.as_str();
    let mut b = Batch::new(name, delete_table_messages(name));
    b.push(message(NFT_MSG_NEWTABLE, NLM_F_CREATE, &table_named(name)));
    for c in &table.counters {
        b.push(counter_message(name, c));
    }
    // Chains first: a verdict map's elements jump to them.
    for c in &table.chains {
        b.push(chain_message(name, &c.chain)?);
    }
    for set in &table.sets {
        set_messages(&mut b, set)?;
    }
    for map in &table.maps {
        map_messages(&mut b, map)?;
    }
    for c in &table.chains {
        for r in &c.rules {
            rule_messages(&mut b, r)?;
        }
    }
    Ok(b.messages)
}

/// A verdict as nf_tables data (`NFTA_DATA_VERDICT`): a rule's immediate
/// verdict and a verdict map element's value alike.
fn verdict_data(out: &mut Vec<u8>, code: i32, chain: Option<&str>) {
    push_nested(out, NFTA_DATA_VERDICT, |v| {
        push_attr(v, NFTA_VERDICT_CODE, &code.to_be_bytes());
        if let Some(c) = chain {
            push_attr(v, NFTA_VERDICT_CHAIN, &name_value(c));
        }
    });
}

/// An IPv4 (or, with `v6`, IPv6) address's bytes, as a key or a value.
fn address(s: &str, v6: bool) -> Result<Vec<u8>, Unsupported> {
    match s.parse::<IpAddr>() {
        Ok(IpAddr::V4(a)) if !v6 => Ok(a.octets().to_vec()),
        Ok(IpAddr::V6(a)) if v6 => Ok(a.octets().to_vec()),
        _ => unsupported("address value"),
    }
}

fn chain_message(table: &str, c: &schema::Chain<'_>) -> Result<Vec<u8>, Unsupported> {
    let mut a = Vec::new();
    push_attr(&mut a, NFTA_CHAIN_TABLE, &name_value(table));
    push_attr(&mut a, NFTA_CHAIN_NAME, &name_value(&c.name));
    if let Some(hook) = &c.hook {
        if c.dev.is_some() {
            return unsupported("chain device");
        }
        let num: u32 = match hook {
            NfHook::Prerouting => 0,
            NfHook::Input => 1,
            NfHook::Forward => 2,
            NfHook::Output => 3,
            NfHook::Postrouting => 4,
            _ => return unsupported("chain hook"),
        };
        let kind = match c._type {
            Some(NfChainType::Filter) | None => "filter",
            Some(NfChainType::NAT) => "nat",
            Some(NfChainType::Route) => "route",
        };
        let prio = c.prio.unwrap_or(0);
        push_nested(&mut a, NFTA_CHAIN_HOOK, |h| {
            push_attr(h, NFTA_HOOK_HOOKNUM, &num.to_be_bytes());
            push_attr(h, NFTA_HOOK_PRIORITY, &prio.to_be_bytes());
        });
        if let Some(p) = &c.policy {
            let code = match p {
                NfChainPolicy::Accept => NF_ACCEPT,
                NfChainPolicy::Drop => NF_DROP,
            };
            push_attr(&mut a, NFTA_CHAIN_POLICY, &code.to_be_bytes());
        }
        push_attr(&mut a, NFTA_CHAIN_TYPE, &name_value(kind));
    }
    Ok(message(NFT_MSG_NEWCHAIN, NLM_F_CREATE, &a))
}
