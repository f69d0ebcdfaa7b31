//! Run-time block entries: adding and removing addresses in a policy's
//! dynamic set without reloading. Shared by `phantomc block`/`unblock` and
//! the REST API.

use ipnet::IpNet;

use super::{elements_batch, kernel, Nft, NftError, SetElem};

/// Why a block or unblock did not happen. The live ruleset is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("no set {nft_set} in table inet {table}: declare `set {set} dynamic` in the policy and apply it first")]
    NoSuchSet { set: String, nft_set: String, table: String },
    #[error("set {nft_set} is not a run-time set (only `set NAME dynamic` takes block entries)")]
    NotRuntime { nft_set: String },
    #[error("{net} is not in set {nft_set}")]
    NotBlocked { net: IpNet, nft_set: String },
    #[error("a reason is at most {MAX_REASON} bytes (nft element comments), this one is {0}")]
    LongReason(usize),
    #[error(transparent)]
    Nft(#[from] NftError),
}

/// nft's limit on element comments (NFT_USERDATA_MAXLEN).
pub const MAX_REASON: usize = 128;

/// A change that was made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub blocked: bool,
    /// The network as stored (host bits cleared).
    pub net: IpNet,
    pub nft_set: String,
    pub table: String,
    pub timeout: Option<u32>,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verb = if self.blocked { "blocked" } else { "unblocked" };
        write!(f, "{verb} {} in set {} of table inet {}", self.net, self.nft_set, self.table)?;
        match self.timeout {
            Some(t) => write!(f, " for {t}s"),
            None => Ok(()),
        }
    }
}

/// What a block or unblock of several entries did, besides its changes:
/// said in phantomc's words, never nft's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Note {
    /// `10.1.2.3/24` was given: the network `10.1.2.0/24` is what is stored.
    HostBits { given: IpNet, stored: IpNet },
    /// Already blocked by an entry that covers it: nothing to do.
    AlreadyBlocked { net: IpNet, by: IpNet },
    /// The new entry covers existing ones, which it replaces.
    Replaces { net: IpNet, covered: Vec<IpNet> },
    /// Unblock of an address that is not an entry.
    NotBlocked { net: IpNet },
    /// Unblock of a part of a blocked network.
    InsideBlocked { net: IpNet, by: IpNet },
}

impl std::fmt::Display for Note {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Note::HostBits { given, stored } => {
                write!(f, "{given} has host bits set: blocking the whole network {stored}")
            }
            Note::AlreadyBlocked { net, by } if net == by => write!(f, "{net} is already blocked"),
            Note::AlreadyBlocked { net, by } => write!(f, "{net} is already blocked as part of {by}"),
            Note::Replaces { net, covered } => {
                let list: Vec<String> = covered.iter().map(IpNet::to_string).collect();
                write!(f, "{net} replaces the entries it covers: {}", list.join(", "))
            }
            Note::NotBlocked { net } => write!(f, "{net} is not blocked"),
            Note::InsideBlocked { net, by } => {
                write!(f, "{net} is blocked as part of {by}: unblock {by} (and block the rest again) to free it")
            }
        }
    }
}

/// The outcome of [`block_many`] / [`unblock_many`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub changes: Vec<Change>,
    pub notes: Vec<Note>,
}

/// An address (`192.0.2.7`) or a network (`192.0.2.0/24`).
pub fn parse_net(s: &str) -> Result<IpNet, String> {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| format!("`{s}` is not an IPv4/IPv6 address or network"))
}

