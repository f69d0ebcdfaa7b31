//! `apply`, `status` and `disable`: the commands that touch the live ruleset,
//! and only phantomc's own table in it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use super::{CmdResult, Failure};
use crate::analyze::coexist::{self, Coexistence};
use crate::diag::render_terminal;
use crate::guard::{self, Operator, Protected, SSH_PORT};
use crate::ir::{self, Compiled};
use crate::nft::apply::{self as loader, ApplyError, Status};
use crate::nft::kernel::{self, Snapshot};
use crate::nft::rollback::{self, Phase};
use crate::nft::{self, Nft, NftError};
use crate::watch;

/// Exit code of `status` when the live table is missing or differs.
const EXIT_DRIFT: u8 = 3;
/// Exit code of `apply --confirm` when nobody confirmed and the old ruleset is back.
const EXIT_ROLLED_BACK: u8 = 4;
/// Exit code of `status` when phantomc's table is in sync but another
/// table's chain on the same hooks can drop or reject what it passes.
const EXIT_OVERRIDDEN: u8 = 6;

#[derive(clap::Args, Debug)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub policy: super::args::PolicyArg,
    /// Check everything and show what would change, but load nothing.
    #[arg(long, conflicts_with = "confirm")]
    pub dry_run: bool,
    /// Keep the new ruleset only if confirmed (type `y` or `yes`, or run `phantomc
    /// confirm`) before the timeout; otherwise a detached guard restores the
    /// previous one, even if this process or its terminal dies.
    #[arg(long)]
    pub confirm: bool,
    /// How long `--confirm` waits (30s, 2m, ...).
    #[arg(long, default_value = "30s", value_parser = super::block::parse_duration)]
    pub timeout: u32,
    /// Your own connection, `CLIENT:PORT -> SERVER:PORT`; default: $SSH_CONNECTION.
    /// apply refuses a policy that would drop it.
    #[arg(long)]
    pub keep: Option<String>,
    /// Apply even if the policy would drop your own connection.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub state_dir: super::args::StateDirArg,
}

#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub policy: super::args::PolicyArg,
    /// The health file of `phantomc watch`, shown when it exists
    /// [default: /run/phantomc/health-<table>.json].
    #[arg(long)]
    pub state_file: Option<PathBuf>,
    /// Output format (JSON fields in docs/guide/compile-apply-status.md).
    #[arg(long, value_enum, default_value_t = super::explain::TextOrJson::Text)]
    pub format: super::explain::TextOrJson,
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
        ApplyError::RuleRefused(d) => {
            Failure::Policy(format!("{}{UNCHANGED}\n", render_terminal(&[*d], &compiled.sources)))
        }
        other => Failure::System(format!("{other}\n{UNCHANGED}")),
    }
}

