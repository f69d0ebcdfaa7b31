//! `block` / `unblock`: change a run-time set without reloading the ruleset.

use std::process::ExitCode;

use ipnet::IpNet;

use super::{CmdResult, Failure};
pub use crate::nft::block::parse_duration;
use crate::nft::block::{self, parse_net};
use crate::nft::Nft;

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

fn change(add: bool, addr: IpNet, timeout: Option<u32>, set: &str, table: &str) -> CmdResult {
    let done =
        block::change(&Nft::default(), table, set, addr, timeout, add).map_err(|e| Failure::System(e.to_string()))?;
    println!("{done}");
    Ok(ExitCode::SUCCESS)
}

pub fn block(args: &BlockArgs) -> CmdResult {
    change(true, args.addr, args.timeout, &args.set, &args.table)
}

pub fn unblock(args: &UnblockArgs) -> CmdResult {
    change(false, args.addr, None, &args.set, &args.table)
}
