//! `codes`: the diagnostic catalog, like `rustc --explain` and `ruff rule`.

use std::process::ExitCode;

use super::{CmdResult, Failure};
use crate::diag::codes::{self, Code};

#[derive(clap::Args, Debug)]
pub struct CodesArgs {
    /// The code to explain (e.g. `host-bits`); without it, every code with its summary.
    pub code: Option<String>,
    /// The catalog as Markdown (the generated part of docs/diagnostics.md).
    #[arg(long, conflicts_with = "code")]
    pub markdown: bool,
}

pub fn run(args: &CodesArgs) -> CmdResult {
    let text = match (&args.code, args.markdown) {
        (_, true) => codes::markdown(),
        (None, false) => codes::table(),
        (Some(name), false) => match Code::named(name) {
            Some(code) => codes::explain(code),
            None => {
                let hint = crate::diag::suggest(name, Code::ALL.iter().map(|c| c.as_str()))
                    .map_or_else(String::new, |s| format!(" (did you mean `{s}`?)"));
                return Err(Failure::System(format!(
                    "`{name}` is not a phantomc diagnostic code{hint}; `phantomc codes` lists them"
                )));
            }
        },
    };
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}