pub fn apply(args: &ApplyArgs) -> CmdResult {
    let policy = args.policy.path();
    let compiled = ir::compile_file(&policy)?;
    super::warn_expired(&compiled);
    let nft = Nft::default();
    loader::check_kernel(&nft, &compiled).map_err(|e| failure(e, &compiled))?;
    // Feed sets get their cached copies, so a reload never empties them.
    let operator = Operator::discover(args.keep.as_deref(), SSH_PORT).map_err(Failure::System)?;
    let protected = Protected::gather(Some(&compiled.ruleset), &operator);
    let kept = super::feeds::apply_elements(&compiled.ruleset, &protected, args.state_dir.given())?;
    let table = &compiled.ruleset.table;
    match guard::check(&compiled.ruleset, &kept.contents(), &operator) {
        Ok(checked) => {
            for kept in &checked.kept {
                println!("checked: the new policy keeps {kept}, and new logins from its client");
            }
            if let Some(note) = checked.unchecked {
                eprintln!("warning: {note}");
            }
        }
        Err(refusal) if !args.force => {
            return Err(Failure::Policy(format!(
                "{}refused: nothing was changed (use --force to apply anyway)\n",
                render_terminal(&refusal.diags(&compiled.ruleset), &compiled.sources)
            )))
        }
        Err(refusal) => eprintln!("warning: {refusal}; applying anyway (--force)"),
    }
    if args.dry_run {
        // The scratch load also proves that nft takes the ruleset.
        let new = loader::expected_snapshot(&nft, &compiled).map_err(|e| failure(e, &compiled))?;
        let live = loader::live_snapshot(&compiled.ruleset).map_err(system)?;
        print_change(&compiled, &kept, live.as_ref(), &new);
        print!("{}", coexist::render(&others(&compiled.ruleset)?));
        return Ok(ExitCode::SUCCESS);
    }
    let armed = if args.confirm {
        // The live feed sets were loaded from the feed cache: the record
        // names it instead of holding their entries.
        let feeds = crate::feeds::rollback_sources(&protected, args.state_dir.given()).map_err(Failure::System)?;
        let started = std::time::Instant::now();
        let state = rollback::arm(table, Duration::from_secs(u64::from(args.timeout)), &feeds)
            .map_err(|e| Failure::System(e.to_string()))?;
        let took = started.elapsed().as_millis();
        match rollback::read(&state).ok().flatten().and_then(|p| p.previous) {
            Some(r) => println!("recorded table inet {table} for the rollback in {took} ms ({})", r.summary()),
            None => println!("table inet {table} is not loaded: a rollback removes it"),
        }
        Some(state)
    } else {
        None
    };
    // Built only to load: a dry run never needs the script of every feed entry.
    let prepared = loader::prepare_with(&compiled, kept);
    // The other tables' chains are read while nft loads: phantomc's own
    // table is never part of that reading, so the load cannot change it.
    let (loaded, others) = std::thread::scope(|s| {
        let others = s.spawn(|| others(&compiled.ruleset));
        let loaded = loader::load(&nft, &compiled, &prepared);
        (loaded, others.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
    });
    let rules = match loaded {
        Ok(rules) => rules,
        Err(e) => {
            if let Some(state) = &armed {
                // Nothing new is live, so there is nothing to roll back.
                let _ = rollback::disarm(state);
            }
            return Err(failure(e, &compiled));
        }
    };
    let kept: usize = prepared.kept.by_set.values().map(Vec::len).sum();
    println!(
        "applied {}: table inet {table} replaced atomically ({rules} rules, {} sets{})",
        policy.display(),
        prepared.table.sets.len(),
        if kept > 0 { format!(", {kept} run-time set entries kept") } else { String::new() }
    );
    print!("{}", coexist::render(&others?));
    match armed {
        Some(state) => await_confirmation(&state, table, args.timeout),
        None => Ok(ExitCode::SUCCESS),
    }
}

/// Waits for `yes` on stdin or `phantomc confirm`, until the guard decides.
fn await_confirmation(state: &Path, table: &str, timeout: u32) -> CmdResult {
    println!("type `y` or `yes` within {timeout}s to keep it (or run `phantomc confirm`); otherwise the previous ruleset comes back");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        while std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {
            if is_yes(&line) {
                let _ = tx.send(());
                return;
            }
            line.clear();
        }
    });
    let sys = |e: rollback::RollbackError| Failure::System(e.to_string());
    loop {
        if rx.try_recv().is_ok() {
            match rollback::confirm(state, table) {
                Ok(()) => {}
                Err(rollback::RollbackError::TooLate(_)) => break,
                Err(e) => return Err(sys(e)),
            }
        }
        match rollback::read(state).map_err(sys)?.map(|p| (p.phase, p.deadline_ms)) {
            Some((Phase::Confirmed, _)) => {
                let _ = rollback::disarm(state); // reported; the record is no longer needed
                println!("confirmed: keeping the new ruleset of table inet {table}");
                return Ok(ExitCode::SUCCESS);
            }
            None => return Err(sys(rollback::RollbackError::Vanished(state.to_path_buf(), table.to_string()))),
            Some((Phase::Pending, deadline)) if rollback::now_ms() > deadline => break,
            Some((Phase::Pending, _)) => std::thread::sleep(Duration::from_millis(100)),
            Some(_) => break,
        }
    }
    match rollback::wait_outcome(state, table).map_err(sys)? {
        Phase::Confirmed => {
            let _ = rollback::disarm(state);
            println!("confirmed: keeping the new ruleset of table inet {table}");
            Ok(ExitCode::SUCCESS)
        }
        Phase::RolledBack => {
            let took = rollback::read(state).ok().flatten().and_then(|p| p.restore_ms);
            let _ = rollback::disarm(state); // reported; the record is no longer needed
            let took = took.map_or_else(String::new, |ms| format!(" (restored in {ms} ms)"));
            println!("not confirmed in time: the previous ruleset of table inet {table} is back{took}");
            Ok(ExitCode::from(EXIT_ROLLED_BACK))
        }
        Phase::Failed => Err(Failure::System(format!(
            "not confirmed in time, and the rollback failed: {}",
            rollback::read(state).ok().flatten().and_then(|p| p.message).unwrap_or_default()
        ))),
        Phase::Pending => {
            Err(Failure::System("the rollback guard did not answer; check `nft list table inet` by hand".into()))
        }
    }
}

