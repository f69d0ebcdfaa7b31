//! `block` / `unblock`: change a run-time set without reloading the ruleset.

use std::process::ExitCode;

use ipnet::IpNet;

use super::{CmdResult, Failure};
use crate::nft::{self, Nft};

#[derive(clap::Args, Debug)]
pub struct BlockArgs {
    /// Address or network (IPv4 or IPv6).
    #[arg(value_parser = parse_net)]
    pub addr: IpNet,
    /// Remove the entry after this long (30s, 10m, 1h, 1d).
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<u32>,
    /// The policy's dynamic set (`set NAME dynamic`).
    #[arg(long, default_value = "blocklist")]
    pub set: String,
    /// phantomc's table.
    #[arg(long, default_value = "phantomc")]
    pub table: String,
}

#[derive(clap::Args, Debug)]
pub struct UnblockArgs {
    /// Address or network, as it was blocked.
    #[arg(value_parser = parse_net)]
    pub addr: IpNet,
    /// The policy's dynamic set.
    #[arg(long, default_value = "blocklist")]
    pub set: String,
    /// phantomc's table.
    #[arg(long, default_value = "phantomc")]
    pub table: String,
}

/// An address (`192.0.2.7`) or a network (`192.0.2.0/24`).
fn parse_net(s: &str) -> Result<IpNet, String> {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| format!("`{s}` is not an IPv4/IPv6 address or network"))
}

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

fn nft_set(set: &str, addr: &IpNet) -> String {
    format!("{set}_{}", if addr.addr().is_ipv4() { "v4" } else { "v6" })
}

fn change(add: bool, addr: IpNet, timeout: Option<u32>, set: &str, table: &str) -> CmdResult {
    let nft = Nft::default();
    let name = nft_set(set, &addr);
    let exists = nft
        .list_table_json(table)
        .map_err(|e| Failure::System(e.to_string()))?
        .is_some_and(|v| nft::objects(&v).any(|o| o.get("set").and_then(|s| s.get("name")).and_then(|n| n.as_str()) == Some(&name)));
    if !exists {
        return Err(Failure::System(format!(
            "no set {name} in table inet {table}: declare `set {set} dynamic` in the policy and apply it first"
        )));
    }
    let batch = nft::element_batch(add, table, &name, addr.trunc(), timeout);
    nft.load_json(&batch).map_err(|e| Failure::System(e.to_string()))?;
    let verb = if add { "blocked" } else { "unblocked" };
    let until = timeout.map_or_else(String::new, |t| format!(" for {t}s"));
    println!("{verb} {} in set {name} of table inet {table}{until}", addr.trunc());
    Ok(ExitCode::SUCCESS)
}

pub fn block(args: &BlockArgs) -> CmdResult {
    change(true, args.addr, args.timeout, &args.set, &args.table)
}

pub fn unblock(args: &UnblockArgs) -> CmdResult {
    change(false, args.addr, None, &args.set, &args.table)
}
