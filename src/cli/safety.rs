//! `confirm`, `panic` and the hidden `rollback-guard`: the operator's way
//! out when a policy goes wrong over SSH.

use std::path::PathBuf;
use std::process::ExitCode;

use super::{CmdResult, Failure};
use crate::ir::Compiled;
use crate::nft::apply as loader;
use crate::nft::rollback::{self, Phase};
use crate::nft::session::{panic_ruleset, Session};
use crate::nft::Nft;

#[derive(clap::Args, Debug)]
pub struct ConfirmArgs {
    /// phantomc's table.
    #[arg(long, default_value = "phantomc")]
    pub table: String,
}

#[derive(clap::Args, Debug)]
pub struct PanicArgs {
    /// The connection to keep, `CLIENT:PORT -> SERVER:PORT`; default: $SSH_CONNECTION.
    #[arg(long)]
    pub keep: Option<String>,
    /// phantomc's table.
    #[arg(long, default_value = "phantomc")]
    pub table: String,
}

#[derive(clap::Args, Debug)]
pub struct GuardArgs {
    pub state: PathBuf,
}

fn sys(e: impl std::fmt::Display) -> Failure {
    Failure::System(e.to_string())
}

pub fn confirm(args: &ConfirmArgs) -> CmdResult {
    let state = rollback::state_path(&args.table).map_err(sys)?;
    rollback::confirm(&state, &args.table).map_err(sys)?;
    println!("confirmed: keeping the new ruleset of table inet {}", args.table);
    Ok(ExitCode::SUCCESS)
}

pub fn panic(args: &PanicArgs) -> CmdResult {
    // At a console (no $SSH_CONNECTION, no --keep) there is no session to
    // keep: panic keeps loopback only, and says so.
    let keep = Session::current(args.keep.as_deref()).map_err(Failure::System)?;
    let compiled = Compiled {
        sources: Default::default(),
        ruleset: panic_ruleset(&args.table, keep.as_ref()),
        unused: Vec::new(),
    };
    let nft = Nft::default();
    let prepared = loader::prepare_with(&compiled, Default::default());
    loader::load(&nft, &compiled, &prepared).map_err(sys)?;
    match keep {
        Some(keep) => println!("panic: table inet {} drops everything except loopback and {keep}", args.table),
        None => println!(
            "panic: table inet {} drops everything except loopback (no SSH session to keep: $SSH_CONNECTION is unset and no --keep given; run this at a console)",
            args.table
        ),
    }
    Ok(ExitCode::SUCCESS)
}

pub fn guard(args: &GuardArgs) -> CmdResult {
    match rollback::guard(&args.state, &crate::feeds::recorded_nets).map_err(sys)? {
        Phase::Failed => Ok(ExitCode::from(1)),
        _ => Ok(ExitCode::SUCCESS),
    }
}
