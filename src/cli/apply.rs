//! `apply`, `status` and `disable`: the commands that touch the live ruleset,
//! and only phantomc's own table in it.

use std::path::PathBuf;
use std::process::ExitCode;

use super::compile::{render, Format};
use super::{CmdResult, Failure};
use crate::diag::render_terminal;
use crate::ir::{self, Compiled};
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

pub fn apply(args: &ApplyArgs) -> CmdResult {
    let compiled = ir::compile_file(&args.policy)?;
    let rs = &compiled.ruleset;
    let nft = Nft::default();
    let extra = nft::live_elements(&nft, rs).map_err(system)?;
    let table = nft::build(rs, &extra);

    // Check what will be loaded. If nft refuses, check the script form too:
    // its errors name a script line, which maps back to the policy rule
    // through the rule's comment.
    let batch = table.replace_batch();
    if let Err(e) = nft.check_json(&batch) {
        let script = render(&compiled, Format::Nft, &extra);
        return Err(match nft.check_script(&script) {
            Err(NftError::Refused { stderr }) => match nft::locate_script_error(&stderr, &script, rs) {
                Some(d) => Failure::Policy(format!("{}nothing was changed: the live ruleset is as it was\n", render_terminal(&[d], &compiled.sources))),
                None => Failure::System(format!("nft refused the compiled ruleset; nothing was changed:\n{stderr}")),
            },
            _ => Failure::System(format!("{e}\nnothing was changed")),
        });
    }

    if args.dry_run {
        let live = nft.list_table(&rs.table).map_err(system)?;
        let new = nft.scratch_listing(&batch, &rs.table).map_err(system)?;
        print_change(&compiled, live.as_deref(), &new);
        return Ok(ExitCode::SUCCESS);
    }

    nft.load_json(&batch).map_err(|e| Failure::System(format!("{e}\nnothing was changed: the load is one transaction")))?;
    let loaded = nft.list_table_json(&rs.table).map_err(system)?;
    let rules = loaded.as_ref().map_or(0, |v| nft::objects(v).filter(|o| o.get("rule").is_some()).count());
    let expected = table.rule_count();
    if rules != expected {
        return Err(Failure::System(format!("table inet {} holds {rules} rules after loading, expected {expected}", rs.table)));
    }
    let kept: usize = extra.by_set.values().map(Vec::len).sum();
    println!(
        "applied {}: table inet {} replaced atomically ({} rules, {} sets{})",
        args.policy.display(),
        rs.table,
        rules,
        table.sets.len(),
        if kept > 0 { format!(", {kept} run-time set entries kept") } else { String::new() }
    );
    Ok(ExitCode::SUCCESS)
}

fn print_change(c: &Compiled, live: Option<&str>, new: &str) {
    let rs = &c.ruleset;
    let new = nft::strip_runtime_elements(new, rs);
    match live {
        None => {
            println!("table inet {} is not loaded; apply would create it:", rs.table);
            print!("{new}");
        }
        Some(live) => {
            let live = nft::strip_runtime_elements(live, rs);
            if live == new {
                println!("table inet {} already matches {}; apply would change nothing", rs.table, main_file(c));
            } else {
                println!("apply would change table inet {}:", rs.table);
                print!("{}", unified(&live, &new, "live kernel", "after apply"));
            }
        }
    }
}

fn unified(a: &str, b: &str, a_name: &str, b_name: &str) -> String {
    similar::TextDiff::from_lines(a, b).unified_diff().context_radius(2).header(a_name, b_name).to_string()
}

fn main_file(c: &Compiled) -> String {
    c.sources.files().first().map_or_else(String::new, |f| f.name.clone())
}

pub fn status(args: &StatusArgs) -> CmdResult {
    let compiled = ir::compile_file(&args.policy)?;
    let rs = &compiled.ruleset;
    let nft = Nft::default();
    let Some(live) = nft.list_table(&rs.table).map_err(system)? else {
        println!("table inet {}: not loaded", rs.table);
        return Ok(ExitCode::from(EXIT_DRIFT));
    };
    let extra = nft::live_elements(&nft, rs).map_err(system)?;
    let table = nft::build(rs, &extra);
    let batch = table.replace_batch();
    let expected = nft::strip_runtime_elements(&nft.scratch_listing(&batch, &rs.table).map_err(system)?, rs);
    let live = nft::strip_runtime_elements(&live, rs);
    let entries: usize = extra.by_set.values().map(Vec::len).sum();
    if expected == live {
        println!(
            "table inet {}: loaded, in sync with {} ({} rules, {} run-time set entries)",
            rs.table,
            main_file(&compiled),
            table.rule_count(),
            entries
        );
        Ok(ExitCode::SUCCESS)
    } else {
        println!("table inet {}: loaded, DRIFTED from {}", rs.table, main_file(&compiled));
        print!("{}", unified(&expected, &live, "compiled policy", "live kernel"));
        Ok(ExitCode::from(EXIT_DRIFT))
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
