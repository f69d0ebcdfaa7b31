use std::path::PathBuf;
use std::process::ExitCode;

use super::args::resolve_policy;
use super::{CmdResult, Failure};
use crate::analyze::{explain, live, packet};
use crate::ir;
use crate::ir::eval::SetContents;
use crate::nft::{self, tables};

#[derive(clap::Args, Debug)]
pub struct ExplainArgs {
    /// `[POLICY] PACKET`: the policy file [default: $PHANTOMC_POLICY, else
    /// /etc/phantomc/policy.pf], then the packet, e.g.
    /// "tcp 203.0.113.5:51000 -> 10.0.0.10:22 in eth0 new".
    #[arg(value_name = "[POLICY] PACKET", num_args = 1..=2, required = true)]
    pub args: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = TextOrJson::Text)]
    pub format: TextOrJson,
    /// Follow the packet through every base chain of every table loaded in
    /// the kernel on its hook path (other firewalls too), not phantomc's alone;
    /// uses the live contents of run-time and feed sets. Needs root.
    #[arg(long)]
    pub live: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextOrJson {
    Text,
    Json,
}

pub fn run(args: &ExplainArgs) -> CmdResult {
    let (policy, packet_text) = match args.args.as_slice() {
        [packet] => (resolve_policy(None), packet),
        [policy, packet] => (PathBuf::from(policy), packet),
        _ => return Err(Failure::System("usage: phantomc explain [POLICY] PACKET".into())),
    };
    let compiled = ir::compile_file(&policy)?;
    let p = packet::parse(packet_text).map_err(|e| {
        let caret = format!("{}{}", " ".repeat(e.offset), "^".repeat(e.len));
        Failure::System(format!("bad packet: {}\n  {packet_text}\n  {caret}\n  help: {}", e.message, e.help))
    })?;
    if args.live {
        return live(&compiled, &p, args.format);
    }
    let e = explain::explain(&compiled.ruleset, &compiled.sources, &p);
    match args.format {
        TextOrJson::Text => print!("{}", explain::render(&e)),
        TextOrJson::Json => println!("{}", serde_json::to_string_pretty(&e).expect("explanations serialize")),
    }
    Ok(ExitCode::SUCCESS)
}

/// `explain --live`: the packet through every table in the kernel.
fn live(compiled: &ir::Compiled, p: &crate::ir::eval::Packet, format: TextOrJson) -> CmdResult {
    let system = |e: std::io::Error| Failure::System(format!("cannot read the kernel's tables over netlink: {e}"));
    let kernel = tables::chains().map_err(system)?;
    let table = &compiled.ruleset.table;
    if !kernel.iter().any(|c| c.is_in(tables::NFPROTO_INET, table)) {
        eprintln!("note: table inet {table} is not loaded; phantomc's chain is shown as the policy would load it");
    }
    let elements = nft::live_elements(&compiled.ruleset).map_err(|e| Failure::System(e.to_string()))?;
    let contents: SetContents =
        elements.by_set.into_iter().map(|(set, elems)| (set, elems.into_iter().map(|e| e.net).collect())).collect();
    let mut sets = |family: u8, table: &str, set: &str| tables::set_keys(family, table, set).ok().flatten();
    let e = live::explain_live(&compiled.ruleset, &compiled.sources, p, &contents, &kernel, &mut sets);
    match format {
        TextOrJson::Text => print!("{}", live::render(&e)),
        TextOrJson::Json => println!("{}", serde_json::to_string_pretty(&e).expect("explanations serialize")),
    }
    Ok(ExitCode::SUCCESS)
}
