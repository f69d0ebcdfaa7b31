//! Loading a compiled policy into the kernel, and comparing what is loaded
//! with what a policy says. Shared by `apply`, `status`, `watch` and the
//! confirm-or-rollback machinery.

use nftables::schema::Nftables;

use super::{build, live_elements, locate_script_error, script_for, Elements, Nft, NftError, NftTable};
use crate::diag::Diag;
use crate::ir::{Compiled, Ruleset, SetKind};

/// Why a policy could not be loaded. In every case the live ruleset is as it was.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// nft refused one rule; the diagnostic points at its policy line.
    #[error("{}", .0.message)]
    RuleRefused(Box<Diag>),
    #[error("nft refused the compiled ruleset:\n{0}")]
    Refused(String),
    #[error(transparent)]
    Nft(#[from] NftError),
    #[error("cannot count the rules of table inet {0} after loading: {1}")]
    Count(String, std::io::Error),
    #[error("table inet {table} holds {found} rules after loading, expected {expected}")]
    Verify { table: String, found: usize, expected: usize },
}

/// A checked batch, ready to load.
pub struct Prepared {
    pub table: NftTable,
    pub batch: Nftables<'static>,
    /// Run-time and feed set entries carried over from the live table.
    pub kept: Elements,
}

/// Reads run-time entries, builds the batch and has nft check it.
pub fn prepare(nft: &Nft, compiled: &Compiled) -> Result<Prepared, ApplyError> {
    prepare_with(nft, compiled, live_elements(nft, &compiled.ruleset)?)
}

/// Like [`prepare`] with explicit extra elements (feeds, saved entries).
pub fn prepare_with(nft: &Nft, compiled: &Compiled, kept: Elements) -> Result<Prepared, ApplyError> {
    let table = build(&compiled.ruleset, &kept);
    let batch = table.replace_batch();
    // nft checks the policy's own objects. Feed entries were parsed,
    // aggregated and capped by the feeds module; nft checking 800k of them
    // again costs as long as loading them, and a load that refuses one still
    // changes nothing (one transaction).
    let checked = build(&compiled.ruleset, &kept.without_feeds(&compiled.ruleset));
    if let Err(e) = nft.check_json(&checked.replace_batch()) {
        // The script form's errors name a line, which maps back to the
        // policy rule through the rule's comment.
        let script = script_for(compiled, &checked);
        return Err(match nft.check_script(&script) {
            Err(NftError::Refused { stderr }) => match locate_script_error(&stderr, &script, &compiled.ruleset) {
                Some(d) => ApplyError::RuleRefused(Box::new(d)),
                None => ApplyError::Refused(stderr),
            },
            _ => ApplyError::Nft(e),
        });
    }
    Ok(Prepared { table, batch, kept })
}

/// Loads a prepared batch in one transaction and checks the result.
/// Returns the number of rules loaded.
pub fn load(nft: &Nft, p: &Prepared) -> Result<usize, ApplyError> {
    nft.load_json(&p.batch)?;
    let name = &p.table.name;
    // Asked of the kernel directly: `nft list` would first read every feed
    // set element (about a minute with an 800k-entry feed, nft 1.0.6).
    let found = super::kernel_rules::count(name).map_err(|e| ApplyError::Count(name.clone(), e))?;
    let expected = p.table.rule_count();
    if found != expected {
        return Err(ApplyError::Verify { table: name.clone(), found, expected });
    }
    Ok(found)
}

/// What the live table looks like next to a policy.
#[derive(Debug, PartialEq, Eq)]
pub enum Status {
    NotLoaded,
    InSync {
        rules: usize,
        entries: usize,
    },
    /// A unified diff, compiled policy first, live kernel second.
    Drifted(String),
}

/// Compares the live table with the policy, exactly: the policy is loaded
/// into a throwaway namespace and both are listed by the kernel.
pub fn status(nft: &Nft, compiled: &Compiled) -> Result<Status, NftError> {
    let rs = &compiled.ruleset;
    let Some(live) = nft.list_table(&rs.table)? else { return Ok(Status::NotLoaded) };
    let kept = live_elements(nft, rs)?;
    let table = build(rs, &kept);
    let expected = strip_runtime_elements(&nft.scratch_listing(&table.replace_batch(), &rs.table)?, rs);
    let live = strip_runtime_elements(&live, rs);
    if expected == live {
        Ok(Status::InSync { rules: table.rule_count(), entries: kept.by_set.values().map(Vec::len).sum() })
    } else {
        Ok(Status::Drifted(unified(&expected, &live, "compiled policy", "live kernel")))
    }
}

pub fn unified(a: &str, b: &str, a_name: &str, b_name: &str) -> String {
    similar::TextDiff::from_lines(a, b).unified_diff().context_radius(2).header(a_name, b_name).to_string()
}

/// Removes the element lists of run-time and feed sets from an
/// `nft list table` text, so drift checks compare only what the policy fixes.
pub fn strip_runtime_elements(listing: &str, rs: &Ruleset) -> String {
    let mut out = String::new();
    let mut in_runtime_set = false;
    let mut skipping = false;
    for line in listing.lines() {
        let t = line.trim();
        if let Some(name) = t.strip_prefix("set ").and_then(|r| r.strip_suffix(" {")) {
            in_runtime_set = rs.set(name).is_some_and(|s| !matches!(s.kind, SetKind::Static { .. }));
        }
        if in_runtime_set && t.starts_with("elements = {") {
            skipping = true;
        }
        if skipping {
            if t.ends_with('}') {
                skipping = false;
            }
            continue;
        }
        if t == "}" {
            in_runtime_set = false;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}
