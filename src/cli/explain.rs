use std::path::PathBuf;
use std::process::ExitCode;

use super::args::resolve_policy;
use super::{CmdResult, Failure};
use crate::analyze::{explain, packet};
use crate::ir;

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
    let e = explain::explain(&compiled.ruleset, &compiled.sources, &p);
    match args.format {
        TextOrJson::Text => print!("{}", explain::render(&e)),
        TextOrJson::Json => println!("{}", serde_json::to_string_pretty(&e).expect("explanations serialize")),
    }
    Ok(ExitCode::SUCCESS)
}
