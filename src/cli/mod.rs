//! Command line: one subcommand per capability. Each subcommand's arguments
//! and runner live beside it; this file only dispatches.

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use crate::diag::render_terminal;
use crate::policy::LoadError;

mod alerts;
mod apply;
mod args;
mod block;
mod codes;
mod compile;
mod diff;
mod explain;
mod feeds;
mod hits;
mod import;
mod learn;
mod lint;
mod log;
mod manpages;
mod proposals;
mod safety;
mod serve;
mod test;
mod watch;

#[derive(Parser, Debug)]
#[command(name = "phantomc", version, about = "Declarative firewall policy compiler and offline analyzer for nftables")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Compile a policy into one atomic nftables ruleset (nft script or JSON).
    Compile(compile::CompileArgs),
    /// Check and load a policy in one transaction that replaces only phantomc's table.
    Apply(apply::ApplyArgs),
    /// Is phantomc's table loaded and in sync (exit 3 if not), and can another table override it (exit 6)?
    Status(apply::StatusArgs),
    /// Remove phantomc's table (and nothing else).
    Disable(apply::DisableArgs),
    /// Add addresses to a run-time block set, without a reload.
    Block(block::BlockArgs),
    /// Remove addresses from a run-time block set.
    Unblock(block::UnblockArgs),
    /// List run-time block entries with their set, reason and time left.
    Blocked(block::BlockedArgs),
    /// Packets and bytes per policy line from the live counters, busiest first.
    Hits(hits::HitsArgs),
    /// Logged packets (kernel log or NFLOG), each mapped to its policy line; --follow for new ones.
    Log(log::LogArgs),
    /// Threat feeds: update sets in place, list, parse.
    #[command(subcommand)]
    Feeds(feeds::FeedsCommand),
    /// Keep a ruleset applied with `apply --confirm`.
    Confirm(safety::ConfirmArgs),
    /// Drop everything except loopback and the current SSH session, at once.
    Panic(safety::PanicArgs),
    /// REST API and web dashboard for the live ruleset (127.0.0.1:9180).
    Serve(serve::ServeArgs),
    /// (internal) Restore the previous ruleset unless confirmed in time.
    #[command(hide = true)]
    RollbackGuard(safety::GuardArgs),
    /// Find shadowed, redundant and unreachable rules and unused names (offline, exact).
    Lint(lint::LintArgs),
    /// Which traffic changes verdict between two policies (or a git revision); exit 5 with --fail-on.
    Diff(diff::DiffArgs),
    /// Which rule decides a packet, and why earlier rules did not match (offline).
    Explain(explain::ExplainArgs),
    /// Run a policy's `test` blocks and .pftest files; print a pass/fail table.
    Test(test::TestArgs),
    /// Keep the policy loaded: reload atomically when it, an include or a local feed changes.
    Watch(watch::WatchArgs),
    /// Write a phantomc policy from iptables-save, nft, ufw, firewalld or the old product's YAML rules (--verify: compare verdicts).
    Import(import::ImportArgs),
    /// (compatibility) `config --import FILE`: the old product's rules YAML as a policy.
    Config(import::ConfigArgs),
    /// Propose policy changes (pass rules, blocks with evidence) from a capture.
    Learn(learn::LearnArgs),
    /// What watch's adaptive mode found and did (alerts.jsonl); --follow for new ones.
    Alerts(alerts::AlertsArgs),
    /// What watch's adaptive mode proposes to make permanent; --accept or --reject one.
    Proposals(proposals::ProposalsArgs),
    /// Explain a diagnostic code (e.g. `phantomc codes host-bits`), or list them all.
    Codes(codes::CodesArgs),
    /// Print a shell completion script.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// (packaging) Write a man page for every command into a directory.
    #[command(hide = true)]
    Manpages(manpages::ManpagesArgs),
}

/// Why a command failed; decides the exit code.
#[derive(Debug)]
pub enum Failure {
    /// The policy is wrong (exit 1); already holds its rendered diagnostics.
    Policy(String),
    /// Usage or system trouble: a missing file, nft refused, no permission (exit 2).
    System(String),
}

impl From<LoadError> for Failure {
    fn from(e: LoadError) -> Self {
        match e {
            LoadError::Io(..) => Failure::System(e.to_string()),
            LoadError::Policy(p) => Failure::Policy(render_terminal(&p.diags, &p.sources)),
        }
    }
}

pub type CmdResult = Result<ExitCode, Failure>;

/// Expired rules and entries were left out of `c`: say which, on stderr.
fn warn_expired(c: &crate::ir::Compiled) {
    let diags: Vec<_> =
        c.ruleset.expiries.iter().filter(|e| e.expired).map(crate::ir::expiry::Expiry::expired_warning).collect();
    eprint!("{}", render_terminal(&diags, &c.sources));
}

pub fn main() -> ExitCode {
    // Like other Unix tools, end quietly when a pipe reader (`| head`) goes away.
    // SAFETY: called first, before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    if matches!(cli.command, Command::Serve(_) | Command::Watch(_)) {
        // A service outlives its log reader (journald restarts): a closed
        // pipe must be a failed write, not the end of the firewall service.
        // SAFETY: still before any thread exists.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        }
    }
    let result = match cli.command {
        Command::Compile(args) => compile::run(&args),
        Command::Apply(args) => apply::apply(&args),
        Command::Status(args) => apply::status(&args),
        Command::Disable(args) => apply::disable(&args),
        Command::Block(args) => block::block(&args),
        Command::Unblock(args) => block::unblock(&args),
        Command::Blocked(args) => block::blocked(&args),
        Command::Hits(args) => hits::run(&args),
        Command::Log(args) => log::run(&args),
        Command::Feeds(cmd) => feeds::run(&cmd),
        Command::Confirm(args) => safety::confirm(&args),
        Command::Panic(args) => safety::panic(&args),
        Command::RollbackGuard(args) => safety::guard(&args),
        Command::Lint(args) => lint::run(&args),
        Command::Diff(args) => diff::run(&args),
        Command::Explain(args) => explain::run(&args),
        Command::Test(args) => test::run(&args),
        Command::Serve(args) => serve::serve(&args),
        Command::Watch(args) => watch::watch(&args),
        Command::Learn(args) => learn::run(&args),
        Command::Import(args) => import::run(&args),
        Command::Config(args) => import::config(&args),
        Command::Alerts(args) => alerts::run(&args),
        Command::Proposals(args) => proposals::run(&args),
        Command::Codes(args) => codes::run(&args),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "phantomc", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Manpages(args) => manpages::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(Failure::Policy(text)) => {
            eprint!("{text}");
            ExitCode::from(1)
        }
        Err(Failure::System(msg)) => {
            eprintln!("phantomc: error: {msg}");
            ExitCode::from(2)
        }
    }
}