/// `30s`, `10m`, `1h`, `1d` or plain seconds, as seconds (never zero, and
/// within nft's 32-bit timeouts). The syntax is [`crate::policy::duration`]'s.
pub fn parse_duration(s: &str) -> Result<u32, String> {
    use crate::policy::duration::{seconds, DurationError};
    match seconds(s) {
        Ok(secs) => u32::try_from(secs).ok().filter(|&t| t > 0).ok_or_else(|| format!("`{s}` is out of range")),
        Err(DurationError::NoNumber) => Err(format!("`{s}` is not a duration like 30s, 10m, 1h, 1d")),
        Err(DurationError::UnknownUnit(unit)) => Err(format!("unknown unit `{unit}` in `{s}` (use s, m, h or d)")),
        Err(DurationError::TooLarge) => Err(format!("`{s}` is out of range")),
    }
}

/// The nft half of a policy set that holds `net`: `NAME_v4` or `NAME_v6`.
pub fn nft_set_for(set: &str, net: &IpNet) -> String {
    format!("{set}_{}", if net.addr().is_ipv4() { "v4" } else { "v6" })
}

/// Checks that `set` is a run-time set of the live table and returns the
/// entries of its halves.
fn live_entries(table: &str, set: &str) -> Result<Vec<(String, SetElem)>, BlockError> {
    let mut out = Vec::new();
    let mut found = false;
    for nft_set in [format!("{set}_v4"), format!("{set}_v6")] {
        // Read over netlink: nft would list every feed set element first.
        let Some(flags) = kernel::set_flags(table, &nft_set).map_err(NftError::Kernel)? else { continue };
        found = true;
        // Dynamic sets are the ones with the timeout flag; static and feed sets
        // are owned by the policy and its feeds, and a reload would undo an edit.
        if flags & kernel::NFT_SET_TIMEOUT == 0 {
            return Err(BlockError::NotRuntime { nft_set });
        }
        let elems = kernel::set_elements(table, &nft_set).map_err(NftError::Kernel)?;
        out.extend(elems.into_iter().map(|e| (nft_set.clone(), e)));
    }
    if !found {
        let nft_set = format!("{set}_v4");
        return Err(BlockError::NoSuchSet { set: set.to_string(), nft_set, table: table.to_string() });
    }
    Ok(out)
}

/// Blocks every network of `nets` in the policy set `set`, in one
/// transaction. Host bits are cleared (and noted); an entry already covered
/// by a live or earlier one is noted and skipped; a network that covers live
/// entries replaces them (noted), so nft never sees an overlap.
pub fn block_many(
    nft: &Nft,
    table: &str,
    set: &str,
    nets: &[IpNet],
    timeout: Option<u32>,
    reason: Option<&str>,
) -> Result<Outcome, BlockError> {
    if let Some(r) = reason.filter(|r| r.len() > MAX_REASON) {
        return Err(BlockError::LongReason(r.len()));
    }
    let live = live_entries(table, set)?;
    let mut out = Outcome::default();
    let mut wanted: Vec<IpNet> = Vec::new();
    for &given in nets {
        let net = given.trunc();
        if net != given {
            out.notes.push(Note::HostBits { given, stored: net });
        }
        wanted.push(net);
    }
    // Widest first, so a network given with its own addresses absorbs them.
    let mut order: Vec<IpNet> = wanted.clone();
    order.sort_by_key(|n| (n.prefix_len(), *n));
    order.dedup();
    let mut kept: Vec<IpNet> = Vec::new();
    for net in order {
        let by = live.iter().map(|(_, e)| e.net).chain(kept.iter().copied()).find(|b| b.contains(&net));
        match by {
            Some(by) => out.notes.push(Note::AlreadyBlocked { net, by }),
            None => kept.push(net),
        }
    }
    let mut deletes = Vec::new();
    let mut adds = Vec::new();
    for net in &kept {
        let covered: Vec<&(String, SetElem)> = live.iter().filter(|(_, e)| net.contains(&e.net)).collect();
        if !covered.is_empty() {
            out.notes.push(Note::Replaces { net: *net, covered: covered.iter().map(|(_, e)| e.net).collect() });
            deletes.extend(covered.iter().map(|(s, e)| (s.clone(), e.net)));
        }
        let nft_set = nft_set_for(set, net);
        let elem = SetElem { net: *net, timeout, comment: reason.map(str::to_string) };
        adds.push((nft_set.clone(), elem));
        out.changes.push(Change { blocked: true, net: *net, nft_set, table: table.to_string(), timeout });
    }
    if !adds.is_empty() {
        nft.load_json(&elements_batch(table, &deletes, &adds))?;
    }
    // Report in the order given.
    out.changes.sort_by_key(|c| wanted.iter().position(|w| *w == c.net));
    Ok(out)
}

