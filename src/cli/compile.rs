use std::path::PathBuf;
use std::process::ExitCode;

use super::CmdResult;
use crate::ir;

#[derive(clap::Args, Debug)]
pub struct CompileArgs {
    /// The policy file.
    pub policy: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Nft)]
    pub format: Format,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// nft script, as `nft -f` reads it.
    Nft,
    /// nft's JSON schema, as `nft -j -f` reads it.
    Json,
    /// phantomc's own IR (for tooling and debugging).
    Ir,
}

pub fn run(args: &CompileArgs) -> CmdResult {
    let compiled = ir::compile_file(&args.policy)?;
    match args.format {
        Format::Ir => println!("{}", serde_json::to_string_pretty(&compiled.ruleset).unwrap_or_default()),
        Format::Nft | Format::Json => todo!(),
    }
    Ok(ExitCode::SUCCESS)
}
