//! Command line: one subcommand per capability. Each subcommand's arguments
//! and runner live beside it; this file only dispatches.

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use crate::diag::render_terminal;
use crate::policy::LoadError;

mod compile;

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
    /// Print a shell completion script.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
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

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Compile(args) => compile::run(&args),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "phantomc", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
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
