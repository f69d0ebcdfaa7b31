//! `phantomc manpages DIR` (hidden): writes a man page per command and
//! subcommand (`phantomc.1`, `phantomc-apply.1`, `phantomc-feeds-update.1`,
//! ...) from the same clap definitions as `--help`, for the Debian package.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::CommandFactory;

use super::{Cli, CmdResult, Failure};

#[derive(clap::Args, Debug)]
pub struct ManpagesArgs {
    /// Directory to write the pages into (created if missing).
    pub dir: PathBuf,
}

pub fn run(args: &ManpagesArgs) -> CmdResult {
    std::fs::create_dir_all(&args.dir)
        .map_err(|e| Failure::System(format!("cannot create {}: {e}", args.dir.display())))?;
    let mut written = Vec::new();
    write_pages(&Cli::command(), &args.dir, &mut written)?;
    println!("wrote {} man pages to {}", written.len(), args.dir.display());
    Ok(ExitCode::SUCCESS)
}

/// Writes the page of `cmd` and of every visible subcommand below it; a
/// subcommand's page is named after its whole path (`phantomc-feeds-update`).
fn write_pages(cmd: &clap::Command, dir: &Path, written: &mut Vec<PathBuf>) -> Result<(), Failure> {
    let cmd = cmd.clone().disable_help_subcommand(true);
    let name = cmd.get_display_name().unwrap_or(cmd.get_name()).to_string();
    let path = dir.join(format!("{name}.1"));
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .render(&mut page)
        .map_err(|e| Failure::System(format!("cannot render {name}: {e}")))?;
    std::fs::write(&path, page).map_err(|e| Failure::System(format!("cannot write {}: {e}", path.display())))?;
    written.push(path);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let sub_name = format!("{name}-{}", sub.get_name());
        let sub = sub.clone().display_name(&sub_name).bin_name(sub_name.replace('-', " "));
        write_pages(&sub, dir, written)?;
    }
    Ok(())
}
