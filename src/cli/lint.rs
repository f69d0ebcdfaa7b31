use std::process::ExitCode;

use super::CmdResult;
use crate::analyze::{lint, report};
use crate::diag::Severity;
use crate::ir::expiry;

#[derive(clap::Args, Debug)]
pub struct LintArgs {
    #[command(flatten)]
    pub policy: super::args::PolicyArg,
    /// Output format (`github` prints workflow commands that annotate a pull request).
    #[arg(long, value_enum, default_value_t = report::Format::Text)]
    pub format: report::Format,
    /// Exit 1 on warnings too, not only on errors.
    #[arg(long)]
    pub deny_warnings: bool,
    /// Warn about rules and entries that expire within this many days.
    #[arg(long, value_name = "DAYS", default_value_t = expiry::DEFAULT_WARN_DAYS)]
    pub expires_within: i64,
    /// Report only expired and soon-expiring rules and entries; exit 1 if any has expired (for CI).
    #[arg(long)]
    pub expired: bool,
}

/// Exit 0 when clean (or only warnings), 1 when a finding is an error.
pub fn run(args: &LintArgs) -> CmdResult {
    let opts = lint::Options { expiry_warn_days: args.expires_within, ..lint::Options::default() };
    let (compiled, mut diags) = lint::lint_file(&args.policy.path(), &opts)?;
    if args.expired {
        diags.retain(|d| matches!(d.code, "expired" | "expires-soon"));
    }
    let out = report::render(&diags, &compiled.sources, args.format, true);
    if args.format == report::Format::Text {
        eprint!("{out}");
    } else {
        print!("{out}");
    }
    let failing = diags.iter().any(|d| {
        d.severity == Severity::Error
            || (args.deny_warnings && d.severity == Severity::Warning)
            || (args.expired && d.code == "expired")
    });
    Ok(if failing { ExitCode::from(1) } else { ExitCode::SUCCESS })
}