/// `y` or `yes`, any case: the answer that keeps a ruleset.
fn is_yes(line: &str) -> bool {
    matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

fn print_change(c: &Compiled, kept: &nft::Elements, live: Option<&Snapshot>, new: &Snapshot) {
    let rs = &c.ruleset;
    match live {
        None => {
            println!("table inet {} is not loaded; apply would create it:", rs.table);
            let without_entries = nft::build(rs, &nft::Elements::default());
            print!("{}", nft::script::script(&without_entries, ""));
            let kept: usize = kept.by_set.values().map(Vec::len).sum();
            if kept > 0 {
                println!("(and {kept} feed and run-time set entries)");
            }
        }
        Some(live) if live == new => {
            println!("table inet {} already matches {}; apply would change nothing", rs.table, main_file(c));
        }
        Some(live) => {
            println!("apply would change table inet {}:", rs.table);
            let (l, n) = (kernel::describe(live), kernel::describe(new));
            print!("{}", loader::unified(&l, &n, "live kernel", "after apply"));
        }
    }
}

/// The other firewalls' chains on phantomc's hooks, read from the kernel.
fn others(rs: &ir::Ruleset) -> Result<Coexistence, Failure> {
    coexist::read(rs).map_err(|e| Failure::System(format!("cannot read the other tables over netlink: {e}")))
}

/// `status`'s exit code: drift first, then another table overriding phantomc.
fn status_code(in_sync: bool, others: &Coexistence) -> ExitCode {
    if !in_sync {
        ExitCode::from(EXIT_DRIFT)
    } else if others.overriding().next().is_some() {
        ExitCode::from(EXIT_OVERRIDDEN)
    } else {
        ExitCode::SUCCESS
    }
}

fn main_file(c: &Compiled) -> String {
    c.sources.files().first().map_or_else(String::new, |f| f.name.clone())
}

pub fn status(args: &StatusArgs) -> CmdResult {
    if args.format == super::explain::TextOrJson::Json {
        return status_json(args);
    }
    let compiled = ir::compile_file(&args.policy.path());
    // A watch service's state comes first: it also explains a policy that
    // no longer compiles.
    let table = compiled.as_ref().map_or("phantomc", |c| c.ruleset.table.as_str());
    let health_file = args.state_file.clone().unwrap_or_else(|| watch::default_state_file(table));
    if let Ok(health) = watch::read_health(&health_file) {
        print!("{}", health.summary());
    }
    let compiled = compiled?;
    let table = &compiled.ruleset.table;
    let in_sync = match loader::status(&Nft::default(), &compiled).map_err(|e| failure(e, &compiled))? {
        Status::NotLoaded => {
            println!("table inet {table}: not loaded");
            false
        }
        Status::InSync { rules, entries } => {
            println!(
                "table inet {table}: loaded, in sync with {} ({rules} rules, {entries} run-time set entries)",
                main_file(&compiled)
            );
            true
        }
        Status::Drifted(diff) => {
            println!("table inet {table}: loaded, DRIFTED from {}", main_file(&compiled));
            print!("{diff}");
            false
        }
    };
    let others = others(&compiled.ruleset)?;
    print!("{}", coexist::render(&others));
    Ok(status_code(in_sync, &others))
}

/// `status --format json`: one object, same exit codes as the text form.
fn status_json(args: &StatusArgs) -> CmdResult {
    let compiled = ir::compile_file(&args.policy.path())?;
    let table = &compiled.ruleset.table;
    let health_file = args.state_file.clone().unwrap_or_else(|| watch::default_state_file(table));
    let health = watch::read_health(&health_file).ok();
    let (state, rules, entries, drift) =
        match loader::status(&Nft::default(), &compiled).map_err(|e| failure(e, &compiled))? {
            Status::NotLoaded => ("not-loaded", None, None, None),
            Status::InSync { rules, entries } => ("in-sync", Some(rules), Some(entries), None),
            Status::Drifted(diff) => ("drifted", None, None, Some(diff)),
        };
    let others = others(&compiled.ruleset)?;
    let doc = serde_json::json!({
        "table": table,
        "policy": main_file(&compiled),
        "state": state,
        "rules": rules,
        "entries": entries,
        "drift": drift,
        "watch": health,
        "overridden": others.overriding().next().is_some(),
        "chains": others.chains,
        "notes": others.notes,
    });
    println!("{doc}");
    Ok(status_code(state == "in-sync", &others))
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

#[cfg(test)]
mod tests {
    #[test]
    fn y_and_yes_confirm() {
        for answer in ["y\n", "Y\n", "yes\n", " YES \r\n"] {
            assert!(super::is_yes(answer), "{answer:?}");
        }
        for answer in ["", "n\n", "ye\n", "yes please\n"] {
            assert!(!super::is_yes(answer), "{answer:?}");
        }
    }
}
