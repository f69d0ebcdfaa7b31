use std::path::PathBuf;
use std::process::ExitCode;

use super::{CmdResult, Failure};
use crate::analyze::{explain, packet};
use crate::ir;

#[derive(clap::Args, Debug)]
pub struct ExplainArgs {
    /// The policy file.
    pub policy: PathBuf,
    /// The packet, e.g. "tcp 203.0.113.5:51000 -> 10.0.0.10:22 in eth0 new".
    pub packet: String,
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
    let compiled = ir::compile_file(&args.policy)?;
    let p = packet::parse(&args.packet).map_err(|e| {
        let caret = format!("{}{}", " ".repeat(e.offset), "^".repeat(e.len));
        Failure::System(format!("bad packet: {}\n  {}\n  {caret}\n  help: {}", e.message, args.packet, e.help))
    })?;
    let e = explain::explain(&compiled.ruleset, &compiled.sources, &p);
    match args.format {
        TextOrJson::Text => print!("{}", explain::render(&e)),
        TextOrJson::Json => println!("{}", serde_json::to_string_pretty(&e).expect("explanations serialize")),
    }
    Ok(ExitCode::SUCCESS)
}
