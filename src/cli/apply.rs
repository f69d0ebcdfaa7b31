//! `apply`, `status` and `disable`: the commands that touch the live ruleset,
//! and only phantomc's own table in it.

use std::path::PathBuf;
use std::process::ExitCode;

use super::{CmdResult, Failure};
use crate::diag::render_terminal;
use crate::ir::{self, Compiled};
use crate::nft::apply::{self as loader, ApplyError, Status};
use crate::nft::{self, Nft, NftError};

/// Exit code of `status` when the live table is missing or differs.
const EXIT_DRIFT: u8 = 3;

#[derive(clap::Args, Debug)]
pub struct ApplyArgs {
    /// The policy file.
    pub policy: PathBuf,
    /// Check everything and show what would change, but load nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// The policy the live table should match.
    pub policy: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct DisableArgs {
    /// phantomc's table.
    #[arg(long, default_value = "phantomc")]
    pub table: String,
}

fn system(e: NftError) -> Failure {
    Failure::System(e.to_string())
}

/// Turns an apply failure into a message; the live ruleset is always unchanged.
pub fn failure(e: ApplyError, compiled: &Compiled) -> Failure {
    const UNCHANGED: &str = "nothing was changed: the live ruleset is as it was";
    match e {
        ApplyError::RuleRefused(d) => Failure::Policy(format!("{}{UNCHANGED}\n", render_terminal(&[*d], &compiled.sources))),
        other => Failure::System(format!("{other}\n{UNCHANGED}")),
    }
}

pub fn apply(args: &ApplyArgs) -> CmdResult {
    let compiled = ir::compile_file(&args.policy)?;
    let nft = Nft::default();
    let prepared = loader::prepare(&nft, &compiled).map_err(|e| failure(e, &compiled))?;
    let table = &prepared.table.name;
    if args.dry_run {
        let live = nft.list_table(table).map_err(system)?;
        let new = nft.scratch_listing(&prepared.batch, table).map_err(system)?;
        print_change(&compiled, live.as_deref(), &new);
        return Ok(ExitCode::SUCCESS);
    }
    let rules = loader::load(&nft, &prepared).map_err(|e| failure(e, &compiled))?;
    let kept: usize = prepared.kept.by_set.values().map(Vec::len).sum();
    println!(
        "applied {}: table inet {table} replaced atomically ({rules} rules, {} sets{})",
        args.policy.display(),
        prepared.table.sets.len(),
        if kept > 0 { format!(", {kept} run-time set entries kept") } else { String::new() }
    );
    Ok(ExitCode::SUCCESS)
}

fn print_change(c: &Compiled, live: Option<&str>, new: &str) {
    let rs = &c.ruleset;
    let new = loader::strip_runtime_elements(new, rs);
    match live {
        None => {
            println!("table inet {} is not loaded; apply would create it:", rs.table);
            print!("{new}");
        }
        Some(live) => {
            let live = loader::strip_runtime_elements(live, rs);
            if live == new {
                println!("table inet {} already matches {}; apply would change nothing", rs.table, main_file(c));
            } else {
                println!("apply would change table inet {}:", rs.table);
                print!("{}", loader::unified(&live, &new, "live kernel", "after apply"));
            }
        }
    }
}

fn main_file(c: &Compiled) -> String {
    c.sources.files().first().map_or_else(String::new, |f| f.name.clone())
}

pub fn status(args: &StatusArgs) -> CmdResult {
    let compiled = ir::compile_file(&args.policy)?;
    let table = &compiled.ruleset.table;
    match loader::status(&Nft::default(), &compiled).map_err(system)? {
        Status::NotLoaded => {
            println!("table inet {table}: not loaded");
            Ok(ExitCode::from(EXIT_DRIFT))
        }
        Status::InSync { rules, entries } => {
            println!("table inet {table}: loaded, in sync with {} ({rules} rules, {entries} run-time set entries)", main_file(&compiled));
            Ok(ExitCode::SUCCESS)
        }
        Status::Drifted(diff) => {
            println!("table inet {table}: loaded, DRIFTED from {}", main_file(&compiled));
            print!("{diff}");
            Ok(ExitCode::from(EXIT_DRIFT))
        }
    }
}

pub fn disable(args: &DisableArgs) -> CmdResult {
    let nft = Nft::default();
    if !nft.table_exists(&args.table).map_err(system)? {
        println!("table inet {} is not loaded; nothing to do", args.table);
        return Ok(ExitCode::SUCCESS);
    }
    nft.load_json(&nft::delete_batch(&args.table)).map_err(system)?;
    println!("deleted table inet {}; other tables are untouched", args.table);
    Ok(ExitCode::SUCCESS)
}
