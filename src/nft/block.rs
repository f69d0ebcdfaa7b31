//! Run-time block entries: adding and removing addresses in a policy's
//! dynamic set without reloading. Shared by `phantomc block`/`unblock` and
//! the REST API.

use ipnet::IpNet;

use super::{element_batch, objects, Nft, NftError};

/// Why a block or unblock did not happen. The live ruleset is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("no set {nft_set} in table inet {table}: declare `set {set} dynamic` in the policy and apply it first")]
    NoSuchSet { set: String, nft_set: String, table: String },
    #[error("set {nft_set} is not a run-time set (only `set NAME dynamic` takes block entries)")]
    NotRuntime { nft_set: String },
    #[error("{net} is not in set {nft_set}")]
    NotBlocked { net: IpNet, nft_set: String },
    #[error(transparent)]
    Nft(#[from] NftError),
}

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

/// An address (`192.0.2.7`) or a network (`192.0.2.0/24`).
pub fn parse_net(s: &str) -> Result<IpNet, String> {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| format!("`{s}` is not an IPv4/IPv6 address or network"))
}

/// `30s`, `10m`, `1h`, `1d` or plain seconds, as seconds (never zero).
pub fn parse_duration(s: &str) -> Result<u32, String> {
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u32 = digits.parse().map_err(|_| format!("`{s}` is not a duration like 30s, 10m, 1h, 1d"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("unknown unit `{unit}` in `{s}` (use s, m, h or d)")),
    };
    n.checked_mul(mult).filter(|&t| t > 0).ok_or_else(|| format!("`{s}` is out of range"))
}

/// The nft half of a policy set that holds `net`: `NAME_v4` or `NAME_v6`.
pub fn nft_set_for(set: &str, net: &IpNet) -> String {
    format!("{set}_{}", if net.addr().is_ipv4() { "v4" } else { "v6" })
}

/// Adds (`block`) or removes `net` in the policy set `set` of the live table.
pub fn change(
    nft: &Nft,
    table: &str,
    set: &str,
    net: IpNet,
    timeout: Option<u32>,
    block: bool,
) -> Result<Change, BlockError> {
    let nft_set = nft_set_for(set, &net);
    let listing = nft.list_table_json(table)?;
    let live_set = listing.as_ref().and_then(|v| {
        objects(v)
            .filter_map(|o| o.get("set"))
            .find(|s| s.get("name").and_then(|n| n.as_str()) == Some(nft_set.as_str()))
            .cloned()
    });
    let Some(live_set) = live_set else {
        return Err(BlockError::NoSuchSet { set: set.to_string(), nft_set, table: table.to_string() });
    };
    // Dynamic sets are the ones with the timeout flag; static and feed sets
    // are owned by the policy and its feeds, and a reload would undo an edit.
    let flags = live_set.get("flags").and_then(|f| f.as_array());
    if !flags.is_some_and(|f| f.iter().any(|x| x.as_str() == Some("timeout"))) {
        return Err(BlockError::NotRuntime { nft_set });
    }
    let net = net.trunc();
    let batch = element_batch(block, table, &nft_set, net, timeout);
    match nft.load_json(&batch) {
        Err(NftError::Refused { stderr }) if !block && stderr.contains("does not exist") => {
            return Err(BlockError::NotBlocked { net, nft_set });
        }
        other => other?,
    }
    Ok(Change { blocked: block, net, nft_set, table: table.to_string(), timeout: timeout.filter(|_| block) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_addresses() {
        assert_eq!(parse_duration("90"), Ok(90));
        assert_eq!(parse_duration("2h"), Ok(7200));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("1w").is_err());
        assert_eq!(parse_net("192.0.2.7"), Ok("192.0.2.7/32".parse().expect("net")));
        assert_eq!(parse_net("2001:db8::/48"), Ok("2001:db8::/48".parse().expect("net")));
        assert!(parse_net("example.org").is_err());
        assert_eq!(nft_set_for("blocklist", &"2001:db8::1/128".parse().expect("net")), "blocklist_v6");
    }
}
