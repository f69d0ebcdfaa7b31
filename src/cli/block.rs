//! `block` / `unblock` / `blocked`: change and list run-time sets without
//! reloading the ruleset.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use ipnet::IpNet;

use super::args::PolicyArg;
use super::explain::TextOrJson;
use super::{CmdResult, Failure};
use crate::guard::{Operator, Protected, SSH_PORT};
use crate::ir;
pub use crate::nft::block::parse_duration;
use crate::nft::block::{self, parse_net, Outcome};
use crate::nft::{Nft, NftError};
use crate::serve::LiveRead;

/// Where the addresses come from: arguments, `--file`, or stdin (`-`).
#[derive(clap::Args, Debug)]
pub struct Addresses {
    /// Addresses or networks (IPv4 or IPv6); `-` reads them from stdin.
    #[arg(value_name = "ADDRESS")]
    pub addrs: Vec<String>,
    /// Read addresses from this file, one per line (`#` starts a comment).
    #[arg(long, value_name = "FILE")]
    pub file: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct BlockArgs {
    #[command(flatten)]
    pub addresses: Addresses,
    /// Remove the entries after this long (30s, 10m, 1h, 1d).
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<u32>,
    /// Why: stored with each entry (an nft element comment, at most 128
    /// bytes) and shown by `phantomc blocked`.
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    /// The policy's dynamic set (`set NAME dynamic`).
    #[arg(long, default_value = "blocklist")]
    pub set: String,
    /// phantomc's table.
    #[arg(long, default_value = "phantomc")]
    pub table: String,
    /// The policy, so its `allow-always` networks and passed sources are
    /// protected too (loopback, this host, its gateways and your session
    /// always are).
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Your own connection, `CLIENT:PORT -> SERVER:PORT`; default: $SSH_CONNECTION.
    #[arg(long)]
    pub keep: Option<String>,
    /// Block even a protected address or an over-broad network.
    #[arg(long)]
    pub force: bool,
}

#[derive(clap::Args, Debug)]
pub struct UnblockArgs {
    #[command(flatten)]
    pub addresses: Addresses,
    /// The policy's dynamic set.
    #[arg(long, default_value = "blocklist")]
    pub set: String,
    /// phantomc's table.
    #[arg(long, default_value = "phantomc")]
    pub table: String,
}

#[derive(clap::Args, Debug)]
pub struct BlockedArgs {
    #[command(flatten)]
    pub policy: PolicyArg,
    /// Output format.
    #[arg(long, value_enum, default_value_t = TextOrJson::Text)]
    pub format: TextOrJson,
}

fn sys(e: impl std::fmt::Display) -> Failure {
    Failure::System(e.to_string())
}

impl Addresses {
    /// Every address given, with where it came from for error messages.
    fn read(&self) -> Result<Vec<IpNet>, Failure> {
        let mut texts: Vec<(String, String)> = Vec::new();
        let lines = |texts: &mut Vec<(String, String)>, text: &str, source: &str| {
            for (i, line) in text.lines().enumerate() {
                let word = line.split('#').next().unwrap_or("").trim();
                if !word.is_empty() {
                    texts.push((word.to_string(), format!("{source}:{}", i + 1)));
                }
            }
        };
        for a in &self.addrs {
            if a == "-" {
                let mut text = String::new();
                std::io::stdin().read_to_string(&mut text).map_err(|e| sys(format!("stdin: {e}")))?;
                lines(&mut texts, &text, "stdin");
            } else {
                texts.push((a.clone(), "argument".to_string()));
            }
        }
        if let Some(f) = &self.file {
            let text = std::fs::read_to_string(f).map_err(|e| sys(format!("cannot read {}: {e}", f.display())))?;
            lines(&mut texts, &text, &f.display().to_string());
        }
        if texts.is_empty() {
            return Err(sys("no address given: name addresses, `--file FILE`, or `-` for stdin"));
        }
        let mut nets = Vec::new();
        let mut bad = Vec::new();
        for (text, source) in texts {
            match parse_net(&text) {
                Ok(n) => nets.push(n),
                Err(e) => bad.push(format!("{source}: {e}")),
            }
        }
        if !bad.is_empty() {
            return Err(sys(format!("nothing was changed:\n  {}", bad.join("\n  "))));
        }
        Ok(nets)
    }
}

fn report(outcome: &Outcome, reason: Option<&str>) -> CmdResult {
    for n in &outcome.notes {
        eprintln!("note: {n}");
    }
    for c in &outcome.changes {
        match reason {
            Some(r) => println!("{c} ({r})"),
            None => println!("{c}"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn block(args: &BlockArgs) -> CmdResult {
    let nets = args.addresses.read()?;
    let operator = Operator::discover(args.keep.as_deref(), SSH_PORT).map_err(Failure::System)?;
    let compiled = args.policy.as_deref().map(ir::compile_file).transpose()?;
    if let Some(why) = compiled.as_ref().and_then(|c| c.ruleset.refuse_runtime_entries(&args.set)) {
        return Err(Failure::Policy(format!("refused: {why}; nothing was changed\n")));
    }
    let protected = Protected::gather(compiled.as_ref().map(|c| &c.ruleset), &operator);
    let refusals: Vec<String> =
        nets.iter().filter_map(|&n| protected.check_block(n).err()).map(|r| r.to_string()).collect();
    if !refusals.is_empty() {
        if !args.force {
            return Err(Failure::Policy(format!(
                "refused: {}; nothing was changed (use --force to block anyway)\n",
                refusals.join("; ")
            )));
        }
        eprintln!("warning: {}; blocking anyway (--force)", refusals.join("; "));
    }
    let reason = args.reason.as_deref();
    let outcome =
        block::block_many(&Nft::default(), &args.table, &args.set, &nets, args.timeout, reason).map_err(sys)?;
    report(&outcome, reason)
}

pub fn unblock(args: &UnblockArgs) -> CmdResult {
    let nets = args.addresses.read()?;
    let outcome = block::unblock_many(&Nft::default(), &args.table, &args.set, &nets).map_err(sys)?;
    report(&outcome, None)?;
    // Nothing removed at all is worth a non-zero exit (a typo, a stale list).
    if outcome.changes.is_empty() {
        return Err(sys("nothing was unblocked"));
    }
    Ok(ExitCode::SUCCESS)
}

pub fn blocked(args: &BlockedArgs) -> CmdResult {
    let compiled = crate::ir::compile_file(&args.policy.path())?;
    let table = &compiled.ruleset.table;
    let runtime_sets = LiveRead::runtime_sets(&compiled.ruleset);
    let live = LiveRead::read(table, runtime_sets).map_err(|e| sys(NftError::Kernel(e)))?;
    let threats = crate::serve::threats::threats(&compiled.ruleset, &live, None, 0);
    let loaded = live.rules.is_some();
    match args.format {
        TextOrJson::Json => {
            let doc = serde_json::json!({"table": table, "loaded": loaded, "blocked": threats.blocked});
            println!("{doc}");
        }
        TextOrJson::Text if !loaded => println!("table inet {table} is not loaded"),
        TextOrJson::Text if threats.blocked.is_empty() => println!("nothing blocked in table inet {table}"),
        TextOrJson::Text => {
            println!("{:<40} {:<12} {:>10}  REASON", "ADDRESS", "SET", "EXPIRES");
            for b in &threats.blocked {
                let left = b.expires_in.map_or_else(|| "never".to_string(), human_duration);
                println!("{:<40} {:<12} {left:>10}  {}", b.address, b.set, b.reason.as_deref().unwrap_or("-"));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `3h12m`, `45s`: the time an entry has left.
fn human_duration(secs: u32) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m{s:02}s"),
        (0, _, _) => format!("{h}h{m:02}m"),
        _ => format!("{d}d{h:02}h"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn time_left_reads_naturally() {
        let h = super::human_duration;
        assert_eq!([h(45), h(125), h(3 * 3600 + 720), h(86400 + 7200)], ["45s", "2m05s", "3h12m", "1d02h"]);
    }
}
