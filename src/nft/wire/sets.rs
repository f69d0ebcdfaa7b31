//! Sets, maps and their elements as nftables netlink messages.

use nftables::schema::{self, SetFlag, SetType, SetTypeValue};

use super::super::kernel::{
    message, name_value, NFTA_SET_FLAGS, NFTA_SET_ID, NFTA_SET_KEY_LEN, NFTA_SET_NAME, NFTA_SET_TABLE, NFT_MSG_NEWSET,
    NFT_SET_TIMEOUT, NLM_F_CREATE,
};
use super::{unsupported, Unsupported};
use crate::netlink::push_attr;

/// nft's datatype number and key length of a set type.
fn set_type(t: &SetType) -> Result<(u32, u32), Unsupported> {
    Ok(match t {
        SetType::Ipv4Addr => (7, 4),
        SetType::Ipv6Addr => (8, 16),
        SetType::InetService => (13, 2),
        other => return unsupported(format!("set type {other:?}")),
    })
}

pub(super) fn set_message(table: &str, s: &schema::Set<'_>) -> Result<Vec<u8>, Unsupported> {
    if s.elem.as_ref().is_some_and(|e| !e.is_empty()) {
        return unsupported("set elements");
    }
    if s.comment.is_some() || s.size.is_some() || s.policy.is_some() || s.gc_interval.is_some() {
        return unsupported("set options");
    }
    let SetTypeValue::Single(t) = &s.set_type else { return unsupported("concatenated set") };
    let (dtype, len) = set_type(t)?;
    let mut flags = 0u32;
    for f in s.flags.iter().flatten() {
        flags |= match f {
            SetFlag::Constant => 2,
            SetFlag::Interval => 4,
            SetFlag::Timeout => NFT_SET_TIMEOUT,
            SetFlag::Dynamic => 0x20,
        };
    }
    let mut a = Vec::new();
    push_attr(&mut a, NFTA_SET_TABLE, &name_value(table));
    push_attr(&mut a, NFTA_SET_NAME, &name_value(&s.name));
    push_attr(&mut a, NFTA_SET_FLAGS, &flags.to_be_bytes());
    push_attr(&mut a, 4, &dtype.to_be_bytes()); // NFTA_SET_KEY_TYPE
    push_attr(&mut a, NFTA_SET_KEY_LEN, &len.to_be_bytes());
    push_attr(&mut a, NFTA_SET_ID, &1u32.to_be_bytes());
    if let Some(t) = s.timeout {
        push_attr(&mut a, 11, &(u64::from(t) * 1000).to_be_bytes()); // NFTA_SET_TIMEOUT (ms)
    }
    Ok(message(NFT_MSG_NEWSET, NLM_F_CREATE, &a))
}
