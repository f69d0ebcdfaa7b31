use std::path::PathBuf;
use std::process::ExitCode;

use super::CmdResult;
use crate::analyze::{lint, report};
use crate::diag::Severity;

#[derive(clap::Args, Debug)]
pub struct LintArgs {
    /// The policy file.
    pub policy: PathBuf,
    /// Output format (`github` prints workflow commands that annotate a pull request).
    #[arg(long, value_enum, default_value_t = report::Format::Text)]
    pub format: report::Format,
    /// Exit 1 on warnings too, not only on errors.
    #[arg(long)]
    pub deny_warnings: bool,
}

/// Exit 0 when clean (or only warnings), 1 when a finding is an error.
pub fn run(args: &LintArgs) -> CmdResult {
    let (compiled, diags) = lint::lint_file(&args.policy)?;
    let out = report::render(&diags, &compiled.sources, args.format, true);
    if args.format == report::Format::Text {
        eprint!("{out}");
    } else {
        print!("{out}");
    }
    let failing =
        diags.iter().any(|d| d.severity == Severity::Error || (args.deny_warnings && d.severity == Severity::Warning));
    Ok(if failing { ExitCode::from(1) } else { ExitCode::SUCCESS })
}