/// Removes every network of `nets` from the policy set `set`, in one
/// transaction; ones that are not entries are noted, not errors.
pub fn unblock_many(nft: &Nft, table: &str, set: &str, nets: &[IpNet]) -> Result<Outcome, BlockError> {
    let live = live_entries(table, set)?;
    let mut out = Outcome::default();
    let mut deletes: Vec<(String, IpNet)> = Vec::new();
    for &given in nets {
        let net = given.trunc();
        if deletes.iter().any(|(_, n)| *n == net) {
            continue;
        }
        match live.iter().find(|(_, e)| e.net == net) {
            Some((nft_set, _)) => {
                deletes.push((nft_set.clone(), net));
                out.changes.push(Change {
                    blocked: false,
                    net,
                    nft_set: nft_set.clone(),
                    table: table.to_string(),
                    timeout: None,
                });
            }
            None => match live.iter().find(|(_, e)| e.net.contains(&net)) {
                Some((_, e)) => out.notes.push(Note::InsideBlocked { net, by: e.net }),
                None => out.notes.push(Note::NotBlocked { net }),
            },
        }
    }
    if !deletes.is_empty() {
        nft.load_json(&elements_batch(table, &deletes, &[]))?;
    }
    Ok(out)
}

/// Adds (`block`) or removes `net` in the policy set `set` of the live table
/// (the REST API's one-address form).
pub fn change(
    nft: &Nft,
    table: &str,
    set: &str,
    net: IpNet,
    timeout: Option<u32>,
    block: bool,
) -> Result<Change, BlockError> {
    let outcome = if block {
        block_many(nft, table, set, &[net], timeout, None)?
    } else {
        unblock_many(nft, table, set, &[net])?
    };
    match outcome.changes.into_iter().next() {
        Some(c) => Ok(c),
        // Blocking what is already blocked changes nothing, and that is fine.
        None if block => Ok(Change {
            blocked: true,
            net: net.trunc(),
            nft_set: nft_set_for(set, &net),
            table: table.to_string(),
            timeout,
        }),
        None => Err(BlockError::NotBlocked { net: net.trunc(), nft_set: nft_set_for(set, &net) }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_addresses() {
        assert_eq!(parse_duration("90"), Ok(90));
        assert_eq!(parse_duration("2h"), Ok(7200));
        assert_eq!(parse_duration("10m"), Ok(600));
        assert_eq!(parse_duration("1d"), Ok(86_400));
        assert_eq!(parse_duration("45s"), Ok(45));
        assert_eq!(parse_duration("4294967295"), Ok(u32::MAX));
        assert_eq!(parse_duration("0s"), Err("`0s` is out of range".into()));
        assert_eq!(parse_duration("4294967296"), Err("`4294967296` is out of range".into()));
        assert_eq!(parse_duration("1w"), Err("unknown unit `w` in `1w` (use s, m, h or d)".into()));
        assert_eq!(parse_duration("soon"), Err("`soon` is not a duration like 30s, 10m, 1h, 1d".into()));
        assert_eq!(parse_net("192.0.2.7"), Ok("192.0.2.7/32".parse().expect("net")));
        assert_eq!(parse_net("2001:db8::/48"), Ok("2001:db8::/48".parse().expect("net")));
        assert!(parse_net("example.org").is_err());
        assert_eq!(nft_set_for("blocklist", &"2001:db8::1/128".parse().expect("net")), "blocklist_v6");
    }
}
