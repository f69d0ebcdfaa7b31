use std::process::ExitCode;

use super::{CmdResult, Failure};
use crate::feeds;
use crate::guard::Protected;
use crate::ir::{self, Compiled};
use crate::nft;

#[derive(clap::Args, Debug)]
pub struct CompileArgs {
    #[command(flatten)]
    pub policy: super::args::PolicyArg,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Nft)]
    pub format: Format,
    /// With --state-dir: feed sets are filled from its feed caches
    /// (without it, feed sets are printed empty).
    #[command(flatten)]
    pub state_dir: super::args::StateDirArg,
    /// Emit one nft rule per IR rule: no runs of rules merged into set lookups.
    #[arg(long)]
    pub no_optimize: bool,
    /// Print which rules the optimizer merges, instead of the ruleset.
    #[arg(long, conflicts_with_all = ["no_optimize", "format"])]
    pub explain_optimize: bool,
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
    let compiled = ir::compile_file(&args.policy.path())?;
    super::warn_expired(&compiled);
    let extra = match args.state_dir.given() {
        Some(_) => {
            let cache = feeds::cache::Cache::new(args.state_dir.feeds_dir());
            let (elements, warnings) =
                feeds::cached_elements(&compiled.ruleset, &Protected::of_policy(&compiled.ruleset), &cache)
                    .map_err(Failure::System)?;
            warnings.iter().for_each(|w| eprintln!("warning: {w}"));
            elements
        }
        None => nft::Elements::default(),
    };
    if args.explain_optimize {
        print!("{}", ir::optimize::explain(&ir::optimize::optimize(&compiled.ruleset)));
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", render(&compiled, args.format, &extra, !args.no_optimize));
    Ok(ExitCode::SUCCESS)
}

/// The compiled policy in one of the output formats (deterministic); the
/// IR is always the policy's own, the nft formats optimized if asked.
pub fn render(c: &Compiled, format: Format, extra: &nft::Elements, optimize: bool) -> String {
    let table = if optimize { nft::build(&c.ruleset, extra) } else { nft::emit::build_with(&c.ruleset, extra) };
    match format {
        Format::Nft => nft::script_for(c, &table),
        Format::Json => nft::to_json_pretty(&table.replace_batch()) + "\n",
        Format::Ir => serde_json::to_string_pretty(&c.ruleset).expect("IR always serializes") + "\n",
    }
}
