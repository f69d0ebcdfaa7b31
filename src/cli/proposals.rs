//! `proposals`: what watch's adaptive mode proposes to make permanent, and
//! accepting or rejecting one (as the API's accept/reject do).

use std::io::Write;
use std::process::ExitCode;

use super::{CmdResult, Failure};
use crate::guard::{Operator, SSH_PORT};
use crate::watch::adaptive::proposals::{self, Item, ReviewError};
use crate::watch::unix_now;

#[derive(clap::Args, Debug)]
pub struct ProposalsArgs {
    /// The policy an accepted proposal is written to.
    #[command(flatten)]
    pub policy: super::args::PolicyArg,
    #[command(flatten)]
    pub state_dir: super::args::StateDirArg,
    /// Print one proposal's diff and evidence.
    #[arg(long, value_name = "ID", conflicts_with_all = ["accept", "reject"])]
    pub show: Option<String>,
    /// Apply a proposal's diff to the policy (a backup is kept as POLICY.bak);
    /// a running `watch` reloads it.
    #[arg(long, value_name = "ID", conflicts_with = "reject")]
    pub accept: Option<String>,
    /// With --accept: `git commit` the policy with the evidence as message.
    #[arg(long, requires = "accept")]
    pub git: bool,
    /// Never propose this again.
    #[arg(long, value_name = "ID")]
    pub reject: Option<String>,
    #[arg(long, value_enum, default_value = "text")]
    pub format: super::alerts::Format,
}

fn review(e: ReviewError) -> Failure {
    match e {
        ReviewError::Broken { .. } | ReviewError::Lockout(_) => Failure::Policy(format!("{e}\nnothing was changed\n")),
        other => Failure::System(format!("{other}; nothing was changed")),
    }
}

pub fn run(args: &ProposalsArgs) -> CmdResult {
    let dir = args.state_dir.adaptive_dir();
    if let Some(id) = &args.accept {
        let operator = Operator::discover(None, SSH_PORT).map_err(Failure::System)?;
        let done = proposals::accept(&dir, &args.policy.path(), id, &operator, args.git, unix_now()).map_err(review)?;
        println!(
            "accepted {id}: {} written (the previous text is in {})",
            done.policy.display(),
            done.backup.display()
        );
        if let Some(c) = done.commit {
            println!("committed {c}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(id) = &args.reject {
        let item = proposals::reject(&dir, id, unix_now()).map_err(review)?;
        println!("rejected {id} ({}): it is not proposed again", item.subject);
        return Ok(ExitCode::SUCCESS);
    }
    let items = proposals::pending(&dir).map_err(Failure::System)?;
    let mut out = std::io::stdout().lock();
    let io = |e: std::io::Error| Failure::System(e.to_string());
    if let Some(id) = &args.show {
        let item = items.iter().find(|i| &i.id == id).ok_or_else(|| Failure::System(format!("no proposal {id}")))?;
        return match args.format {
            super::alerts::Format::Json => {
                writeln!(out, "{}", serde_json::to_string_pretty(item).expect("serializes")).map_err(io)?;
                Ok(ExitCode::SUCCESS)
            }
            super::alerts::Format::Text => {
                writeln!(out, "{}", line(item)).map_err(io)?;
                for e in proposals::evidence(item) {
                    writeln!(out, "    {e}").map_err(io)?;
                }
                write!(out, "{}", item.diff).map_err(io)?;
                Ok(ExitCode::SUCCESS)
            }
        };
    }
    if items.is_empty() {
        eprintln!(
            "no proposals in {} (adaptive mode proposes what it did not block)",
            dir.join(proposals::FILE).display()
        );
    }
    for item in &items {
        let text = match args.format {
            super::alerts::Format::Json => serde_json::to_string(item).expect("serializes"),
            super::alerts::Format::Text => line(item),
        };
        writeln!(out, "{text}").map_err(io)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn line(i: &Item) -> String {
    let when = crate::learn::fmt_time(i.updated * 1_000_000);
    format!("{}  {when}  {}", i.id, i.summary)
}
