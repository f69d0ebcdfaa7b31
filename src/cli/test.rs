use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::explain::TextOrJson;
use super::{CmdResult, Failure};
use crate::analyze::cases;
use crate::diag::render_terminal;
use crate::ir;

#[derive(clap::Args, Debug)]
pub struct TestArgs {
    #[command(flatten)]
    pub policy: super::args::PolicyArg,
    /// More `.pftest` files (test blocks only).
    pub tests: Vec<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = TextOrJson::Text)]
    pub format: TextOrJson,
}

/// `policy.pf` -> `policy.pftest`, when it exists.
fn companion(policy: &Path) -> Option<PathBuf> {
    Some(policy.with_extension("pftest")).filter(|p| p.is_file())
}

pub fn run(args: &TestArgs) -> CmdResult {
    let policy = args.policy.path();
    let compiled = ir::compile_file(&policy)?;
    let mut results = cases::run(&compiled, &compiled.sources, &cases::inline(&compiled));
    let mut failures = render_failures(&results, &compiled.sources);
    let files: Vec<PathBuf> = companion(&policy).into_iter().chain(args.tests.iter().cloned()).collect();
    for file in &files {
        let suite = cases::load_pftest(file)?;
        let more = cases::run(&compiled, &suite.sources, &suite.cases);
        failures += &render_failures(&more, &suite.sources);
        results.extend(more);
    }
    if results.is_empty() {
        return Err(Failure::Policy(format!(
            "no tests: {} has no `test` blocks and there is no {}\n",
            policy.display(),
            policy.with_extension("pftest").display()
        )));
    }
    match args.format {
        TextOrJson::Text => {
            eprint!("{failures}");
            print!("{}", cases::table(&results));
        }
        TextOrJson::Json => println!("{}", serde_json::to_string_pretty(&results).expect("results serialize")),
    }
    Ok(if results.iter().all(|r| r.passed) { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn render_failures(results: &[cases::CaseResult], sources: &crate::diag::SourceMap) -> String {
    let diags: Vec<_> = results.iter().filter_map(|r| r.diag.clone()).collect();
    render_terminal(&diags, sources)
}
